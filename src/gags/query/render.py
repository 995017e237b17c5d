"""A language field seen through a camera: rendered features, decoded relevancy, and the figures drawn from them.

Shared by ``gags query``, ``gags eval`` (and the viewer and report):

- :func:`load_field` / :func:`field_methods`: the fields of ``OUT/field/METHOD/field.safetensors``, with errors that
  list what exists.
- :func:`load_geometry`: the frozen Gaussians of ``OUT/gaussians.ply``, activated as the rasterizer takes them.
- :func:`render_features`: the per-Gaussian features rendered into a camera, [H, W, F] (as ``gags distill`` renders them
  for training: no normalisation by alpha, zero where no Gaussian is hit).
- :func:`decoded_relevancy`: decode every pixel once (chunks of pixels through the decoder) and score all queries of
  the view at once: [Q, L, H, W]. The 512-d features are never held for the whole image.
- Figures: :func:`heatmap_figure` (relevancy over the image with the localization point), :func:`mask_figure` (the
  predicted mask with the ground-truth outline), :func:`colormap` (relevancy -> RGB, also used for PLY colours).
"""

from __future__ import annotations

import time
import typing
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from gags.cameras import Camera
from gags.config import DistillConfig
from gags.errors import GagsError
from gags.field import LanguageField
from gags.io import atomic_path
from gags.query.relevancy import relevancy
from gags.splat.gaussians import FrozenGaussians

FIELD_DIR = "field"
FIELD_FILE = "field.safetensors"
"""``gags distill`` writes ``OUT/field/METHOD/field.safetensors``."""
GAUSSIANS_PLY = "gaussians.ply"

METHODS: tuple[str, ...] = typing.get_args(typing.get_type_hints(DistillConfig)["method"])
"""Every method ``gags distill`` can train (gags, avg, level-s/m/l, langsplat, n2f2)."""

DECODE_CHUNK = 65_536
"""Pixels (or Gaussians) decoded per pass: a [65536, 512] float32 block is 128 MiB, small next to a CPU's memory."""

COLORMAP = cv2.COLORMAP_TURBO
"""Colour scale of relevancy figures and PLYs (blue = low, red = high)."""
HEATMAP_BLEND = 0.6
"""Weight of the colour-mapped relevancy over the image in heatmap figures (the rest is the image)."""
MASK_DIM = 0.35
"""Brightness kept outside the predicted mask in mask figures."""
MASK_TINT = (255, 210, 0)
"""RGB tint blended (at 40 %) into the predicted mask."""
GT_OUTLINE = (0, 255, 0)
"""RGB colour of the ground-truth outline in mask figures."""
POINT_COLOR = (255, 255, 255)
"""RGB colour of the localization marker (with a black rim)."""


# ----------------------------------------------------------------------------------------------------------------------
# inputs


def load_geometry(out: Path) -> FrozenGaussians:
    """Read ``OUT/gaussians.ply`` (log scales, logit opacities) and activate it."""
    path = Path(out) / GAUSSIANS_PLY
    if not path.is_file():
        raise GagsError(f"{path} does not exist. Run `gags reconstruct` (or put a 3DGS .ply there) first.")
    return FrozenGaussians.from_ply(path)


def field_methods(out: Path) -> list[str]:
    """Methods with a field in ``OUT/field/``, in ``METHODS`` order (then any other folder name, sorted)."""
    folder = Path(out) / FIELD_DIR
    found = {p.parent.name for p in folder.glob(f"*/{FIELD_FILE}")} if folder.is_dir() else set()
    return [m for m in METHODS if m in found] + sorted(found - set(METHODS))


def resolve_methods(out: Path, method: str) -> list[str]:
    """The methods to use: ``method`` itself or, for ``"all"``, every method with a field; GagsError otherwise."""
    existing = field_methods(out)
    have = ", ".join(existing) if existing else "none"
    if method == "all":
        if not existing:
            raise GagsError(f"{Path(out) / FIELD_DIR} holds no {FIELD_FILE}. Run `gags distill {out}` first.")
        return existing
    if method not in METHODS and method not in existing:
        raise GagsError(f"unknown method {method!r}. Known methods: {', '.join(METHODS)} (or 'all'); fields in "
                        f"{Path(out) / FIELD_DIR}: {have}.")
    if method not in existing:
        raise GagsError(f"{Path(out) / FIELD_DIR / method / FIELD_FILE} does not exist. Run `gags distill {out} "
                        f"--method {method}`, or pick a method with a field ({have}).")
    return [method]


def load_field(out: Path, method: str) -> LanguageField:
    """The field of ``method`` in OUT (GagsError listing the existing fields when it is missing)."""
    resolve_methods(out, method)
    return LanguageField.load(Path(out) / FIELD_DIR / method / FIELD_FILE)


