"""`gags bench segment-scaling` on the miniature demo's scene against a real local Ray cluster, and its scaling model."""

import json
import math
import shutil

import pytest

from gags.bench import segment_scaling
from gags.config import BenchSegmentScalingConfig
from gags.errors import GagsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_scaling_model_is_startup_plus_rounds_of_images():
    rows = segment_scaling.scaling_model(10, [1, 4], startup_s=36.0, overhead_s=2.0, seconds_per_image={"x": 358.0})
    assert rows[0]["hours"]["1"] == pytest.approx((36 + 10 * 360) / 3600)
    assert rows[0]["hours"]["4"] == pytest.approx((36 + 3 * 360) / 3600)  # ceil(10 / 4) rounds of images


def test_segment_scaling_on_ray(demo_run, tmp_path, encoder_dir, ray_head):
    src, _ = demo_run
    out = tmp_path / "out"
    out.mkdir()
    for name in ("scene.json", "gaussians.ply", "points3D.ply"):
        shutil.copy(src / name, out / name)
    record = segment_scaling.run(BenchSegmentScalingConfig(
        out=out, workers=(1, 2), ray=ray_head, repeats=1, encoder=f"openclip:local-dir:{encoder_dir}",
        sam_seconds_per_image=100.0))
    assert set(record["cases"]) == {"threads 1", "threads 2", "ray 1", "ray 2"}
    assert [r["workers"] for r in record["runs"]["ray 2"]] == [2]
    images = record["images"]
    assert images == len(json.loads((out / "scene.json").read_text())["train"]) + len(
        json.loads((out / "scene.json").read_text()).get("test", []))
    for key, agreement in record["agreement_with_threads"].items():
        assert agreement["same_segments"], key
        assert agreement["max_feature_difference"] < 1e-2, key
    assert record["ray_startup_s"]["mean"] > 0
    sam = record["model"]["rows"][-1]
    assert sam["seconds_per_image"] == 100.0
    expected = (record["model"]["startup_s"] + math.ceil(300 / 16) * (100 + record["model"]["overhead_per_image_s"]))
    assert sam["hours"]["16"] == pytest.approx(expected / 3600)
    assert json.loads((out / "bench" / "segment_scaling.json").read_text())["cases"] == record["cases"]
    assert not (out / "bench" / "segment_scaling").exists()  # the cases' copies are removed
    with pytest.raises(GagsError, match="--repeats must be >= 1"):
        segment_scaling.run(BenchSegmentScalingConfig(out=out, repeats=0))
