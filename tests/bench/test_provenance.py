"""Benchmark records say where they were measured, and the documentation says it beside their tables."""

import os

from gags.bench.provenance import describe, provenance


def test_a_record_is_stamped_with_the_checkout_and_the_machine():
    stamp = provenance()
    assert stamp["machine"]["cores"] == os.cpu_count()
    assert stamp["commit"] is None or len(stamp["commit"]) == 40  # None when gags is not run from a git checkout
    line = describe({"provenance": stamp})
    assert f"{os.cpu_count()}-core CPU" in line and stamp["date"] in line
    if stamp["commit"]:
        assert stamp["commit"][:10] in line
        assert isinstance(stamp["dirty"], bool)  # a clean checkout is False, not unknown


def test_an_unstamped_record_says_so():
    assert describe({"tables": {}}) == "Provenance: not recorded (this record predates the stamp)."
