"""One viewer frame: the scene seen from a camera, coloured by a mode (RGB, relevancy, granularity, selection).

:class:`Renderer` holds the loaded scene, a cache of encoded queries and one lock. Every torch computation happens
under that lock, so concurrent requests (several browser tabs) run one after the other and never share partial
state; a :class:`Frame` is built from its own request only. ``Renderer.render`` takes the requesting client's previous
:class:`RenderPass` and reuses it when the camera did not move (a new query on a still view only takes dot products
with the decoded features it keeps).

Per frame, one rasterization gives the colour, the 16-d language features and the expected depth together
(``render_mode="RGB+ED"`` over ``[rgb, features]`` channels). The features are area-averaged to at most
``decode_size`` pixels on the longer side (decoding is the costly part) and only covered pixels (alpha above
``COVERED_ALPHA``) are decoded; the maps are upsampled back to the frame. Modes:

- ``rgb``: the Gaussians' colours.
- ``relevancy``: the relevancy of the query (``gags.query.relevancy``, as ``gags query`` computes it per pixel),
  min-max normalised over the covered pixels, colour-mapped and blended over the colours.
- ``granularity``: the granularity decoder's weights of the sub-part, part and whole levels, mixed from
  ``GRANULARITY_COLORS`` and blended over the colours (gags fields only).
- ``selected``: the 3D selection of ``gags.query.select3d`` (Gaussians with relevancy above the threshold) in their
  colours, every other Gaussian dimmed to grey (a second rasterization).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gags.cameras import Camera
from gags.levels import DISPLAY as LEVEL_DISPLAY
from gags.query.figures import HEATMAP_BLEND, colormap
from gags.query.relevancy import relevancy
from gags.query.select3d import SELECT_THRESHOLD, Selection, select_gaussians
from gags.splat.sh import spherical_harmonics
from gags.viewer.scene import ViewerScene

MODES: tuple[str, ...] = ("rgb", "relevancy", "granularity", "selected")
MODE_LABELS: dict[str, str] = {"rgb": "RGB", "relevancy": "Relevancy", "granularity": "Granularity map",
                               "selected": "Selected Gaussians"}
QUERY_MODES = ("relevancy", "selected")
"""Modes that need a query; without one they show the colours."""

COVERED_ALPHA = 1.0 / 255.0
"""Pixels with less accumulated opacity than this are background and not decoded (gsplat's ALPHA_THRESHOLD)."""
BACKGROUND = (0.08, 0.08, 0.1)
"""RGB shown where no Gaussian is (dark, so the colour-mapped overlays stand out)."""
SH_OFFSET = 0.5
"""Colour = SH + 0.5, clamped at 0 (gsplat / Inria 3DGS convention, as gags.splat.rasterize)."""
GRANULARITY_COLORS = np.array([[230, 75, 53], [0, 160, 135], [60, 84, 190]], np.float32) / 255.0
"""RGB of the sub-part (s), part (m) and whole (l) levels in the granularity map."""
GRANULARITY_BLEND = 0.7
"""Weight of the granularity colours over the image (the rest is the image)."""
SELECT_DIM = 0.25
"""Brightness of the Gaussians a query does not select (grey, this fraction of their luminance)."""
DECODE_SIZE = 128
"""Default longer side of the decoded language maps (decoding is ~0.5 s per 16k pixels on one busy CPU core)."""
QUERY_CACHE_SIZE = 32
"""Text embeddings and 3D selections kept, least recently used dropped first."""
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
"""ITU-R BT.601 luma weights, for the grey of unselected Gaussians."""


@dataclass(frozen=True)
class RenderPass:
    """One rasterization: camera, rgb [H, W, 3], features [H, W, F], depth [H, W], alpha [H, W] (float32).

    cache: what later frames of the same view reuse (the decoded language maps, the selection images).
    """

    camera: Camera
    rgb: Tensor
    features: Tensor
    depth: Tensor
    alpha: Tensor
    cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LanguageMaps:
    """A pass's language features at decoding size: features [h, w, F], covered bool [h, w], decoded [M, L, D]
    (the CLIP features of the M covered pixels; None when nothing is covered)."""

    features: Tensor
    covered: Tensor
    decoded: Tensor | None


@dataclass(frozen=True)
class Frame:
    """What a client is shown.

    image: uint8 [H, W, 3]; depth: float32 [H, W] expected depth (0 where nothing is hit), for compositing with the
    scene's other objects; mode and query: what was asked (query "" when none); relevancy: float32 [H, W] raw
    relevancy (relevancy mode, else None); info: a one-line summary; seconds: time spent rendering it.
    """

    image: np.ndarray
    depth: np.ndarray
    mode: str
    query: str
    camera: Camera
    relevancy: np.ndarray | None
    info: str
    seconds: float


def same_camera(a: Camera, b: Camera) -> bool:
    """True when two cameras give the same image (pose, intrinsics and size)."""
    return ((a.width, a.height) == (b.width, b.height) and torch.equal(a.K, b.K)
            and torch.equal(a.world_to_cam, b.world_to_cam))


def camera_from_pose(wxyz: np.ndarray, position: np.ndarray, fov_y: float, aspect: float, max_size: int,
                     name: str = "viewer") -> Camera:
    """A pinhole camera from a viewer pose (OpenCV axes, camera-to-world rotation ``wxyz`` and centre ``position``).

    fov_y: vertical field of view in radians; aspect: width / height; the longer side gets ``max_size`` pixels.
    """
    aspect = float(aspect) if math.isfinite(aspect) and aspect > 0 else 1.0
    if aspect >= 1:
        width, height = max_size, max(1, round(max_size / aspect))
    else:
        width, height = max(1, round(max_size * aspect)), max_size
    fy = 0.5 * height / math.tan(0.5 * float(fov_y))
    K = torch.tensor([[fy, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float32)
    R = torch.as_tensor(quat_to_matrix(np.asarray(wxyz, np.float64)), dtype=torch.float64)  # camera -> world
    t = torch.as_tensor(np.asarray(position, np.float64), dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -R.T @ t
    return Camera(name=name, K=K, world_to_cam=w2c, width=width, height=height)


def quat_to_matrix(wxyz: np.ndarray) -> np.ndarray:
    """[4] quaternion (w, x, y, z; need not be normalised) -> [3, 3] rotation matrix."""
    w, x, y, z = np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """[3, 3] rotation matrix -> [4] unit quaternion (w, x, y, z), w >= 0."""
    R = np.asarray(R, np.float64)
    # The largest of the four squared components gives a well-conditioned division (Shepperd's method).
    diag = np.array([1 + R[0, 0] + R[1, 1] + R[2, 2], 1 + R[0, 0] - R[1, 1] - R[2, 2],
                     1 - R[0, 0] + R[1, 1] - R[2, 2], 1 - R[0, 0] - R[1, 1] + R[2, 2]])
    k = int(np.argmax(diag))
    s = 2 * math.sqrt(max(diag[k], 1e-12))
    if k == 0:
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif k == 1:
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif k == 2:
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.array(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def gaussian_colors(scene: ViewerScene, camera: Camera) -> Tensor:
    """[N, 3] colour of every Gaussian seen from ``camera`` (SH evaluated along the viewing direction)."""
    campos = camera.center.to(scene.geometry.means)
    return torch.clamp_min(spherical_harmonics(scene.sh_degree, scene.geometry.means - campos, scene.sh) + SH_OFFSET,
                           0.0)


def rasterize_pass(scene: ViewerScene, camera: Camera, colors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rasterize per-Gaussian channels colors [N, C]: (render [H, W, C], depth [H, W], alpha [H, W])."""
    from gags.splat import rasterize

    g = scene.geometry
    render, alpha, _ = rasterize(g.means, g.quats, g.scales, g.opacities, colors.float(), camera.world_to_cam,
                                 camera.K, camera.width, camera.height, render_mode="RGB+ED")
    return render[..., :-1], render[..., -1], alpha[..., 0]


def composite(rgb: Tensor, alpha: Tensor) -> np.ndarray:
    """rgb [H, W, 3] (premultiplied by alpha, as rasterized) over ``BACKGROUND`` -> float32 [H, W, 3] in [0, 1]."""
    background = torch.tensor(BACKGROUND, dtype=rgb.dtype)
    return (rgb + (1 - alpha[..., None]) * background).clamp(0, 1).numpy().astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


class Renderer:
    """Renders frames of one scene for any number of clients, one at a time (see the module docstring)."""

    def __init__(self, scene: ViewerScene, threshold: float = SELECT_THRESHOLD, decode_size: int = DECODE_SIZE):
        self.scene = scene
        self.threshold = threshold
        self.decode_size = decode_size
        self.lock = threading.Lock()
        self._embeddings: OrderedDict[str, Tensor] = OrderedDict()
        self._selections: OrderedDict[str, Selection] = OrderedDict()

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes this scene supports (granularity only with a gags field)."""
        return tuple(m for m in MODES if m != "granularity" or self.scene.has_granularity)

    def _cached(self, cache: OrderedDict, text: str, make):
        """``cache[text]``, made by ``make(text)`` when missing (least recently used dropped); call with the lock."""
        if text in cache:
            cache.move_to_end(text)
            return cache[text]
        value = cache[text] = make(text)
        while len(cache) > QUERY_CACHE_SIZE:
            cache.popitem(last=False)
        return value

    def _embedding(self, text: str) -> Tensor:
        """[D] text embedding of ``text`` (cached); call with the lock held."""
        return self._cached(self._embeddings, text, self.scene.embed)

    def _selection(self, text: str) -> Selection:
        """The 3D selection of ``text`` (cached; every Gaussian decoded once); call with the lock held."""
        return self._cached(self._selections, text, lambda t: select_gaussians(
            self.scene.field, self._embedding(t), self.scene.canon, self.threshold))

    def selection(self, text: str) -> Selection:
        """The Gaussians ``text`` selects (relevancy above the threshold), as ``gags query --ply`` selects them."""
        with self.lock, torch.no_grad():
            return self._selection(text.strip())

    def render(self, camera: Camera, mode: str, query: str = "",
               previous: RenderPass | None = None) -> tuple[Frame, RenderPass]:
        """The frame of ``mode`` (and ``query``) seen from ``camera``, and the rasterization it used.

        previous: the same client's last pass; reused when ``camera`` is the same. A mode this scene does not support
        (granularity without a gags field) is a ValueError.
        """
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} is not one of {self.modes}")
        text = query.strip()
        with self.lock, torch.no_grad():
            start = time.perf_counter()
            if previous is not None and same_camera(previous.camera, camera):
                base = previous
            else:
                rgb_and_features = torch.cat([gaussian_colors(self.scene, camera), self.scene.field.features], dim=1)
                render, depth, alpha = rasterize_pass(self.scene, camera, rgb_and_features)
                base = RenderPass(camera=camera, rgb=render[..., :3], features=render[..., 3:], depth=depth,
                                  alpha=alpha)
            image, rel, info = self._colour(base, mode, text)
            frame = Frame(image=to_uint8(image), depth=base.depth.numpy().astype(np.float32), mode=mode,
                          query=text if mode in QUERY_MODES else "", camera=camera, relevancy=rel, info=info,
                          seconds=time.perf_counter() - start)
        return frame, base

    def _language(self, base: RenderPass) -> LanguageMaps:
        """The pass's features, area-averaged to at most ``decode_size`` pixels on the longer side, and decoded at the
        covered pixels (cached in the pass: a new query on a still view only takes dot products); call with the lock.
        """
        cached = base.cache.get("language")
        if cached is not None:
            return cached
        height, width = base.alpha.shape
        factor = min(1.0, self.decode_size / max(height, width))
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        if size == (height, width):
            features, alpha = base.features, base.alpha
        else:
            stacked = torch.cat([base.features, base.alpha[..., None]], dim=-1).permute(2, 0, 1)[None]
            small = F.interpolate(stacked, size=size, mode="area")[0].permute(1, 2, 0)
            features, alpha = small[..., :-1], small[..., -1]
        covered = alpha > COVERED_ALPHA
        decoded = self.scene.field.decode_features(features[covered]) if covered.any() else None  # [M, L, D]
        maps = LanguageMaps(features=features, covered=covered, decoded=decoded)
        base.cache["language"] = maps
        return maps

    def _colour(self, base: RenderPass, mode: str, text: str) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(image float32 [H, W, 3], relevancy [H, W] or None, info) of one mode; call with the lock held."""
        image = composite(base.rgb, base.alpha)
        if mode == "rgb" or (mode in QUERY_MODES and not text):
            return image, None, ("type a query" if mode in QUERY_MODES else f"{len(self.scene.geometry)} Gaussians")
        height, width = base.alpha.shape
        weight = base.alpha.clamp(0, 1).numpy()[..., None]  # overlays fade out with the coverage
        if mode == "selected":
            key = ("selected", text)
            if key not in base.cache:  # a second rasterization: cached for this view
                sel = self._selection(text)
                colors = gaussian_colors(self.scene, base.camera)
                grey = (colors @ torch.from_numpy(LUMA))[:, None].expand(-1, 3) * SELECT_DIM
                colors = torch.where(sel.selected[:, None], colors, grey)
                render, _, alpha = rasterize_pass(self.scene, base.camera, colors)
                info = f"{sel.count} of {len(sel.selected)} Gaussians with relevancy > {sel.threshold:g}"
                base.cache[key] = (composite(render, alpha), info)
            image, info = base.cache[key]
            return image, None, info
        lang = self._language(base)
        if lang.decoded is None:
            return image, (np.zeros((height, width), np.float32) if mode == "relevancy" else None), "nothing in view"
        covered = lang.covered.numpy()
        if mode == "granularity":
            g = self.scene.field.granularity(lang.features[lang.covered]).numpy()  # [M, 3]
            small = np.zeros(covered.shape + (3,), np.float32)
            small[covered] = g @ GRANULARITY_COLORS
            mix = upsample(small, width, height)
            share = g.argmax(axis=1)
            parts = ", ".join(f"{name} {100 * np.mean(share == k):.0f}%"
                              for k, name in enumerate(LEVEL_DISPLAY))
            w = GRANULARITY_BLEND * weight
            return (1 - w) * image + w * mix, None, f"granularity: {parts}"
        # relevancy: the level with the highest maximum (several levels only with langsplat fields)
        levels = relevancy(lang.decoded, self._embedding(text)[None], self.scene.canon)[0].T  # [L, M]
        level = int(torch.argmax(levels.amax(dim=1)))
        small = np.zeros(covered.shape, np.float32)
        small[covered] = levels[level].numpy()
        rel = upsample(small, width, height)
        seen = base.alpha.numpy() > COVERED_ALPHA
        values = rel[seen] if seen.any() else rel.reshape(-1)
        lo, hi = float(values.min()), float(values.max())  # min-max over the covered pixels, as gags query's figures
        heat = colormap((rel - lo) / (hi - lo) if hi > lo else np.zeros_like(rel)).astype(np.float32) / 255.0
        w = HEATMAP_BLEND * weight
        info = f"relevancy of {text!r}: max {values.max():.3f}" + (f" (level {level})" if levels.shape[0] > 1 else "")
        return (1 - w) * image + w * heat, rel, info


def upsample(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """[h, w] or [h, w, C] float32 -> [height, width(, C)], bilinear (identity when the size is already right)."""
    if values.shape[:2] == (height, width):
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
