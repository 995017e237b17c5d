"""Helpers shared by tests in several folders: ``from tests.helpers import ...`` (pytest's importlib mode imports the
test files as modules of the package ``tests``, so its plain modules import too)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

TINY_CLIP_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"interpolation": "bilinear", "resize_mode": "squash"},
}
"""open_clip_config.json of a CLIP of open_clip's architecture small enough to build in a fraction of a second
(32-px ViT with one layer, one text layer, 32-d embeddings)."""


def tiny_clip_cfg(embed_dim: int = 32, preprocess: dict | None = None) -> dict:
    """A copy of ``TINY_CLIP_CFG`` embedding in ``embed_dim`` dimensions, with ``preprocess`` as its preprocess_cfg
    when given."""
    cfg = copy.deepcopy(TINY_CLIP_CFG)
    cfg["model_cfg"]["embed_dim"] = embed_dim
    if preprocess is not None:
        cfg["preprocess_cfg"] = preprocess
    return cfg


def write_random_clip(folder: Path, cfg: dict = TINY_CLIP_CFG, seed: int = 0) -> torch.nn.Module:
    """Make ``folder`` an open_clip ``local-dir:`` model: ``cfg`` as open_clip_config.json and the weights of the model
    it describes, randomly initialised after ``torch.manual_seed(seed)``, as open_clip_model.safetensors.

    Returns the model (eval mode)."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return model


def tiny_transforms_scene(folder: Path, names: list[str], file_paths: list[str] | None = None, **intr) -> Path:
    """A transforms.json of small solid images (written for ``names``), frames listed as ``file_paths``."""
    import numpy as np
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(folder / "images" / name)
    frames = []
    for i, fp in enumerate(file_paths or [f"images/{n}" for n in names]):
        c2w = np.eye(4)
        c2w[:3, 3] = [0.1 * i, 0.0, 3.0]
        frames.append({"file_path": fp, "transform_matrix": c2w.tolist()})
    meta = {"fl_x": 25.0, "fl_y": 25.0, "w": 30, "h": 20, **intr, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder / "transforms.json"
