"""Point-promptable segmenters returning three nested granularities per point: sub-part, part, whole.

One protocol, three implementations:

- ``HierarchySegmenter`` (:mod:`gags.models.hierarchy`): the embedded default, no weights. Superpixels, a region
  adjacency graph on colour (and depth when given), merged hierarchically and cut at three thresholds.
- ``SamSegmenter``: segment_anything (vit_b / vit_l / vit_h) from a local checkpoint, and the embedded ``tiny``
  (:mod:`gags.models.tinysam`: segment_anything's ``Sam`` with a small image encoder; ``--segmenter tinysam``).
- ``Sam2Segmenter``: SAM 2 (package ``sam2``) with one of the configs it ships, from a local checkpoint.

Build one from a spec string with ``gags.models.load_segmenter``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from gags.errors import GagsError, one_line
from gags.levels import NUM_LEVELS as N_LEVELS
from gags.models.specs import SAM2_CONFIGS, SAM_ARCHS, parse_segmenter_spec


class MaskPrediction(NamedTuple):
    """What ``predict`` returns; unpacks as ``masks, scores, stability = segmenter.predict(points)``.

    masks:     [P, 3, H, W] bool, ordered sub-part, part, whole (non-decreasing area)
    scores:    [P, 3] float32, predicted IoU of each mask (higher is better, in [0, 1])
    stability: [P, 3] float32, IoU of the mask under a perturbed threshold (in [0, 1])
    """

    masks: torch.Tensor
    scores: torch.Tensor
    stability: torch.Tensor


@runtime_checkable
class Segmenter(Protocol):
    """A point-promptable segmenter: one image at a time, many points per call."""

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        """rgb: [H, W, 3] uint8. depth: [H, W] float (0 or non-finite = unknown), used by segmenters that can."""

    def predict(self, points: np.ndarray | torch.Tensor) -> MaskPrediction:
        """points: [P, 2] pixel (x, y), float, of the image given to ``set_image``."""


def load_segmenter(spec: str = "hierarchy", device: str | torch.device | None = None) -> Segmenter:
    """Build a segmenter from a spec: ``hierarchy`` | ``tinysam`` | ``sam:vit_h:/path.pth`` |
    ``sam2:sam2.1_hiera_large:/path.pt`` | ``oracle`` (a procedural scene's entities: give them with ``set_ids``).

    device: default CUDA when available, else CPU (the hierarchy segmenter always runs on the CPU).
    Raises GagsError for a malformed spec, an unknown architecture or a missing/unreadable checkpoint.
    """
    parsed = parse_segmenter_spec(spec)
    if parsed.kind == "exact":
        raise GagsError("exact is not a promptable segmenter: it is the segment stage reading a procedural scene's "
                        "own entities (gags segment --segmenter exact); choose hierarchy, tinysam, oracle, sam:... or "
                        "sam2:...")
    if parsed.kind == "oracle":
        from gags.segment.exact import OracleSegmenter

        return OracleSegmenter()
    if parsed.kind == "hierarchy":
        from gags.models.hierarchy import HierarchySegmenter

        return HierarchySegmenter()
    assert parsed.arch is not None and parsed.checkpoint is not None
    if parsed.kind == "sam":
        return SamSegmenter(parsed.arch, parsed.checkpoint, device=device)
    return Sam2Segmenter(parsed.arch, parsed.checkpoint, device=device)


# ----------------------------------------------------------------------------------------------------------------------
# shared helpers


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise GagsError(f"set_image expects an RGB image as uint8 [H, W, 3]; got {rgb.dtype} {list(rgb.shape)}.")
    rgb = np.ascontiguousarray(rgb)
    # SAM's transforms wrap the array in a tensor, which warns when it is read-only (np.asarray of a PIL image)
    return rgb if rgb.flags.writeable else rgb.copy()


def check_points(points: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
    """points: [P, 2] pixel xy -> float32 [P, 2]; GagsError when not finite or outside the image."""
    pts = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    pts = pts.astype(np.float32, copy=False).reshape(-1, 2) if pts.size else np.zeros((0, 2), np.float32)
    if not np.isfinite(pts).all():
        raise GagsError("prompt points contain NaN or inf; pass finite pixel coordinates (x, y).")
    outside = (pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)
    if outside.any():
        raise GagsError(
            f"{int(outside.sum())} prompt point(s) lie outside the {width}x{height} image, "
            f"e.g. {pts[outside][0].tolist()}; "
            "points are pixel (x, y) of the image given to set_image."
        )
    return pts


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without running pickled code: safetensors, or ``torch.load(weights_only=True)``.

    A checkpoint that wraps its state dict (``{"model": ...}`` as SAM 2, ``{"state_dict": ...}``) is unwrapped.
    """
    path = Path(path)
    try:
        state: Any
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a file the user can replace
        raise GagsError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {one_line(str(exc))}. Checkpoints are read as "
            "safetensors or with torch.load(weights_only=True); re-download the file or convert it to safetensors."
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GagsError(f"{path} does not hold a state dict of tensors; pass the model's checkpoint file.")
    return state


def _load_into(module: torch.nn.Module, path: Path, what: str) -> None:
    state = load_state_dict(path)
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise GagsError(
            f"checkpoint {path} does not match {what}: {len(result.missing_keys)} missing key(s) "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected key(s) "
            f"(e.g. {result.unexpected_keys[:3]}). Check that the spec names the checkpoint's architecture."
        )


def _sorted_by_area(logits: torch.Tensor, iou: torch.Tensor, threshold: float, offset: float) -> MaskPrediction:
    """logits: [B, 3, H, W], iou: [B, 3] -> masks ordered by area, stability as SAM's automatic mask generator.

    Stability = |logits > threshold + offset| / |logits > threshold - offset| (the first mask lies inside the second,
    so this is their IoU); segment_anything's default offset is 1.0.
    """
    masks = logits > threshold
    inner = _pixel_count(logits > threshold + offset).float()
    outer = _pixel_count(logits > threshold - offset).float()
    stability = torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros_like(outer))
    order = _pixel_count(masks).argsort(dim=1, stable=True)  # [B, 3] ascending area
    # indexing whole masks: take_along_dim would broadcast the order to [B, 3, H, W] indices (90x slower on a CPU)
    masks = masks[torch.arange(len(masks), device=masks.device)[:, None], order]
    return MaskPrediction(
        masks, torch.take_along_dim(iou.float(), order, dim=1), torch.take_along_dim(stability, order, dim=1)
    )


