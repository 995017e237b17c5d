"""LangSplat's scene-specific autoencoder (512-d CLIP feature <-> 3-d code) for the ``langsplat`` baseline.

The architecture lives in :mod:`gags.field` (the field decodes with it); this module trains it, as LangSplat's
``autoencoder/train.py`` does: all ``_f`` features of the scene, shuffled mini-batches of 64, Adam lr 1e-4, loss
``MSE + 0.001 * (1 - cosine)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gags.errors import GagsError
from gags.field import LangSplatAutoencoder

__all__ = [
    "LangSplatAutoencoder",
    "autoencoder_loss",
    "default_autoencoder_epochs",
    "encode_features",
    "reconstruction_cosine",
    "train_autoencoder",
]

LANGSPLAT_EPOCHS = 100
"""LangSplat ``autoencoder/train.py`` default ``--num_epochs``."""


def default_autoencoder_epochs(num_features: int, batch_size: int, max_steps: int | None) -> int:
    """LangSplat's 100 epochs, or fewer so that at most ``max_steps`` optimizer steps run (None: no cap).

    On a CPU a step of batch 64 takes a few milliseconds, so a cap of 20,000 steps keeps large scenes at a few
    minutes; a small scene (a few thousand features) still gets all 100 epochs.
    """
    if max_steps is None:
        return LANGSPLAT_EPOCHS
    steps_per_epoch = max(1, math.ceil(num_features / batch_size))
    return max(1, min(LANGSPLAT_EPOCHS, max_steps // steps_per_epoch))


def autoencoder_loss(recon: Tensor, target: Tensor, cos_weight: float) -> Tensor:
    """``mean((recon - target)^2) + cos_weight * mean(1 - cos(recon_i, target_i))``.

    LangSplat's ``cos_loss`` takes the cosine along dim 0 of a [B, 512] batch, i.e. per channel across the batch; here
    the cosine is taken per feature vector (dim -1), which is what a reconstruction cosine means. With weight 0.001 the
    term is a small addition to the MSE either way.

    recon, target: [B, D] -> scalar.
    """
    mse = (recon - target).pow(2).mean()
    cos = 1.0 - F.cosine_similarity(recon, target, dim=-1).mean()
    return mse + cos_weight * cos


def train_autoencoder(
    features: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    cos_weight: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> LangSplatAutoencoder:
    """Train LangSplat's autoencoder on every CLIP feature of a scene; returns the model in eval mode.

    Initialisation and batch order are drawn from ``seed`` only (the global RNG state is restored afterwards), so the
    same seed gives the same model on the same machine. A last mini-batch of a single feature is skipped (BatchNorm
    needs two samples in training mode). LangSplat keeps the best of its last epochs by reconstruction loss; this
    returns the last epoch's model.

    features: [M, 512] (any float dtype; rows are L2-normalised first, as CLIP features are); the model trains on
        their device.
    on_epoch: called with (epoch, mean training loss of the epoch) after every epoch.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise GagsError(
            f"the LangSplat autoencoder needs at least 2 features of shape [M, D], got {tuple(features.shape)}. "
            "Check that OUT's language features hold the _f.npy files of the scene (run `gags segment`)."
        )
    x = F.normalize(features.float(), dim=-1)
    if not torch.isfinite(x).all():
        raise GagsError("the CLIP features contain NaN or infinity; re-run `gags segment` to extract them again.")
    m = x.shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LangSplatAutoencoder(in_dim=x.shape[1]).to(x.device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(m, generator=generator).to(x.device)
            total, seen = 0.0, 0
            for start in range(0, m, batch_size):
                idx = order[start : start + batch_size]
                if idx.numel() < 2:
                    continue
                batch = x[idx]
                loss = autoencoder_loss(model(batch), batch, cos_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * idx.numel()
                seen += idx.numel()
            if on_epoch is not None:
                on_epoch(epoch, total / max(seen, 1))
    model.eval()
    return model


@torch.no_grad()
def encode_features(model: LangSplatAutoencoder, features: Tensor, batch_size: int = 65536) -> Tensor:
    """Encode CLIP features to unit 3-d codes with the model in eval mode. features: [M, 512] -> [M, 3]."""
    model.eval()
    x = F.normalize(features.float(), dim=-1)
    return torch.cat([model.encode(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def reconstruction_cosine(model: LangSplatAutoencoder, features: Tensor) -> Tensor:
    """Cosine between each feature and its reconstruction (eval mode). features: [M, 512] -> [M]."""
    model.eval()
    x = F.normalize(features.float(), dim=-1)
    return F.cosine_similarity(model(x), x, dim=-1)
