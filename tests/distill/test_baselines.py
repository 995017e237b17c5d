"""The methods' heads and the N2F2-style fusion, on tiny tensors with hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from gags.distill.baselines import n2f2_fuse, n2f2_level_weights
from gags.errors import GagsError
from gags.methods import METHOD_NAMES as METHODS
from gags.methods import method_spec


def test_heads_of_every_method():
    gags = method_spec("gags", 16)
    assert gags.feature_dim == 16 and gags.learned_granularity and gags.space == "feature"
    avg = method_spec("avg", 16)
    assert avg.heads[0].weights == pytest.approx((1 / 3, 1 / 3, 1 / 3)) and avg.heads[0].normalize_target
    assert not avg.learned_granularity
    for k, name in enumerate("sml"):
        (head,) = method_spec(f"level-{name}", 16).heads
        assert head.weights[k] == 1.0 and sum(head.weights) == 1.0 and head.coverage is None
    lang = method_spec("langsplat", 16)  # 3 dims per level whatever --feature-dim says (LangSplat's code size)
    assert lang.space == "codes" and lang.feature_dim == 9
    assert [(h.start, h.dim, h.coverage) for h in lang.heads] == [(0, 3, 0), (3, 3, 1), (6, 3, 2)]
    n2f2 = method_spec("n2f2", 16)
    assert n2f2.feature_dim == 48 and [h.channels for h in n2f2.heads] == [slice(0, 16), slice(16, 32),
                                                                            slice(32, 48)]
    v2 = method_spec("langsplat-v2", 16)  # 64 coefficients per level (LangSplatV2's codebook size)
    assert v2.space == "sparse" and v2.feature_dim == 192
    assert [(h.start, h.dim, h.coverage) for h in v2.heads] == [(0, 64, 0), (64, 64, 1), (128, 64, 2)]
    assert set(METHODS) == {"gags", "avg", "level-s", "level-m", "level-l", "langsplat", "n2f2", "langsplat-v2",
                            "lift", "lift-consistent"}
    with pytest.raises(GagsError, match="unknown method"):
        method_spec("lerf", 16)
    with pytest.raises(GagsError, match="not trained by the distillation loop"):
        method_spec("lift", 16)


def test_level_weights_by_hand():
    # two phrases e0, e1; level 0 decodes to e0 (mean cosine 0.5), level 1 to -e0 (-0.5), level 2 to e2 (0)
    phrases = torch.eye(3)[:2]
    decoded = torch.stack([torch.eye(3)[0], -torch.eye(3)[0], torch.eye(3)[2]])[None]  # [1, 3, 3]
    w = n2f2_level_weights(decoded, phrases, temperature=10.0)
    e = torch.tensor([math.exp(5.0), math.exp(-5.0), 1.0])
    torch.testing.assert_close(w[0], e / e.sum())


def test_fusion_is_the_weighted_sum_of_the_levels():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 3 * 4, generator=gen)
    proj = torch.randn(4, 6, generator=gen)

    def decode(x):
        return F.normalize(x @ proj, dim=-1)

    phrases = F.normalize(torch.randn(5, 6, generator=gen), dim=-1)
    fused, w = n2f2_fuse(feats, decode, phrases, chunk=2)  # chunks of 2 Gaussians give the same as all at once
    per_level = feats.reshape(5, 3, 4)
    want_w = n2f2_level_weights(decode(per_level.reshape(-1, 4)).reshape(5, 3, 6), phrases)
    torch.testing.assert_close(w, want_w)
    torch.testing.assert_close(w.sum(1), torch.ones(5))
    torch.testing.assert_close(fused, (per_level * want_w[..., None]).sum(1))