COUNT_CHUNK = 128
"""Pixels of a mask summed as bytes at a time by ``_pixel_count`` (a byte holds a count of at most 255)."""


def _pixel_count(masks: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] bool -> [B, K] int32 true pixels.

    Runs of ``COUNT_CHUNK`` pixels are summed as bytes into bytes, then the run sums into int32: summing bools widens
    every pixel to int64 first, and summing bytes into int32 casts every pixel to int32 (on a CPU 70x and 35x slower at
    256 x 256: both copy the masks four or eight times over).
    """
    flat = masks.flatten(2).view(torch.uint8)  # [B, K, N]
    whole = flat.shape[-1] - flat.shape[-1] % COUNT_CHUNK
    runs = flat[..., :whole].unflatten(-1, (-1, COUNT_CHUNK)).sum(-1, dtype=torch.uint8)  # [B, K, N // CHUNK]
    return runs.sum(-1, dtype=torch.int32) + flat[..., whole:].sum(-1, dtype=torch.int32)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA (SAM and SAM 2 run their image encoders in half precision there), nothing on a CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


STABILITY_OFFSET = 1.0
"""Logit offset of the stability score (segment_anything SamAutomaticMaskGenerator: stability_score_offset=1.0)."""
SAM_PIXEL_OFFSET = 0.5
"""Subtracted from prompt points before SAM / SAM 2 see them. The project's points are continuous pixel coordinates
(pixel (i, j) covers [j, j+1) x [i, i+1), its centre is (j + 0.5, i + 0.5); ``gags.cameras``, ``gags.segment.prompts``),
while SAM and SAM 2 take a pixel's index: their predictors only rescale the coordinates to the model's 1024-pixel
input and their prompt encoders add 0.5 ("shift to center of pixel", ``PromptEncoder._embed_points`` in both
packages). Without the offset every prompt would land half a pixel right of and below the pixel it names."""
TINY_SAM_BATCH = 128
"""Points per decoder call of the embedded tiny SAM: its fastest batch on a 2-core CPU (``gags.models.tinysam``)."""
MAX_LOGIT_ELEMENTS = 1 << 25
"""Bound on full-resolution logits held at once ([B, 3, H, W] float32, 128 MiB): sets the points per batch."""


# ----------------------------------------------------------------------------------------------------------------------
# SAM and SAM 2


class SamSegmenter:
    """segment_anything (``vit_b``, ``vit_l``, ``vit_h``, and ``tiny``) from a checkpoint; batched ``predict_torch``.

    The three multimask outputs are sorted by area into sub-part, part, whole; scores are SAM's predicted IoU,
    stability as SAM's automatic mask generator computes it. fp16 autocast on CUDA. Points are passed to SAM as
    ``xy - SAM_PIXEL_OFFSET`` (SAM adds the half pixel itself).
    """

    def __init__(
        self, arch: str, checkpoint: Path | None = None, device: str | torch.device | None = None
    ) -> None:
        """checkpoint: None builds randomly initialised weights (for tests)."""
        try:
            from segment_anything import SamPredictor, sam_model_registry
        except ImportError as exc:
            raise GagsError(
                "the SAM segmenters need the segment_anything package, a dependency of gags: pip install "
                "segment_anything (or reinstall gags)."
            ) from exc
        if arch not in SAM_ARCHS:
            raise GagsError(f"unknown SAM architecture {arch!r}; accepted: {', '.join(SAM_ARCHS)}.")
        self.device = _device(device)
        if arch == "tiny":
            from gags.models.tinysam import build_tiny_sam

            model = build_tiny_sam()
        else:
            model = sam_model_registry[arch](checkpoint=None)
        self.batch = TINY_SAM_BATCH if arch == "tiny" else None
        if checkpoint is not None:
            _load_into(model, Path(checkpoint), f"SAM {arch}")
        model.to(self.device).eval()
        self.model = model
        self.predictor = SamPredictor(model)
        self._size: tuple[int, int] | None = None

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        """rgb: [H, W, 3] uint8. depth is ignored (SAM sees colour only)."""
        rgb = check_rgb(rgb)
        with torch.inference_mode(), _autocast(self.device):
            self.predictor.set_image(rgb, image_format="RGB")
        self._size = (rgb.shape[0], rgb.shape[1])

    def predict(self, points: np.ndarray | torch.Tensor) -> MaskPrediction:
        """points: [P, 2] pixel xy -> masks [P, 3, H, W] bool, scores [P, 3], stability [P, 3] (on self.device)."""
        if self._size is None:
            raise GagsError("call set_image before predict.")
        height, width = self._size
        pts = check_points(points, height, width)
        batch = max(1, MAX_LOGIT_ELEMENTS // (N_LEVELS * height * width))
        batch = min(batch, self.batch) if self.batch is not None else batch
        outs = []
        for start in range(0, max(len(pts), 1), batch):
            chunk = torch.from_numpy(pts[start : start + batch] - SAM_PIXEL_OFFSET).to(self.device)
            coords = self.predictor.transform.apply_coords_torch(chunk[:, None, :], (height, width))
            labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=self.device)
            with torch.inference_mode(), _autocast(self.device):
                logits, iou, _ = self.predictor.predict_torch(coords, labels, multimask_output=True, return_logits=True)
            outs.append(_sorted_by_area(logits.float(), iou, self.model.mask_threshold, STABILITY_OFFSET))
        return MaskPrediction(*(torch.cat(parts) for parts in zip(*outs, strict=True)))


class Sam2Segmenter:
    """SAM 2 (package ``sam2``) with a config it ships (``sam2.1_hiera_large`` ...) from a local checkpoint.

    Batched point prompts through ``SAM2ImagePredictor.predict`` with three mask outputs, sorted by area into
    sub-part, part, whole; stability as for SAM. fp16 autocast on CUDA. Points are passed as ``xy - SAM_PIXEL_OFFSET``
    (SAM 2's prompt encoder adds the half pixel itself, as SAM's does).
    """

    def __init__(
        self, config: str, checkpoint: Path | None = None, device: str | torch.device | None = None
    ) -> None:
        """config: a key of ``SAM2_CONFIGS``; checkpoint: None builds randomly initialised weights (for tests)."""
        if config not in SAM2_CONFIGS:
            raise GagsError(f"unknown SAM 2 config {config!r}; accepted: {', '.join(sorted(SAM2_CONFIGS))}.")
        try:
            from sam2.build_sam import build_sam2
            from sam2.sam2_image_predictor import SAM2ImagePredictor
        except ImportError as exc:
            raise GagsError(
                "the SAM 2 segmenter needs the sam2 package: SAM2_BUILD_CUDA=0 pip install --no-build-isolation "
                "'gags[sam2]' (or pip install sam2)."
            ) from exc
        self.device = _device(device)
        # apply_postprocessing only changes single-mask outputs; three masks are always asked for here.
        model = build_sam2(SAM2_CONFIGS[config], ckpt_path=None, device=str(self.device), apply_postprocessing=False)
        if checkpoint is not None:
            _load_into(model, Path(checkpoint), f"SAM 2 {config}")
        model.eval()
        self.model = model
        self.predictor = SAM2ImagePredictor(model)
        self._size: tuple[int, int] | None = None

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        """rgb: [H, W, 3] uint8. depth is ignored."""
        rgb = check_rgb(rgb)
        with torch.inference_mode(), _autocast(self.device):
            self.predictor.set_image(rgb)
        self._size = (rgb.shape[0], rgb.shape[1])

    def predict(self, points: np.ndarray | torch.Tensor) -> MaskPrediction:
        """points: [P, 2] pixel xy -> masks [P, 3, H, W] bool, scores [P, 3], stability [P, 3] (CPU tensors)."""
        if self._size is None:
            raise GagsError("call set_image before predict.")
        height, width = self._size
        pts = check_points(points, height, width)
        batch = max(1, MAX_LOGIT_ELEMENTS // (N_LEVELS * height * width))
        outs = []
        for start in range(0, max(len(pts), 1), batch):
            chunk = pts[start : start + batch] - SAM_PIXEL_OFFSET
            with torch.inference_mode(), _autocast(self.device):
                logits, iou, _ = self.predictor.predict(
                    point_coords=chunk[:, None, :],
                    point_labels=np.ones((len(chunk), 1), np.int64),
                    multimask_output=True,
                    return_logits=True,
                )
            logits_t = torch.from_numpy(np.asarray(logits, np.float32)).reshape(len(chunk), N_LEVELS, height, width)
            iou_t = torch.from_numpy(np.asarray(iou, np.float32)).reshape(len(chunk), N_LEVELS)
            outs.append(_sorted_by_area(logits_t, iou_t, self.predictor.mask_threshold, STABILITY_OFFSET))
        return MaskPrediction(*(torch.cat(parts) for parts in zip(*outs, strict=True)))
