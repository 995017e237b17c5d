"""3D Gaussians as trainable parameters, and their initialisation.

The parameters live in a ``torch.nn.ParameterDict`` with gsplat's ``simple_trainer`` keys, stored *before* activation
(as the standard 3DGS PLY stores them):

- ``means``     [N, 3]        centres in world coordinates
- ``quats``     [N, 4]        rotations, wxyz, not necessarily normalised
- ``scales``    [N, 3]        log of the standard deviations along the three axes
- ``opacities`` [N]           logit of the opacity
- ``sh0``       [N, 1, 3]     spherical-harmonics DC coefficient per colour channel
- ``shN``       [N, K - 1, 3] higher SH coefficients, K = (sh_degree + 1)^2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gags.cameras import Camera
from gags.errors import GagsError

# Zeroth real spherical-harmonics basis function, 1 / (2 sqrt(pi)); a colour c has DC coefficient (c - 0.5) / SH_C0
# (3DGS's RGB2SH; the rasterizer adds 0.5 back).
SH_C0 = 0.28209479177387814
# 3DGS / gsplat simple_trainer initialisation: opacity 0.1, scale = RMS distance to the 3 nearest neighbours.
INIT_OPACITY = 0.1
INIT_KNN = 3
# Elements of one chunk of the pairwise distance matrix in the kNN search (64 Mi floats = 256 MiB).
KNN_CHUNK_ELEMENTS = 1 << 26
# Smallest initial scale, so that coincident points do not get log(0) (3DGS clamps squared distances at 1e-7).
MIN_INIT_DISTANCE = math.sqrt(1e-7)

SPLAT_KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per channel up to ``degree``: (degree + 1)^2."""
    return (degree + 1) ** 2


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """SH DC coefficients of colours in [0, 1] (any shape)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: torch.Tensor) -> torch.Tensor:
    """Colours of SH DC coefficients (inverse of ``rgb_to_sh``)."""
    return sh * SH_C0 + 0.5


def knn_rms_distance(points: torch.Tensor, k: int = INIT_KNN, chunk_elements: int = KNN_CHUNK_ELEMENTS) -> torch.Tensor:
    """Root mean square of the distances of every point to its ``k`` nearest other points (3DGS's ``distCUDA2``).

    Exact brute force in row chunks of the pairwise distance matrix, so memory stays bounded.

    Args:
        points: [P, 3].
    Returns:
        [P] distances; for a single point, ``MIN_INIT_DISTANCE``.
    """
    points = points.float()
    n = points.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.full((n,), MIN_INIT_DISTANCE)
    rows = max(1, chunk_elements // n)
    out = torch.empty(n)
    for start in range(0, n, rows):
        block = points[start:start + rows]
        d2 = torch.cdist(block, points).square_()
        idx = torch.arange(block.shape[0])
        d2[idx, idx + start] = float("inf")  # a point is not its own neighbour (duplicates still are)
        nearest = d2.topk(k, dim=1, largest=False).values
        out[start:start + rows] = nearest.mean(dim=1).sqrt()
    return out.clamp_min(MIN_INIT_DISTANCE)


def random_unit_quats(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, 4] rotations uniformly distributed on SO(3) (normalised Gaussian 4-vectors)."""
    q = torch.randn(n, 4, generator=generator)
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)


def init_splats(points: torch.Tensor, colors: torch.Tensor, sh_degree: int, *, init_opacity: float = INIT_OPACITY,
                generator: torch.Generator | None = None) -> torch.nn.ParameterDict:
    """Gaussians at ``points``, as 3DGS initialises them from SfM points.

    Args:
        points: [P, 3] centres.
        colors: [P, 3] colours in [0, 1] (-> SH DC), higher SH coefficients zero.
        sh_degree: maximum SH degree the splats will be trained to.
    Returns:
        ParameterDict with the keys of ``SPLAT_KEYS`` (isotropic scales = RMS distance to 3 nearest neighbours,
        opacity ``init_opacity``, random rotations).
    """
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise GagsError(f"cannot initialise Gaussians from {tuple(points.shape)} points; need a non-empty [P, 3] set.")
    points = points.float()
    n = points.shape[0]
    scales = knn_rms_distance(points).log().unsqueeze(1).repeat(1, 3)
    opacities = torch.full((n,), math.log(init_opacity / (1 - init_opacity)))
    sh0 = rgb_to_sh(colors.float().clamp(0, 1)).unsqueeze(1)
    shN = torch.zeros(n, num_sh_bases(sh_degree) - 1, 3)
    return make_splats(means=points.clone(), quats=random_unit_quats(n, generator), scales=scales,
                       opacities=opacities, sh0=sh0, shN=shN)


def make_splats(**tensors: torch.Tensor) -> torch.nn.ParameterDict:
    """A ParameterDict of trainable parameters from raw (pre-activation) tensors with the keys of ``SPLAT_KEYS``."""
    missing = [key for key in SPLAT_KEYS if key not in tensors]
    if missing:
        raise GagsError(f"Gaussian parameters lack {missing}.")
    n = tensors["means"].shape[0]
    for key in SPLAT_KEYS:
        if tensors[key].shape[0] != n:
            raise GagsError(f"Gaussian parameter {key!r} has {tensors[key].shape[0]} rows, expected {n}.")
    return torch.nn.ParameterDict({key: torch.nn.Parameter(tensors[key].float().contiguous()) for key in SPLAT_KEYS})


