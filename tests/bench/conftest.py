"""Fixtures of the benchmark tests: the hand-made scene output folder of ``tests/handmade_scene.py`` (a plane, two flat
objects, four cameras, LERF-OVS labels) with hand-made gags and langsplat fields. ``encoder_dir`` and
``one_torch_thread`` come from ``tests/conftest.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import handmade_scene


@pytest.fixture(scope="session")
def query_out_base(tmp_path_factory, encoder_dir) -> Path:
    out = handmade_scene.make_out(tmp_path_factory.mktemp("benchscene"))
    handmade_scene.write_field(out, "gags", encoder_dir)
    handmade_scene.write_field(out, "langsplat", encoder_dir)
    return out


@pytest.fixture
def query_out(query_out_base, tmp_path) -> Path:
    """A fresh copy of the hand-made OUT with a gags and a langsplat field."""
    dst = tmp_path / "out"
    shutil.copytree(query_out_base, dst)
    return dst
