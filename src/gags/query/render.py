"""A language field seen through a camera: the Gaussians and fields of OUT, rendered features, decoded relevancy.

Shared by ``gags query``, ``gags eval``, the viewer, the report and the benchmarks:

- :func:`load_field`: the field of one method in OUT (``Workspace.field_file``), with errors that list what exists;
- :func:`load_geometry`: the frozen Gaussians of OUT, activated as the rasterizer takes them;
- :func:`text_embeddings`: the query and the canonical phrases embedded by the encoder that made the features;
- :func:`render_features`: the per-Gaussian features rendered into a camera, [H, W, F] (as ``gags distill`` renders them
  for training: no normalisation by alpha, zero where no Gaussian is hit);
- :func:`decoded_relevancy`: decode every pixel once (chunks of pixels through the decoder) and score all queries of
  the view at once: [Q, L, H, W]. The 512-d features are never held for the whole image.

Figures drawn from these maps are in :mod:`gags.query.figures`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from gags.cameras import Camera
from gags.errors import GagsError
from gags.field import LanguageField
from gags.query.relevancy import relevancy
from gags.splat.gaussians import FrozenGaussians
from gags.workspace import Workspace

DECODE_CHUNK = 65_536
"""Pixels (or Gaussians) decoded per pass: a [65536, 512] float32 block is 128 MiB, small next to a CPU's memory."""


# ----------------------------------------------------------------------------------------------------------------------
# inputs


def load_geometry(out: Path) -> FrozenGaussians:
    """Read OUT's Gaussians (log scales, logit opacities) and activate them."""
    return FrozenGaussians.from_splats(Workspace(Path(out)).read_gaussians())


def load_field(out: Path, method: str) -> LanguageField:
    """The field of ``method`` in OUT: GagsError listing the existing fields when it is missing, or saying to distill
    it again when it was made from other Gaussians or features than OUT holds now."""
    ws = Workspace(Path(out))
    ws.resolve_methods(method)
    field = LanguageField.load(ws.field_file(method))
    ws.check_field_inputs(method, field.config)
    return field


def text_embeddings(encoder_spec: str, texts: Sequence[str], dim: int) -> tuple[Tensor, Tensor]:
    """Embeddings of ``texts`` [Q, D] and of the canonical phrases [C, D]; GagsError if D is not the field's ``dim``."""
    from gags.models import load_encoder
    from gags.query.relevancy import CANONICAL_PHRASES

    encoder = load_encoder(encoder_spec, device="cpu")
    if encoder.dim != dim:
        raise GagsError(f"the encoder {encoder_spec!r} embeds text in {encoder.dim} dimensions but the field decodes "
                        f"{dim}-d features; pass the --encoder that made the features (as given to `gags segment`).")
    embedded = encoder.encode_text(list(texts) + list(CANONICAL_PHRASES)).float()
    return embedded[: len(texts)], embedded[len(texts):]


def field_dim(field: LanguageField) -> int:
    """Size of the decoded features (512 for CLIP ViT-B-16)."""
    return field.clip_dim


# ----------------------------------------------------------------------------------------------------------------------
# rendering and decoding


def camera_at(camera: Camera, width: int, height: int) -> Camera:
    """``camera`` for its image resized to ``width`` x ``height`` (each axis scaled on its own)."""
    if (width, height) == (camera.width, camera.height):
        return camera
    K = camera.K.clone()
    K[0] *= width / camera.width
    K[1] *= height / camera.height
    return replace(camera, K=K, width=int(width), height=int(height))


@torch.no_grad()
def render_features(geometry: FrozenGaussians, features: Tensor, camera: Camera) -> Tensor:
    """Render per-Gaussian features [N, F] into ``camera``: [H, W, F] (zero where no Gaussian is hit)."""
    from gags.splat import rasterize

    render, _, _ = rasterize(geometry.means, geometry.quats, geometry.scales, geometry.opacities, features.float(),
                             camera.world_to_cam, camera.K, camera.width, camera.height)
    return render


@torch.no_grad()
def decoded_relevancy(field: LanguageField, features: Tensor, query: Tensor, canon: Tensor,
                      chunk: int = DECODE_CHUNK, seconds: dict[str, float] | None = None) -> Tensor:
    """Decode features once, chunk by chunk, and score every query.

    Args:
        features: [..., F] rendered (or per-Gaussian) features.
        query: [Q, D] text embeddings; canon: [C, D] canonical phrases.
        seconds: if given, the wall seconds spent decoding and scoring are added to its "decode" and "relevancy"
            entries (``gags bench query``).
    Returns:
        [Q, L, ...] relevancy, L = ``field.levels`` (3 for langsplat, else 1), float32.
    """
    lead = features.shape[:-1]
    flat = features.reshape(-1, features.shape[-1])
    out = torch.empty(query.shape[0], field.levels, flat.shape[0], dtype=torch.float32)
    decode_s = relevancy_s = 0.0
    for start in range(0, flat.shape[0], chunk):
        t0 = time.perf_counter()
        decoded = field.decode_features(flat[start:start + chunk])  # [n, L, D]
        t1 = time.perf_counter()
        out[:, :, start:start + chunk] = relevancy(decoded, query, canon).permute(0, 2, 1)
        decode_s += t1 - t0
        relevancy_s += time.perf_counter() - t1
    if seconds is not None:
        seconds["decode"] = seconds.get("decode", 0.0) + decode_s
        seconds["relevancy"] = seconds.get("relevancy", 0.0) + relevancy_s
    return out.reshape(query.shape[0], field.levels, *lead)


def view_relevancy(geometry: FrozenGaussians, field: LanguageField, camera: Camera, query: Tensor,
                   canon: Tensor) -> Tensor:
    """Relevancy maps of every query in one view: [Q, L, H, W] (one render, one decode)."""
    return decoded_relevancy(field, render_features(geometry, field.features, camera), query, canon)
