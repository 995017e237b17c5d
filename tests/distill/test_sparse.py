"""LangSplatV2's sparse coefficients and codebooks (``langsplat-v2``): the top-k soft codes, the k-means
initialisation, and the reader that decodes a rendered coefficient map."""

import pytest
import torch

from gags.distill.sparse import init_codebook, kmeans
from gags.distill.views import TrainView
from gags.field import SparseCodebook, top_k_soft_codes
from tests.distill.flat_square import ring_cameras


def test_top_k_soft_codes_keep_the_k_largest_probabilities_renormalised():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    codes = top_k_soft_codes(logits, 2)
    p = logits[0].softmax(-1)
    expected = torch.zeros(5)
    expected[[1, 3]] = p[[1, 3]] / (p[1] + p[3])
    torch.testing.assert_close(codes[0], expected)
    assert ((codes > 0).sum(-1) == 2).all()
    torch.testing.assert_close(codes.sum(-1), torch.ones(2))


def test_only_the_kept_logits_learn():
    """The renormalisation cancels the softmax's normaliser: a logit outside the top k gets no gradient (LangSplatV2's
    rule: a code enters the top k only when a kept one falls below it)."""
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]], requires_grad=True)
    (top_k_soft_codes(logits, 2) * torch.arange(5.0)).sum().backward()
    assert logits.grad is not None
    assert logits.grad[0, [0, 2, 4]].abs().max() < 1e-7 and logits.grad[0, [1, 3]].abs().min() > 1e-3


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres[:, None] + 0.1 * torch.randn(3, 50, 2, generator=generator)).reshape(-1, 2)
    found = kmeans(x, 3, seed=1)
    distances = torch.cdist(centres, found)  # [true, found]
    assert distances.min(1).values.max() < 0.1  # every true centre has a found one next to it
    assert sorted(distances.argmin(1).tolist()) == [0, 1, 2]  # and each its own
    assert kmeans(x[:2], 4).shape == (4, 2)  # fewer rows than centres: drawn with replacement


def test_codebook_starts_at_the_kmeans_of_the_views_features_and_decodes_linearly():
    cam = ring_cameras(1, 4, "f{i}.jpg")[0]
    table = torch.eye(3).repeat_interleave(2, 0) + 0.01 * torch.arange(6.0)[:, None]  # two rows near each axis
    view = TrainView(cam, torch.zeros(3, 4, 4, dtype=torch.int32), table)
    book = init_codebook([view], levels=3, size=3, seed=0)
    assert book.codebooks.shape == (3, 3, 3)
    for level in range(3):  # every level starts at the same centres: one near each axis
        torch.testing.assert_close(book.codebooks[level].argmax(-1).sort().values, torch.arange(3))
    # decoding is linear: decoding a blend of coefficients (what a render gives) = the blend of the decoded features
    a, b = torch.rand(1, 9), torch.rand(1, 9)
    raw = SparseCodebook(3, 3, 3, 2)
    raw.codebooks.data = torch.randn(3, 3, 3)
    blend = 0.3 * a + 0.7 * b
    for level in range(3):
        sl = slice(3 * level, 3 * level + 3)
        torch.testing.assert_close(raw.decode_level(blend[:, sl], level),
                                   0.3 * raw.decode_level(a[:, sl], level) + 0.7 * raw.decode_level(b[:, sl], level))
    decoded = raw(blend)
    assert decoded.shape == (1, 3, 3)
    torch.testing.assert_close(decoded.norm(dim=-1), torch.ones(1, 3))


def test_sparse_codebook_refuses_empty_sizes():
    with pytest.raises(ValueError, match="positive"):
        SparseCodebook(3, 0, 8, 4)


def test_langsplat_v2_through_the_stages(demo_run, tmp_path):
    """``gags distill --method langsplat-v2`` writes a field that eval and query (2D and 3D) read, level by level."""
    import shutil

    from gags.config import DistillConfig, EvalConfig, QueryConfig
    from gags.distill.train import run as distill
    from gags.field import LanguageField
    from gags.query.answer import run as query
    from gags.query.evaluate import run as evaluate
    from gags.workspace import Workspace

    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    ws = Workspace(out)
    distill(DistillConfig(out=out, method="langsplat-v2", iterations=5))
    field = LanguageField.load(ws.field_file("langsplat-v2"))
    assert field.levels == 3 and field.features.dtype == torch.float16 and field.sparse is not None
    results = evaluate(EvalConfig(out=out, method="langsplat-v2", split="test", figures=False))
    queries = results["langsplat-v2"]["test"]["queries"]
    assert queries and all(q["level_loc"] in (0, 1, 2) for q in queries)
    answer = query(QueryConfig(out=out, text="bowl", method="langsplat-v2", ply=True))
    assert answer["views"] and answer["3d"]["num_gaussians"] == len(field.features)
