"""``gags distill --init lift``: a one-map field that starts from the lifted features decodes them, Gaussian by
Gaussian, before any distillation step; methods without one feature decoder refuse it."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from gags.config import DistillConfig
from gags.distill.init import lifted_targets, principal_features
from gags.distill.train import run as distill
from gags.errors import GagsError
from gags.field import LanguageField
from gags.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_targets_mix_the_levels_a_head_uses():
    levels = F.normalize(torch.randn(4, 3, 8), dim=-1)
    seen = torch.tensor([[True, True, True], [True, False, True], [False, True, True], [False, False, False]])
    avg, valid = lifted_targets(levels, seen, (1 / 3, 1 / 3, 1 / 3))
    assert torch.allclose(avg[0], F.normalize(levels[0].sum(0), dim=0), atol=1e-6)
    assert valid.tolist() == [True, False, False, False]
    whole, valid_whole = lifted_targets(levels, seen, (0.0, 0.0, 1.0))
    assert torch.allclose(whole[:3], levels[:3, 2], atol=1e-6) and valid_whole.tolist() == [True, True, True, False]
    features = principal_features(avg, torch.tensor([True, True, True, False]), 2)
    assert features.shape == (4, 2) and torch.equal(features[3], torch.zeros(2))


def test_a_lift_initialised_field_decodes_the_lifted_features(demo_run, tmp_path):
    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    ws = Workspace(out)
    distill(DistillConfig(out=out, method="lift"))
    lifted = LanguageField.load(ws.field_file("lift"))
    n = len(lifted.features)
    levels = lifted.features.float().reshape(n, 3, -1)
    target, valid = lifted_targets(levels, levels.norm(dim=-1) > 0, (1 / 3, 1 / 3, 1 / 3))

    def agreement(init: str) -> float:
        record = distill(DistillConfig(out=out, method="avg", init=init, iterations=0, resume=False))
        field = LanguageField.load(ws.field_file("avg"))
        decoded = field.decode_features(field.features.float())[:, 0]  # [N, D]
        assert (record.get("init") == "lift") == (init == "lift")
        return float((decoded[valid] * target[valid]).sum(-1).mean())

    assert agreement("lift") > 0.9 > agreement("zero")
    # a run that resumes from a checkpoint of a lift-initialised one still says so in its record
    config = DistillConfig(out=out, method="avg", init="lift", iterations=2, checkpoint_every=1, resume=False)
    distill(config)
    resumed = distill(DistillConfig(out=out, method="avg", init="lift", iterations=2, checkpoint_every=1))
    assert resumed["resumed_from"] == 2 and resumed["init"] == "lift"


def test_init_lift_needs_one_feature_decoder(demo_run, tmp_path):
    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    for method in ("langsplat", "lift"):
        with pytest.raises(GagsError, match="--init lift"):
            distill(DistillConfig(out=out, method=method, init="lift"))
