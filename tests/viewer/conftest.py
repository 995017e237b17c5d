"""A miniature scene output folder for the viewer: the hand-made OUT of ``tests/handmade_scene.py`` (a plane, a "bowl"
square and an "egg" square of small Gaussians seen from above, four cameras) with a gags field whose decoded feature is
exactly the embedding of each Gaussian's phrase, plus a granularity decoder, so every mode has something known to show.
Built in about a second, shared by the viewer's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests import handmade_scene

pytest.importorskip("open_clip")


@pytest.fixture(scope="session")
def scene_helpers():
    """The scene-building helpers of tests/handmade_scene.py (cameras(), scene_gaussians(), label_json()...)."""
    return handmade_scene


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread) -> None:
    """Every viewer test runs with one PyTorch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def viewer_out(tmp_path_factory, encoder_dir, scene_helpers) -> Path:
    """OUT with scene.json, gaussians.ply and field/gags (feature + granularity decoders); read-only for tests."""
    from gags.field import GranularityDecoder, LanguageField

    out = scene_helpers.make_out(tmp_path_factory.mktemp("viewer_scene"))
    _, owner = scene_helpers.scene_gaussians()
    emb = scene_helpers.phrase_embeddings(encoder_dir)
    torch.manual_seed(0)
    field = LanguageField("gags", scene_helpers.one_hot_features(owner),
                          feature_decoder=scene_helpers.embedding_decoder(emb),
                          granularity_decoder=GranularityDecoder(in_dim=len(scene_helpers.PHRASES)).eval())
    field.save(out / "field" / "gags" / "field.safetensors")
    return out


@pytest.fixture(scope="session")
def encoder_spec(encoder_dir) -> str:
    return f"openclip:local-dir:{encoder_dir}"
