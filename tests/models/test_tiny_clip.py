"""The shipped tiny CLIP: loaded by the spec "tiny" through OpenClipEncoder, within its size budget, and it
recognises objects of a world it was never trained on."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip")

from gags.models import OpenClipEncoder, crop_masks, load_encoder  # noqa: E402
from gags.models.specs import TINY_CLIP_DIR  # noqa: E402
from gags.models.train_tinyclip import HELDOUT_SEED_BASE, MIN_CROP_PIXELS, vocabulary_names  # noqa: E402

MAX_MB = 25


def test_shipped_folder_is_an_open_clip_local_dir_within_budget():
    config = json.loads((TINY_CLIP_DIR / "open_clip_config.json").read_text())
    assert {"model_cfg", "preprocess_cfg"} <= set(config)
    weights = list(TINY_CLIP_DIR.glob("*.safetensors"))
    assert len(weights) == 1 and weights[0].stat().st_size <= MAX_MB * 2**20
    assert (TINY_CLIP_DIR / "MODEL_CARD.md").is_file()


def test_tiny_spec_loads_the_shipped_weights():
    enc = load_encoder("tiny", device="cpu")
    assert isinstance(enc, OpenClipEncoder) and enc.name == f"local-dir:{TINY_CLIP_DIR}"
    assert enc.input_size == 64 and enc.dim == 128
    feats = enc.encode_text(["ramen bowl", "egg yolk", "stuff"])
    assert torch.allclose(feats.norm(dim=1), torch.ones(3), atol=1e-5)


def test_recognises_objects_of_an_unseen_world():
    from gags.synth.raycast import render
    from gags.synth.rig import sample_cameras
    from gags.synth.world import build_world

    world = build_world("ramen", HELDOUT_SEED_BASE + 500)  # a seed neither training nor the model card used
    camera = sample_cameras(world, 3, 256, seed=1)[0]  # a far view: many objects
    r = render(world, camera, supersample=1)
    ids, counts = np.unique(r.ids[2], return_counts=True)
    objects = [i for i, c in zip(ids, counts) if i >= 0 and c >= MIN_CROP_PIXELS and i not in world.background]
    assert len(objects) >= 4
    enc = load_encoder("tiny", device="cpu")
    names = vocabulary_names()
    crops = crop_masks(r.rgb, np.stack([r.ids[2] == i for i in objects]), enc.input_size)
    predicted = (enc.encode_images(crops) @ enc.encode_text(names).T).argmax(1).tolist()
    truth = [names.index(world.wholes[i].name) for i in objects]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy >= 0.5, (accuracy, [names[p] for p in predicted], [names[t] for t in truth])
