"""Fixtures shared by the tests of ``gags demo`` and of its report: a random-weights CLIP of open_clip's architecture
(so that they do not depend on the shipped tiny CLIP) and the configuration of a miniature demo."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gags.config import DemoConfig

ENCODER_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"interpolation": "bilinear", "resize_mode": "squash"},
}


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    """An open_clip ``local-dir:`` folder with a tiny randomly initialised CLIP (seed 0)."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("clip") / "clip"
    path.mkdir()
    (path / "open_clip_config.json").write_text(json.dumps(ENCODER_CFG))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    return path


@pytest.fixture(scope="session")
def small_demo(encoder_dir) -> Callable[[Path], DemoConfig]:
    """out -> the configuration of a miniature demo (48x48 images, 6 views, a few iterations: about a minute)."""

    def make(out: Path) -> DemoConfig:
        return DemoConfig(out=out, resolution=48, views=6, reconstruct_iterations=30, max_gaussians=3000,
                          distill_iterations=10, encoder=f"openclip:local-dir:{encoder_dir}")

    return make
