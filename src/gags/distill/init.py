"""``gags distill --init lift``: start a trained field from the lifted features instead of zeros.

Each Gaussian's level features are lifted from the training views as ``--method lift`` lifts them
(:mod:`gags.distill.lift`: blending-weighted means of the segment features, per level, at the views' full size). What
the field starts from depends on the space its heads live in (:class:`gags.methods.MethodSpec`):

- ``feature`` (gags, avg, level-s|m|l, n2f2): per head, the lifted levels mixed with the head's level weights (the
  uniform mix for GaD, whose granularity decoder starts near uniform) and normalised. One principal basis of every
  head's targets gives the per-Gaussian features (the first ``F`` components, standardised), and the shared feature
  decoder is fitted to map them back to the targets, Gaussian by Gaussian (a pointwise MLP: no rendering).
- ``codes`` (langsplat): per level, the lifted feature encoded by the scene's autoencoder (trained before, as always).
- ``sparse`` (langsplat-v2): per level, logits ``cos(lifted feature, codebook entry) / t`` over the level's codebook,
  so that the top-k softmax starts on the entries nearest the lifted feature; ``t`` is the one of
  :data:`SPARSE_TEMPERATURES` whose decoded features are closest to the lifted ones.

A Gaussian no view sees at a head's levels starts at zero, as with ``--init zero``. Distillation then continues from
there for ``--iterations`` (0: the initial field as it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gags.errors import GagsError
from gags.field import decoder_precision
from gags.levels import NUM_LEVELS
from gags.methods import MethodSpec

INIT_DECODER_STEPS = 300
"""Decoder fitting steps. On the demo scene (30k Gaussians, the tiny CLIP) the mean cosine distance to the targets
falls to 0.006 by step 200; 1,500 steps fit them closer (0.001) and kept less of the avg reading on the ladder
(75% against 81% held out)."""
INIT_BATCH = 4096
"""Gaussians per decoder step."""
INIT_DECODER_LR = 1e-3
"""Adam learning rate of the decoder fit (a fresh optimizer; the distillation's own starts after it)."""
SPARSE_TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Candidate softmax temperatures of the sparse logits' start, from CLIP's own (its logit scale 100 is t = 0.01) to
20x softer; the one whose top-k decoding is closest to the lifted features is kept."""


def lifted_targets(levels: Tensor, seen: Tensor, weights: tuple[float, float, float] | None) -> tuple[Tensor, Tensor]:
    """Per-Gaussian targets from lifted levels.

    levels: [N, 3, D] unit features per level; seen: [N, 3] bool; weights: the head's level weights (None: uniform).
    Returns (targets [N, D] unit, valid [N] bool: seen at every level the weights use).
    """
    w = torch.tensor(weights if weights is not None else (1.0 / NUM_LEVELS,) * NUM_LEVELS, dtype=levels.dtype)
    used = w > 0
    valid = seen[:, used].all(dim=1)
    return F.normalize((levels * w[None, :, None]).sum(1), dim=-1), valid


def principal_basis(rows: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(mean [D], basis [D, dim]) of the rows [M, D]: their mean and first ``dim`` principal directions, each scaled
    so that the projected rows have unit standard deviation."""
    mean = rows.mean(0)
    _, _, v = torch.pca_lowrank(rows - mean, q=dim, center=False)
    std = ((rows - mean) @ v).std(0).clamp_min(1e-6)
    return mean, v / std


def project(targets: Tensor, valid: Tensor, mean: Tensor, basis: Tensor) -> Tensor:
    """[N, dim]: the targets [N, D] in a :func:`principal_basis`; 0 where not ``valid`` [N]."""
    f = (targets - mean) @ basis
    return torch.where(valid[:, None], f, torch.zeros_like(f))


def fit_decoder(decoder: torch.nn.Module, features: Tensor, targets: Tensor, seed: int,
                steps: int = INIT_DECODER_STEPS, precision: str = "float32") -> float:
    """Fit ``decoder`` ([B, F, 1, 1] -> [B, D, 1, 1] unit) so that it maps each row of ``features`` [M, F] to the same
    row of ``targets`` [M, D] (mean cosine distance over batches of :data:`INIT_BATCH` rows); returns the last batch's
    loss."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=INIT_DECODER_LR)
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(len(features), (min(INIT_BATCH, len(features)),), generator=gen).to(features.device)
        with decoder_precision(precision, features.device):
            pred = decoder(features[idx][:, :, None, None])[:, :, 0, 0].float()
        loss = (1 - (pred * targets[idx]).sum(-1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def init_feature_heads(state: Any, spec: MethodSpec, levels: Tensor, seen: Tensor, seed: int,
                       precision: str = "float32") -> dict[str, Any]:
    """``feature`` space: fill every head's channels of ``state.features`` and fit ``state.feature_decoder``.

    levels: [N, 3, D] lifted unit features; seen: [N, 3] bool."""
    heads = [lifted_targets(levels, seen, head.weights) for head in spec.heads]
    if not any(bool(valid.any()) for _, valid in heads):
        raise GagsError("--init lift: no Gaussian is seen by a segment at the levels this method trains on; use "
                        "--init zero.")
    rows = torch.cat([targets[valid] for targets, valid in heads])  # [M, D]
    mean, basis = principal_basis(rows, spec.heads[0].dim)
    device = state.features.device
    features = [project(targets, valid, mean, basis) for targets, valid in heads]  # per head [N, F]
    pairs_f = torch.cat([f[valid] for f, (_, valid) in zip(features, heads, strict=True)])
    loss = fit_decoder(state.feature_decoder, pairs_f.to(device), rows.to(device), seed, precision=precision)
    with torch.no_grad():
        for head, f in zip(spec.heads, features, strict=True):
            state.features[:, head.channels] = f.to(device)
    return {"init_valid_gaussians": [int(valid.sum()) for _, valid in heads], "init_decoder_loss": loss}


def init_code_heads(state: Any, spec: MethodSpec, levels: Tensor, seen: Tensor) -> dict[str, Any]:
    """``codes`` space (LangSplat): every head's channels = its level's lifted feature through the autoencoder."""
    from gags.distill.autoencoder import encode_features

    assert state.autoencoder is not None
    device = state.features.device
    with torch.no_grad():
        for head in spec.heads:
            k = head.coverage
            assert k is not None
            codes = encode_features(state.autoencoder, levels[:, k].to(device))
            state.features[:, head.channels] = torch.where(seen[:, k, None].to(device), codes, 0.0)
    return {"init_valid_gaussians": [int(seen[:, h.coverage].sum()) for h in spec.heads]}


def sparse_logits(levels: Tensor, codebook: Tensor, temperature: float) -> Tensor:
    """[N, K] logits of one level: cosine of each lifted feature [N, D] to each codebook entry [K, D], over
    ``temperature``."""
    return F.normalize(levels, dim=-1) @ F.normalize(codebook, dim=-1).T / temperature


def init_sparse_heads(state: Any, spec: MethodSpec, levels: Tensor, seen: Tensor) -> dict[str, Any]:
    """``sparse`` space (LangSplatV2): every head's logits from :func:`sparse_logits` with the temperature of
    :data:`SPARSE_TEMPERATURES` whose decoded features are closest (mean cosine) to the lifted ones."""
    from gags.field import top_k_soft_codes

    book = state.codebook
    assert book is not None
    device = state.features.device
    chosen = []
    with torch.no_grad():
        for head in spec.heads:
            k = head.coverage
            assert k is not None
            rows = seen[:, k]
            target = levels[rows, k].to(device)
            entries = book.codebooks[k]

            def closeness(t: float, target: Tensor = target, entries: Tensor = entries, k: int = k) -> float:
                codes = top_k_soft_codes(sparse_logits(target, entries, t), book.top_k)
                return float(F.cosine_similarity(book.decode_level(codes, k), target, dim=-1).mean())

            t = max(SPARSE_TEMPERATURES, key=closeness) if bool(rows.any()) else SPARSE_TEMPERATURES[0]
            logits = sparse_logits(levels[:, k].to(device), entries, t)
            state.features[:, head.channels] = torch.where(rows[:, None].to(device), logits, 0.0)
            chosen.append(t)
    return {"init_valid_gaussians": [int(seen[:, h.coverage].sum()) for h in spec.heads],
            "init_sparse_temperature": chosen}


def lift_init(state: Any, spec: MethodSpec, gaussians: Any, views: Sequence[Any], seed: int,
              precision: str = "float32") -> dict[str, Any]:
    """Fill ``state.features`` (and the feature decoder of the ``feature`` space) from the lifted features of ``views``
    (full-size training views); returns facts for the field's record."""
    from gags.distill.lift import lifted_levels, weighted_sums

    sums, weights = weighted_sums(gaussians, views)
    levels, _ = lifted_levels(sums, weights)
    levels, seen = levels.float(), weights > 0
    if spec.space == "feature":
        facts = init_feature_heads(state, spec, levels, seen, seed, precision)
    elif spec.space == "codes":
        facts = init_code_heads(state, spec, levels, seen)
    else:
        facts = init_sparse_heads(state, spec, levels, seen)
    return {"init": "lift", **facts}


__all__ = ["INIT_BATCH", "INIT_DECODER_LR", "INIT_DECODER_STEPS", "SPARSE_TEMPERATURES", "fit_decoder",
           "init_code_heads", "init_feature_heads", "init_sparse_heads", "lift_init", "lifted_targets",
           "principal_basis", "project", "sparse_logits"]