def splats_from_ply(data: dict[str, torch.Tensor], sh_degree: int) -> torch.nn.ParameterDict:
    """Trainable splats from a PLY read by ``gags.data.ply.read_ply``; higher SH bands padded with zeros or dropped
    to match ``sh_degree``."""
    tensors = {key: data[key] for key in SPLAT_KEYS if key in data}
    n = tensors["means"].shape[0] if "means" in tensors else 0
    if n == 0:
        raise GagsError("the initial PLY holds no Gaussians.")
    want = num_sh_bases(sh_degree) - 1
    shN = tensors.get("shN", torch.zeros(n, 0, 3)).reshape(n, -1, 3)
    if shN.shape[1] < want:
        shN = torch.cat([shN, torch.zeros(n, want - shN.shape[1], 3)], dim=1)
    tensors["shN"] = shN[:, :want]
    tensors["opacities"] = tensors["opacities"].reshape(n)
    tensors["sh0"] = tensors["sh0"].reshape(n, 1, 3)
    return make_splats(**tensors)


def activated(splats: torch.nn.ParameterDict) -> dict[str, torch.Tensor]:
    """The arguments ``gags.splat.rasterize`` takes: means [N, 3], quats [N, 4] (raw), scales [N, 3] (exp),
    opacities [N] (sigmoid), colors [N, K, 3] (SH coefficients)."""
    return {
        "means": splats["means"],
        "quats": splats["quats"],
        "scales": torch.exp(splats["scales"]),
        "opacities": torch.sigmoid(splats["opacities"]),
        "colors": torch.cat([splats["sh0"], splats["shN"]], dim=1),
    }


@dataclass
class FrozenGaussians:
    """Gaussians that are no longer trained (``gags distill``, ``query``, ``eval`` and the viewer render features with
    them), activated as the rasterizer takes them: means [N, 3], quats [N, 4] (wxyz, raw), scales [N, 3] (standard
    deviations), opacities [N] in (0, 1)."""

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @classmethod
    def from_splats(cls, splats: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> FrozenGaussians:
        """Activate raw 3DGS parameters (log scales, logit opacities), as ``gags.data.read_ply`` returns them."""
        return cls(splats["means"].to(device), splats["quats"].to(device), splats["scales"].exp().to(device),
                   torch.sigmoid(splats["opacities"]).to(device))

    @classmethod
    def from_ply(cls, path: Path, device: torch.device | str = "cpu") -> FrozenGaussians:
        """Read a 3DGS PLY and activate it."""
        from gags.data import read_ply

        return cls.from_splats(read_ply(path), device)


def _stack_cameras(cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w2c [C, 4, 4], K [C, 3, 3], sizes [C, 2] (width, height) of ``cameras``."""
    w2c = torch.stack([c.world_to_cam for c in cameras]).float()
    K = torch.stack([c.K for c in cameras]).float()
    sizes = torch.tensor([[c.width, c.height] for c in cameras], dtype=torch.float32)
    return w2c, K, sizes


def in_any_frustum(points: torch.Tensor, cameras: Sequence[Camera], near: float, far: float) -> torch.Tensor:
    """[M] bool: the point [M, 3] projects inside the image of at least one camera at a depth in (near, far)."""
    w2c, K, sizes = _stack_cameras(cameras)
    cam = torch.einsum("cij,mj->cmi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]  # [C, M, 3]
    z = cam[..., 2]
    safe_z = torch.where(z > 0, z, torch.ones_like(z))
    u = K[:, None, 0, 0] * cam[..., 0] / safe_z + K[:, None, 0, 1] * cam[..., 1] / safe_z + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * cam[..., 1] / safe_z + K[:, None, 1, 2]
    inside = (z > near) & (z < far) & (u >= 0) & (v >= 0) & (u < sizes[:, None, 0]) & (v < sizes[:, None, 1])
    return inside.any(dim=0)


def frustum_bounds(cameras: Sequence[Camera], near: float, far: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned bounding box (lo [3], hi [3]) of the camera frustums cut at depths ``near`` and ``far``."""
    w2c, K, sizes = _stack_cameras(cameras)
    w, h = sizes[:, 0], sizes[:, 1]
    zeros = torch.zeros_like(w)
    corners_px = torch.stack([torch.stack([zeros, zeros], -1), torch.stack([w, zeros], -1),
                              torch.stack([zeros, h], -1), torch.stack([w, h], -1)], dim=1)  # [C, 4, 2]
    ones = torch.ones(corners_px.shape[:2] + (1,))
    rays = torch.linalg.solve(K[:, None], torch.cat([corners_px, ones], -1).unsqueeze(-1)).squeeze(-1)  # [C, 4, 3]
    pts_cam = torch.cat([rays * near, rays * far], dim=1)  # [C, 8, 3], z = near or far
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    pts_world = torch.einsum("cji,ckj->cki", R, pts_cam - t[:, None])  # R^T (p - t)
    flat = pts_world.reshape(-1, 3)
    return flat.min(dim=0).values, flat.max(dim=0).values


def random_points_in_frustums(cameras: Sequence[Camera], n: int, near: float, far: float,
                              generator: torch.Generator | None = None, max_rounds: int = 64) -> torch.Tensor:
    """[n, 3] points uniform in the union of the camera frustums between depths ``near`` and ``far``.

    Rejection sampling in the frustums' bounding box; if the frustums fill too little of it, the rest of the points are
    taken uniformly in the box.
    """
    if not cameras:
        raise GagsError("no cameras to place random initial Gaussians in.")
    lo, hi = frustum_bounds(cameras, near, far)
    kept: list[torch.Tensor] = []
    count = 0
    for _ in range(max_rounds):
        cand = lo + torch.rand(max(4 * n, 1024), 3, generator=generator) * (hi - lo)
        cand = cand[in_any_frustum(cand, cameras, near, far)]
        kept.append(cand)
        count += cand.shape[0]
        if count >= n:
            break
    if count < n:
        kept.append(lo + torch.rand(n - count, 3, generator=generator) * (hi - lo))
    return torch.cat(kept)[:n]
