"""``gags distill --init lift``: a trained field that starts from the lifted features decodes them, Gaussian by
Gaussian, before any distillation step, in each of the three spaces (feature decoder, LangSplat codes, LangSplatV2
sparse codes); training-free methods refuse the option."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from gags.config import DistillConfig
from gags.distill.init import init_feature_heads, lifted_targets, principal_basis, project
from gags.distill.train import new_state
from gags.distill.train import run as distill
from gags.errors import GagsError
from gags.field import LanguageField
from gags.methods import method_spec
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
    keep = torch.tensor([True, True, True, False])
    mean, basis = principal_basis(avg[keep], 2)
    features = project(avg, keep, mean, basis)
    assert features.shape == (4, 2) and torch.equal(features[3], torch.zeros(2))
    assert torch.allclose(features[:3].std(0), torch.ones(2), atol=1e-4)  # standardised components


def test_every_head_of_a_shared_decoder_decodes_its_own_level():
    """n2f2: three heads, one decoder; each head's channels start at its level's lifted feature (here features of
    rank 8, so that 16 principal components hold all of them), and the decoder tells the heads apart."""
    gen = torch.Generator().manual_seed(0)
    n, d = 600, 32
    levels = F.normalize(torch.randn(n, 3, 8, generator=gen) @ torch.randn(8, d, generator=gen), dim=-1)
    seen = torch.ones(n, 3, dtype=torch.bool)
    seen[:50, 2] = False  # never seen at the whole level: its whole head starts at zero
    spec = method_spec("n2f2", 16)
    state = new_state(spec, n, d, DistillConfig(out=None, method="n2f2"))  # type: ignore[arg-type]
    facts = init_feature_heads(state, spec, levels, seen, seed=0)
    assert facts["init_valid_gaussians"] == [n, n, n - 50]
    with torch.no_grad():
        for head in spec.heads:
            k = head.weights.index(1.0)
            decoded = state.feature_decoder(state.features[:, head.channels])
            ok = seen[:, k]
            cos = (decoded[ok] * levels[ok, k]).sum(-1)
            assert cos.mean() > 0.9, (k, cos.mean())
            assert torch.equal(state.features[~ok, head.channels], torch.zeros(int((~ok).sum()), 16))


def lifted_demo(demo_run, tmp_path) -> tuple[Workspace, torch.Tensor]:
    """A copy of the miniature demo with its ``lift`` field; its Workspace and the lifted levels [N, 3, D] (zero where
    unseen)."""
    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    ws = Workspace(out)
    distill(DistillConfig(out=out, method="lift"))
    lifted = LanguageField.load(ws.field_file("lift"))
    return ws, lifted.features.float().reshape(len(lifted.features), 3, -1)


@pytest.mark.slow
def test_a_lift_initialised_field_decodes_the_lifted_features(demo_run, tmp_path):
    ws, levels = lifted_demo(demo_run, tmp_path)
    out = ws.root
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


@pytest.mark.parametrize("method", ["langsplat", "langsplat-v2"])
def test_multi_level_fields_start_at_their_levels_lifted_features(demo_run, tmp_path, method):
    ws, levels = lifted_demo(demo_run, tmp_path)
    out = ws.root
    seen = levels.norm(dim=-1) > 0  # [N, 3]

    def centred(x: torch.Tensor) -> torch.Tensor:  # [M, D]: what tells Gaussians apart (the features are close)
        return F.normalize(x - x.mean(0), dim=-1)

    def agreement(init: str) -> float:
        distill(DistillConfig(out=out, method=method, init=init, iterations=0, resume=False))
        field = LanguageField.load(ws.field_file(method))
        decoded = field.decode_features(field.features.float())  # [N, 3, D]
        return sum(float((centred(decoded[seen[:, k], k]) * centred(levels[seen[:, k], k])).sum(-1).mean())
                   for k in range(3)) / 3

    lift, zero = agreement("lift"), agreement("zero")
    assert lift > 0.5 > zero + 0.3, (lift, zero)


def test_init_lift_refuses_a_training_free_method(demo_run, tmp_path):
    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    with pytest.raises(GagsError, match="--init lift"):
        distill(DistillConfig(out=out, method="lift", init="lift"))
