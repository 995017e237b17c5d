"""3D selection on hand-made fields: every Gaussian decodes to a known embedding, so its relevancy is known."""

from __future__ import annotations

import pytest
import torch

from gags.field import LanguageField
from gags.query.relevancy import relevancy
from gags.query.select3d import (
    SELECT_THRESHOLD,
    gaussian_relevancy,
    relevancy_colors,
    select_gaussians,
    write_selection_plys,
)
from tests import handmade_scene as helpers

DIM = 8


def _phrases() -> tuple[torch.Tensor, torch.Tensor]:
    """Three phrase embeddings (query, other object, background) and two canonical phrases: the query is orthogonal
    to the others, the other object and the background lean towards a canonical phrase."""
    basis = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(0)))[0].T  # rows orthonormal
    query, canon = basis[0], basis[3:5]
    other = torch.nn.functional.normalize(basis[1] + 0.2 * canon[1], dim=0)  # a little like "things": below 0.5
    background = torch.nn.functional.normalize(0.9 * canon[0] + 0.1 * basis[2], dim=0)
    return torch.stack([query, other, background]), canon


def _field(owner: torch.Tensor, method: str = "gags") -> LanguageField:
    emb, _ = _phrases()
    feats = torch.nn.functional.one_hot(owner, 3).float()
    if method == "langsplat":
        bg = torch.nn.functional.one_hot(torch.full_like(owner, 2), 3).float()
        return LanguageField(method, torch.cat([bg, feats], dim=1), autoencoder=helpers.embedding_autoencoder(emb))
    return LanguageField(method, feats, feature_decoder=helpers.embedding_decoder(emb))


OWNER = torch.tensor([2, 0, 0, 1, 2, 0, 1, 2, 2, 0])
"""Phrase of each Gaussian: 0 the queried object, 1 another object, 2 background."""


def test_gaussian_relevancy_matches_the_formula():
    emb, canon = _phrases()
    rel = gaussian_relevancy(_field(OWNER), emb[0], canon, chunk=3)  # chunks smaller than N
    assert rel.shape == (1, len(OWNER))
    expected = relevancy(emb[OWNER], emb[:1], canon)[0]
    torch.testing.assert_close(rel[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["gags", "langsplat"])
def test_select_the_queried_gaussians(method):
    emb, canon = _phrases()
    sel = select_gaussians(_field(OWNER, method), emb[0], canon)
    assert sel.level == (1 if method == "langsplat" else 0)  # langsplat: level 0 is background everywhere
    assert sel.selected.tolist() == (OWNER == 0).tolist()
    assert sel.count == 4 and sel.threshold == SELECT_THRESHOLD
    # Orthogonal query and feature: relevancy sigmoid(10 (1 - 0)) on the object, below 0.5 elsewhere.
    assert sel.relevancy[OWNER == 0].min() > 0.99
    assert sel.relevancy[OWNER != 0].max() < 0.5


def test_a_query_matching_nothing_selects_nothing(tmp_path):
    _, canon = _phrases()
    absent = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(0)))[0].T[5]
    sel = select_gaussians(_field(OWNER), absent, canon)
    assert sel.count == 0
    splats, _ = _splats(len(OWNER))
    (tmp_path / "selected.ply").write_text("stale")
    files = write_selection_plys(tmp_path, splats, sel)
    assert files == {"relevancy_ply": "relevancy.ply", "selected_ply": None}
    assert not (tmp_path / "selected.ply").exists()


def _splats(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"means": torch.randn(n, 3, generator=g), "quats": torch.randn(n, 4, generator=g),
            "scales": torch.randn(n, 3, generator=g), "opacities": torch.randn(n, generator=g),
            "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.randn(n, 3, 3, generator=g)}, g


def test_plys_colour_by_relevancy_and_keep_the_selected(tmp_path):
    from gags.data import read_ply
    from gags.splat.gaussians import sh_to_rgb

    emb, canon = _phrases()
    sel = select_gaussians(_field(OWNER), emb[0], canon)
    splats, _ = _splats(len(OWNER))
    files = write_selection_plys(tmp_path, splats, sel)
    coloured = read_ply(tmp_path / files["relevancy_ply"])
    torch.testing.assert_close(coloured["means"], splats["means"])
    assert coloured["shN"].abs().max() == 0  # no view-dependent tint
    rgb = sh_to_rgb(coloured["sh0"][:, 0])
    torch.testing.assert_close(rgb, relevancy_colors(sel.relevancy), atol=1e-4, rtol=0)
    hot, cold = rgb[OWNER == 0].mean(0), rgb[OWNER == 2].mean(0)
    assert hot[0] > cold[0] and cold[2] > hot[2]  # turbo: high = red, low = blue
    selected = read_ply(tmp_path / files["selected_ply"])
    keep = OWNER == 0
    for key in ("means", "scales", "sh0", "shN", "opacities"):
        torch.testing.assert_close(selected[key], splats[key][keep])
