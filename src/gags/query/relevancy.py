"""Relevancy of language features to text queries, as LERF defines it and LangSplat's evaluation computes it.

For a feature ``f`` and a query embedding ``q``, each canonical phrase ``c`` gives a pairwise probability
``p_c = softmax(T * [f.q, f.c])[0]``; the relevancy is the minimum over the canonical phrases. A pixel is relevant only
if the query beats every generic phrase.

LangSplat (``eval/openclip_encoder.py: get_relevancy``) stacks the ``[f.q, f.c]`` pairs of all canonical phrases,
takes the softmax of each pair and keeps the pair whose first probability is smallest. Since ``p_c`` decreases as
``f.c`` grows, that pair is the one of the canonical phrase most similar to ``f``: here the softmax is taken once, over
``[f.q, max_c f.c]``, i.e. ``sigmoid(T (f.q - max_c f.c))``: the same number up to float32 rounding (LangSplat ran
on CUDA, whose kernels round differently anyway), at a fraction of the cost.
Features and embeddings are unit vectors there (the decoders and CLIP outputs are L2-normalised); ``normalize=True``
re-normalises them, which leaves unit vectors unchanged up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CANONICAL_PHRASES: tuple[str, ...] = ("object", "things", "stuff", "texture")
"""LERF's canonical (negative) phrases, as in LangSplat's ``eval/openclip_encoder.py``."""

TEMPERATURE: float = 10.0
"""Softmax temperature (LERF; LangSplat ``torch.softmax(10 * sims)``)."""

NORM_EPS: float = 1e-12
"""Smallest norm divided by when normalising (``torch.nn.functional.normalize``'s default)."""


def relevancy(
    features: Tensor,
    query: Tensor,
    canon: Tensor,
    temperature: float = TEMPERATURE,
    normalize: bool = True,
) -> Tensor:
    """Relevancy of every feature to every query.

    Args:
        features: [..., D] language features (e.g. [H, W, D] per pixel, [L, H, W, D] per level, [N, D] per Gaussian).
        query: [Q, D] text embeddings of the queries.
        canon: [C, D] text embeddings of the canonical phrases (``CANONICAL_PHRASES``), C >= 1.
        temperature: softmax temperature.
        normalize: L2-normalise features and embeddings first (a zero feature gets relevancy 0.5).
    Returns:
        [Q, ...] relevancy in [0, 1], float32 (float64 if the inputs are float64).
    """
    if query.ndim != 2 or canon.ndim != 2:
        raise ValueError(f"query and canon must be [Q, D] and [C, D], got {tuple(query.shape)}, {tuple(canon.shape)}")
    dim = features.shape[-1]
    if query.shape[1] != dim or canon.shape[1] != dim:
        raise ValueError(
            f"feature dimension {dim} differs from the embeddings' ({query.shape[1]} query, {canon.shape[1]} canon)"
        )
    if canon.shape[0] == 0:
        raise ValueError("relevancy needs at least one canonical phrase")
    dtype = torch.promote_types(features.dtype, torch.float32)
    batch = features.shape[:-1]
    flat = features.reshape(-1, dim).to(dtype)  # [N, D]
    phrases = torch.cat([query, canon], dim=0).to(device=flat.device, dtype=dtype)  # [Q + C, D]
    if normalize:
        phrases = F.normalize(phrases, dim=-1)
    sims = flat @ phrases.T  # [N, Q + C]
    if normalize:
        # Same as F.normalize on the features, but divides Q + C similarities instead of D channels per feature.
        sims = sims / torch.linalg.vector_norm(flat, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    n_query = query.shape[0]
    sim_query = sims[:, :n_query]  # [N, Q]
    sim_canon = sims[:, n_query:].amax(dim=1, keepdim=True)  # [N, 1]
    # softmax(T [a, b])[0] = 1 / (1 + exp(T (b - a))) = sigmoid(T (a - b)); a two-way softmax over a last axis of size 2
    # is an order of magnitude slower on a CPU.
    prob = torch.sigmoid(temperature * (sim_query - sim_canon))  # [N, Q]
    return prob.T.reshape(n_query, *batch)
