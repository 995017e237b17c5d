"""A miniature scene output folder for the viewer: the hand-made OUT of ``tests/query/test_eval_stage.py`` (a plane,
a "bowl" square and an "egg" square of small Gaussians seen from above, four cameras) with a gags field whose decoded
feature is exactly the embedding of each Gaussian's phrase, plus a granularity decoder, so every mode has something
known to show. Built in about a second, shared by the viewer's tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("open_clip")

_spec = importlib.util.spec_from_file_location(
    "eval_stage_helpers", Path(__file__).resolve().parents[1] / "query" / "test_eval_stage.py")
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


@pytest.fixture(scope="session")
def scene_helpers():
    """The scene-building helpers of tests/query/test_eval_stage.py (cameras(), scene_gaussians(), label_json()...)."""
    return _helpers


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def viewer_encoder_dir(tmp_path_factory, scene_helpers) -> Path:
    return scene_helpers.make_encoder(tmp_path_factory.mktemp("viewer_clip") / "clip")


@pytest.fixture(scope="session")
def viewer_out(tmp_path_factory, viewer_encoder_dir, scene_helpers) -> Path:
    """OUT with scene.json, gaussians.ply and field/gags (feature + granularity decoders); read-only for tests."""
    from gags.field import GranularityDecoder, LanguageField

    out = scene_helpers.make_out(tmp_path_factory.mktemp("viewer_scene"))
    _, owner = scene_helpers.scene_gaussians()
    emb = scene_helpers.phrase_embeddings(viewer_encoder_dir)
    torch.manual_seed(0)
    field = LanguageField("gags", scene_helpers.one_hot_features(owner),
                          feature_decoder=scene_helpers.embedding_decoder(emb),
                          granularity_decoder=GranularityDecoder(in_dim=len(scene_helpers.PHRASES)).eval())
    field.save(out / "field" / "gags" / "field.safetensors")
    return out


@pytest.fixture(scope="session")
def encoder_spec(viewer_encoder_dir) -> str:
    return f"openclip:local-dir:{viewer_encoder_dir}"
