import math

import pytest
import torch

from gags.query.relevancy import CANONICAL_PHRASES, TEMPERATURE, relevancy


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _per_pixel(features: torch.Tensor, query: torch.Tensor, canon: torch.Tensor) -> torch.Tensor:
    """Direct definition, one feature and one query at a time: min over c of softmax(10 [f.q, f.c])[0]."""
    flat = features.reshape(-1, features.shape[-1])
    out = torch.empty(query.shape[0], flat.shape[0], dtype=torch.float64)
    for k in range(query.shape[0]):
        for n in range(flat.shape[0]):
            f = flat[n].double()
            probs = [
                torch.softmax(TEMPERATURE * torch.stack([f @ query[k].double(), f @ c.double()]), dim=0)[0]
                for c in canon
            ]
            out[k, n] = min(probs)
    return out.reshape(query.shape[0], *features.shape[:-1])


def _langsplat_batched(features: torch.Tensor, query: torch.Tensor, canon: torch.Tensor) -> torch.Tensor:
    """LangSplat's get_relevancy data flow: one matmul, stacked pairs per canonical, softmax, pick the smallest pair."""
    flat = features.reshape(-1, features.shape[-1])
    out = flat @ torch.cat([query, canon]).T
    maps = []
    for k in range(query.shape[0]):
        pos = out[:, k : k + 1].repeat(1, canon.shape[0])
        sims = torch.stack((pos, out[:, query.shape[0] :]), dim=-1)
        soft = torch.softmax(10 * sims, dim=-1)
        best = soft[..., 0].argmin(dim=1)
        picked = torch.gather(soft, 1, best[:, None, None].expand(-1, canon.shape[0], 2))[:, 0, :]
        maps.append(picked[:, 0])
    return torch.stack(maps).reshape(query.shape[0], *features.shape[:-1])


def test_constants_are_lerf_langsplat():
    assert CANONICAL_PHRASES == ("object", "things", "stuff", "texture")
    assert TEMPERATURE == 10.0


def test_matches_direct_per_pixel_computation():
    g = torch.Generator().manual_seed(0)
    features = _unit(torch.randn(5, 6, 16, generator=g))
    query = _unit(torch.randn(3, 16, generator=g))
    canon = _unit(torch.randn(4, 16, generator=g))
    got = relevancy(features, query, canon)
    assert got.shape == (3, 5, 6) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _per_pixel(features, query, canon), atol=1e-6, rtol=0)


def test_matches_langsplat_batched_dataflow_in_float32():
    g = torch.Generator().manual_seed(1)
    features = _unit(torch.randn(2, 7, 9, 32, generator=g))  # [L, H, W, D]
    query = _unit(torch.randn(5, 32, generator=g))
    canon = _unit(torch.randn(4, 32, generator=g))
    got = relevancy(features, query, canon, normalize=False)
    assert got.shape == (5, 2, 7, 9)
    torch.testing.assert_close(got, _langsplat_batched(features, query, canon), atol=2e-7, rtol=0)


def test_known_values():
    # f = q, orthogonal to every canonical phrase: softmax(10 [1, 0])[0] = sigmoid(10).
    canon = torch.eye(6)[2:]  # [4, 6]
    query = torch.eye(6)[:2]
    features = torch.eye(6)[:1]  # [1, 6] equals query 0, orthogonal to query 1
    got = relevancy(features, query, canon)
    assert got.shape == (2, 1)
    assert got[0, 0].item() == pytest.approx(1 / (1 + math.exp(-10)), abs=1e-7)
    assert got[1, 0].item() == pytest.approx(0.5, abs=1e-7)  # f.q = f.c = 0 for all c
    # The minimum is taken over canonical phrases: the canonical phrase most similar to f decides.
    f = _unit(torch.tensor([[1.0, 0.0, 0.6, 0.2, 0.0, 0.0]]))
    expected = 1 / (1 + math.exp(-10 * (f[0, 0] - f[0, 2]).item()))
    assert relevancy(f, query[:1], canon)[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_normalization_and_scale():
    g = torch.Generator().manual_seed(2)
    features = _unit(torch.randn(10, 8, generator=g))
    query = _unit(torch.randn(2, 8, generator=g))
    canon = _unit(torch.randn(4, 8, generator=g))
    base = relevancy(features, query, canon)
    torch.testing.assert_close(relevancy(3.0 * features, query, canon), base, atol=1e-6, rtol=0)
    # Without normalisation a longer feature sharpens the softmax: it must differ.
    assert not torch.allclose(relevancy(3.0 * features, query, canon, normalize=False), base, atol=1e-3)
    # Zero features score 0.5 (no preference) instead of NaN.
    assert torch.all(relevancy(torch.zeros(4, 8), query, canon) == 0.5)


def test_half_precision_features_and_float64():
    g = torch.Generator().manual_seed(3)
    features = _unit(torch.randn(4, 4, 8, generator=g))
    query, canon = _unit(torch.randn(1, 8, generator=g)), _unit(torch.randn(4, 8, generator=g))
    assert relevancy(features.half(), query, canon).dtype == torch.float32
    assert relevancy(features.double(), query.double(), canon.double()).dtype == torch.float64


def test_shape_errors():
    with pytest.raises(ValueError, match="dimension"):
        relevancy(torch.zeros(3, 8), torch.zeros(1, 4), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="canonical"):
        relevancy(torch.zeros(3, 8), torch.zeros(1, 8), torch.zeros(0, 8))
    with pytest.raises(ValueError):
        relevancy(torch.zeros(3, 8), torch.zeros(8), torch.zeros(4, 8))
