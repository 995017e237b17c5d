"""``gags demo`` chains every stage: run it end to end on a very small scene (random-weights CLIP of open_clip's
architecture, so the test does not depend on the shipped tiny CLIP), then check that a rerun resumes."""

import json
from pathlib import Path

import pytest
import torch

from gags.cli import main
from gags.config import DemoConfig
from gags.demo import run
from gags.errors import GagsError

open_clip = pytest.importorskip("open_clip")

ENCODER_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"interpolation": "bilinear", "resize_mode": "squash"},
}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("clip") / "clip"
    path.mkdir()
    (path / "open_clip_config.json").write_text(json.dumps(ENCODER_CFG))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    return path


def small(out: Path, encoder_dir: Path) -> DemoConfig:
    return DemoConfig(out=out, resolution=48, views=6, reconstruct_iterations=30, max_gaussians=3000,
                      distill_iterations=10, encoder=f"openclip:local-dir:{encoder_dir}")


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path, encoder_dir, capsys):
    out = tmp_path / "demo"
    summary = run(small(out, encoder_dir))
    for path in ("scene/transforms.json", "gaussians.ply", "reconstruct/metrics.json", "segment/timings.json",
                 "field/gags/field.safetensors", "field/avg/field.safetensors", "eval/gags/test/metrics.json",
                 "eval/avg/train/metrics.json", "demo.json"):
        assert (out / path).is_file(), path
    assert set(summary["eval"]) == {"gags", "avg"}
    for splits in summary["eval"].values():
        for m in splits.values():
            assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["loc_acc"] <= 1.0
    timings = json.loads((out / "demo.json").read_text())["seconds"]
    assert set(timings) == {"synth", "reconstruct", "segment", "distill gags", "distill avg", "eval"}

    capsys.readouterr()
    run(small(out, encoder_dir))  # everything is done: every stage is skipped
    printed = capsys.readouterr().out
    assert printed.count("done already") == 6


def test_unknown_baseline_is_a_user_error(tmp_path):
    with pytest.raises(GagsError, match="unknown baseline"):
        run(DemoConfig(out=tmp_path, baselines=("best",)))
    assert main(["demo", "--out", str(tmp_path), "--baselines", "best"]) == 1