def segment_settings(out: Path) -> dict[str, typing.Any]:
    """The settings `gags segment` recorded in ``OUT/segment/config.json``; {} when there are none (e.g. features
    made by LangSplat's preprocessing) or the record is unreadable."""
    import json

    try:
        settings = json.loads((Path(out) / "segment" / "config.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return settings if isinstance(settings, dict) else {}


def default_encoder(out: Path) -> str:
    """The encoder spec ``gags segment`` recorded in ``OUT/segment/config.json`` (what made the features), else tiny."""
    spec = segment_settings(out).get("encoder")
    return spec if isinstance(spec, str) and spec else "tiny"


def check_encoder_weights(out: Path, encoder_spec: str) -> None:
    """GagsError when ``encoder_spec`` names the encoder `gags segment` used for OUT's features but its weights file
    changed since (e.g. a package upgrade shipped new tiny CLIP weights): text and image embeddings would not match."""
    from gags.models.specs import parse_encoder_spec
    from gags.segment.extract import file_fingerprint

    record = Path(out) / "segment" / "config.json"
    settings = segment_settings(out)
    then_spec, then_weights = settings.get("encoder"), settings.get("encoder_weights")
    if then_spec != encoder_spec or then_weights is None:
        return
    checkpoint = parse_encoder_spec(encoder_spec).checkpoint
    if checkpoint is not None and Path(checkpoint).exists() and file_fingerprint(checkpoint) != then_weights:
        raise GagsError(f"the weights of encoder {encoder_spec!r} ({checkpoint}) are not those that encoded the features "
                        f"in {out} (fingerprint {then_weights} in {record}): text queries would be embedded by another "
                        f"model. Pass --encoder with the original weights, or re-run `gags segment {out} --overwrite` "
                        "and `gags distill`.")


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
    if field.feature_decoder is not None:
        return field.feature_decoder.out_dim
    assert field.autoencoder is not None
    return field.autoencoder.decoder_dims[-1]


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


def view_relevancy(geometry: FrozenGaussians, field: LanguageField, camera: Camera, query: Tensor, canon: Tensor) -> Tensor:
    """Relevancy maps of every query in one view: [Q, L, H, W] (one render, one decode)."""
    return decoded_relevancy(field, render_features(geometry, field.features, camera), query, canon)


# ----------------------------------------------------------------------------------------------------------------------
# figures


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB [..., 3] on the ``COLORMAP`` scale (clipped)."""
    values = np.asarray(values, dtype=np.float32)
    levels = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8).reshape(-1, 1)
    bgr = cv2.applyColorMap(levels, COLORMAP).reshape(*values.shape, 3)
    return np.ascontiguousarray(bgr[..., ::-1])


def normalized(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] (a constant map gives zeros)."""
    values = np.asarray(values, dtype=np.float32)
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _draw_point(image: np.ndarray, point: tuple[int, int]) -> None:
    size = max(3, round(min(image.shape[:2]) / 40))
    x, y = int(point[0]), int(point[1])
    cv2.drawMarker(image, (x, y), (0, 0, 0), cv2.MARKER_CROSS, size * 2 + 2, max(2, size // 2 + 1))
    cv2.drawMarker(image, (x, y), POINT_COLOR, cv2.MARKER_CROSS, size * 2, max(1, size // 2))


def heatmap_figure(image: np.ndarray, rel: np.ndarray, point: tuple[int, int] | None = None,
                   boxes: np.ndarray | None = None) -> np.ndarray:
    """The relevancy over the image: colour-mapped min-max-normalised relevancy blended over the image.

    Args:
        image: [H, W, 3] uint8 RGB; rel: [H, W] relevancy; point: (x, y) localization, drawn as a cross;
        boxes: [B, 4] (x1, y1, x2, y2) ground-truth boxes, drawn as thin outlines.
    Returns:
        [H, W, 3] uint8 RGB.
    """
    heat = colormap(normalized(rel)).astype(np.float32)
    out = np.round(HEATMAP_BLEND * heat + (1 - HEATMAP_BLEND) * image.astype(np.float32)).astype(np.uint8)
    if boxes is not None:
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), GT_OUTLINE, 1)
    if point is not None:
        _draw_point(out, point)
    return out


def mask_figure(image: np.ndarray, mask: np.ndarray, gt: np.ndarray | None = None,
                point: tuple[int, int] | None = None) -> np.ndarray:
    """The predicted mask over the image (outside dimmed, inside tinted), with the ground-truth mask's outline.

    Args:
        image: [H, W, 3] uint8 RGB; mask: bool [H, W] predicted; gt: bool [H, W] ground truth or None.
    Returns:
        [H, W, 3] uint8 RGB.
    """
    img = image.astype(np.float32)
    tinted = 0.6 * img + 0.4 * np.asarray(MASK_TINT, np.float32)
    out = np.where(mask[..., None], tinted, MASK_DIM * img).round().astype(np.uint8)
    if gt is not None:
        contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, GT_OUTLINE, 1)
    if point is not None:
        _draw_point(out, point)
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """Write [H, W, 3] RGB or [H, W] grey uint8 as PNG, atomically."""
    data = image[..., ::-1] if image.ndim == 3 else image
    with atomic_path(Path(path)) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(data)):
            raise GagsError(f"could not write {path}. Check that the folder is writable.")


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy, atomically."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def slug(text: str, max_len: int = 60) -> str:
    """A file-name-safe form of a text: lower case, runs of other characters -> '-' (``"Red cup!"`` -> ``red-cup``)."""
    import re

    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return s or "query"
