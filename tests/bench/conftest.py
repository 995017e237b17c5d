"""Shared miniature fixtures of the benchmark tests.

The hand-made scene output folder of ``tests/query/test_eval_stage.py`` (a plane, two flat objects, four cameras,
LERF-OVS labels, hand-made gags and langsplat fields) is loaded from that file by path, as ``tests/query`` does.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "eval_stage_helpers", Path(__file__).resolve().parents[1] / "query" / "test_eval_stage.py")
query_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(query_helpers)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small problems on a busy 2-core machine: intra-op threads only add waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def helpers():
    """The helper module of tests/query/test_eval_stage.py (scene constants, make_out, write_field...)."""
    return query_helpers


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    """A random-weights open_clip model of CLIP's architecture in local-dir format (32-d embeddings)."""
    return query_helpers.make_encoder(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="session")
def query_out_base(tmp_path_factory, encoder_dir) -> Path:
    out = query_helpers.make_out(tmp_path_factory.mktemp("benchscene"))
    query_helpers.write_field(out, "gags", encoder_dir)
    query_helpers.write_field(out, "langsplat", encoder_dir)
    return out


@pytest.fixture
def query_out(query_out_base, tmp_path) -> Path:
    """A fresh copy of the hand-made OUT with a gags and a langsplat field."""
    dst = tmp_path / "out"
    shutil.copytree(query_out_base, dst)
    return dst
