"""`gags bench granularity` on the miniature demo's fields."""

import json
import shutil

import pytest

from gags.bench import granularity
from gags.config import BenchGranularityConfig
from gags.errors import GagsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_granularity_of_the_demo_fields(demo_run, tmp_path, capsys):
    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    record = granularity.run(BenchGranularityConfig(out=out))
    assert record["pixels"] > 0 and record["views"] > 0
    assert sum(record["nearest_share"]) == pytest.approx(1.0)
    assert all(-1.0 <= c <= 1.0 for c in record["mean_cosine"]) and all(v > 0 for v in record["mean_l1"])
    assert sum(record["g_mean"]) == pytest.approx(1.0, abs=1e-5) and sum(record["g_argmax_share"]) == pytest.approx(1.0)
    assert 0.0 <= record["g_argmax_is_nearest"] <= 1.0
    iterations = [p["iteration"] for p in record["g_curve"]]
    assert iterations and iterations == sorted(iterations) and len(iterations) <= granularity.CURVE_POINTS
    assert json.loads((out / "bench" / "granularity.json").read_text()) == json.loads(json.dumps(record))
    assert "argmax g is the level nearest" in capsys.readouterr().out
    avg = granularity.run(BenchGranularityConfig(out=out, method="avg"))
    assert "g_mean" not in avg and avg["g_curve"] == []  # a fixed-weight field has no granularity decoder
    with pytest.raises(GagsError, match="has no feature decoder"):
        granularity.run(BenchGranularityConfig(out=out, method="lift"))
