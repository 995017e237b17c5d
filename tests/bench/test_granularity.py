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


def test_the_levels_are_compared_pixel_by_pixel():
    """Part and sub-part levels that hold one mask (the same segment at both) read as identical; a whole level with
    its own random features does not."""
    import torch
    import torch.nn.functional as F

    from gags.distill.views import TrainView
    from gags.field import FeatureDecoder, LanguageField
    from tests.distill.flat_square import pixel_points, ring_cameras, segment_ids, square_gaussians

    gaussians, _ = square_gaussians(8)
    gen = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(18, 32, generator=gen), dim=-1)  # 16 cells, 2 halves
    views = []
    for cam in ring_cameras(3, 16):
        ids = segment_ids(pixel_points(cam))
        whole = torch.where(ids[2] >= 0, ids[2] + 16, ids[2])
        views.append(TrainView(cam, torch.stack([ids[0], ids[0], whole]).to(torch.int32), table))
    field = LanguageField("avg", torch.randn(len(gaussians), 16, generator=gen),
                          feature_decoder=FeatureDecoder(16, out_dim=32))
    record = granularity.measure(field, views, gaussians)
    assert record["level_pairs"] == ["s-m", "m-l", "s-l"]
    assert record["between_levels_identical_share"][0] == 1.0 and record["between_levels_cosine"][0] == pytest.approx(1)
    assert record["between_levels_identical_share"][1] == 0.0 and abs(record["between_levels_cosine"][1]) < 0.5
    assert "between levels (s-m / m-l / s-l)" in granularity.table({**record, "method": "avg", "views": 3, "downscale": 1})
