"""PLY files: 3D Gaussians in the standard 3DGS layout, and coloured point clouds.

Gaussians use the keys of gsplat's ``simple_trainer`` (raw parameters, as optimised):

- ``means`` [N, 3]
- ``quats`` [N, 4] wxyz, not normalised
- ``scales`` [N, 3] log scales
- ``opacities`` [N] logits
- ``sh0`` [N, 1, 3] degree-0 spherical-harmonics coefficient per colour channel
- ``shN`` [N, K - 1, 3] higher coefficients, K = (d + 1)^2 for SH degree d in 0..3 (K - 1 may be 0)

On disk (binary little-endian float32, the order the official 3DGS ``save_ply`` writes):
``x y z nx ny nz f_dc_0..2 f_rest_0..3(K-1)-1 opacity scale_0..2 rot_0..3``. ``f_rest_*`` is channel-major: all
coefficients of red, then of green, then of blue, so ``f_rest[c * (K - 1) + k] = shN[:, k, c]``. Normals are written as
zeros (3DGS does the same) and ignored on reading, as are any extra properties other tools add.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyHeaderParseError, PlyParseError

from gags.errors import GagsError
from gags.io import atomic_path

# Number of SH coefficients per channel for degree 0..3: (d + 1)^2.
SH_COEFFS_PER_DEGREE = {0: 1, 1: 4, 2: 9, 3: 16}
GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "sh0", "shN")
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3")


def sh_degree_of(splats: dict[str, torch.Tensor]) -> int:
    """SH degree d of a splat dict, from ``shN`` [N, (d+1)^2 - 1, 3]."""
    rest = splats["shN"].shape[1]
    for degree, k in SH_COEFFS_PER_DEGREE.items():
        if k - 1 == rest:
            return degree
    raise GagsError(f"shN has {rest} coefficients per channel; expected 0, 3, 8 or 15 (SH degree 0..3).")


def _vertex_element(path: Path, what: str) -> PlyElement:
    path = Path(path)
    if not path.is_file():
        raise GagsError(f"{what} {path} does not exist. Check the path.")
    try:
        ply = PlyData.read(str(path))
    except (PlyHeaderParseError, PlyParseError, ValueError, EOFError, UnicodeDecodeError, IndexError) as exc:
        raise GagsError(f"{path} is not a valid PLY file ({exc}). Re-export it or choose another file.") from exc
    names = [el.name for el in ply.elements]
    if "vertex" not in names:
        raise GagsError(f"{path} has no 'vertex' element (elements: {names}). "
                        "Compressed or chunked PLYs (e.g. SuperSplat's) are not supported: export a standard 3DGS PLY.")
    return ply["vertex"]


def _column(vertex: PlyElement, name: str) -> np.ndarray:
    return np.asarray(vertex[name], dtype=np.float32)


def read_ply(path: Path) -> dict[str, torch.Tensor]:
    """Read a standard 3DGS PLY (official 3DGS, gsplat and compatible exports).

    Returns:
        ``means`` [N, 3], ``quats`` [N, 4], ``scales`` [N, 3], ``opacities`` [N], ``sh0`` [N, 1, 3],
        ``shN`` [N, K-1, 3], all float32 (see the module docstring).
    Raises:
        GagsError: missing or corrupt file, missing properties, f_rest_* count not of SH degree 0..3, non-finite values.
    """
    path = Path(path)
    vertex = _vertex_element(path, "Gaussian PLY")
    props = [p.name for p in vertex.properties]
    missing = [name for name in _REQUIRED if name not in props]
    if missing:
        hint = (" It looks like a point cloud (x y z red green blue); pass it as the scene's points instead."
                if {"x", "y", "z"} <= set(props) and "f_dc_0" not in props else "")
        raise GagsError(f"{path} is not a 3DGS Gaussian PLY: missing properties {missing}.{hint}")
    rest_names = [p for p in props if p.startswith("f_rest_")]
    n_rest = len(rest_names)
    valid_rest = {3 * (k - 1): d for d, k in SH_COEFFS_PER_DEGREE.items()}
    if n_rest not in valid_rest or set(rest_names) != {f"f_rest_{i}" for i in range(n_rest)}:
        raise GagsError(f"{path} has {n_rest} f_rest_* properties; a 3DGS PLY has 0, 9, 24 or 45 "
                        "(f_rest_0 .. f_rest_{3(K-1)-1}, SH degree 0..3).")
    k_rest = n_rest // 3
    try:
        means = np.stack([_column(vertex, c) for c in ("x", "y", "z")], axis=1)
        sh0 = np.stack([_column(vertex, f"f_dc_{c}") for c in range(3)], axis=1)[:, None, :]
        rest = (np.stack([_column(vertex, f"f_rest_{i}") for i in range(n_rest)], axis=1) if n_rest
                else np.zeros((len(means), 0), np.float32))
        opacities = _column(vertex, "opacity")
        scales = np.stack([_column(vertex, f"scale_{i}") for i in range(3)], axis=1)
        quats = np.stack([_column(vertex, f"rot_{i}") for i in range(4)], axis=1)
    except (ValueError, TypeError) as exc:
        raise GagsError(f"{path}: cannot read the Gaussian properties as numbers ({exc}).") from exc
    shN = rest.reshape(len(means), 3, k_rest).transpose(0, 2, 1)  # channel-major on disk -> [N, K-1, 3]
    out = {
        "means": means, "quats": quats, "scales": scales, "opacities": opacities,
        "sh0": sh0, "shN": np.ascontiguousarray(shN),
    }
    bad = np.zeros(len(means), dtype=bool)
    for value in out.values():
        per_gaussian = int(np.prod(value.shape[1:]))  # explicit: reshape(0, -1) is ambiguous for an empty PLY
        bad |= ~np.isfinite(value.reshape(len(means), per_gaussian)).all(axis=1)
    if bad.any():
        raise GagsError(f"{path} has {int(bad.sum())} of {len(means)} Gaussians with NaN or infinite values. "
                        "Remove them (or re-export the file) and try again.")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


def _as_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def write_ply(path: Path, splats: dict[str, torch.Tensor], pad_to_degree: int | None = None) -> None:
    """Write Gaussians (keys as :func:`read_ply` returns) as a standard 3DGS PLY, atomically.

    Args:
        path: output file.
        splats: ``means`` [N, 3], ``quats`` [N, 4], ``scales`` [N, 3], ``opacities`` [N], ``sh0`` [N, 1, 3],
            ``shN`` [N, K-1, 3] (tensors or arrays; other keys are ignored).
        pad_to_degree: write the SH bands up to this degree, the missing ones as zeros (the official 3DGS loader
            asserts 45 ``f_rest`` properties, degree 3); None writes the bands ``shN`` has.
    """
    missing = [k for k in GAUSSIAN_KEYS if k not in splats]
    if missing:
        raise GagsError(f"cannot write {path}: the Gaussians lack {missing}.")
    arrays = {k: _as_numpy(splats[k]) for k in GAUSSIAN_KEYS}
    n = arrays["means"].shape[0]
    expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "sh0": (n, 1, 3)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise GagsError(f"cannot write {path}: {key} has shape {arrays[key].shape}, expected {shape}.")
    shN = arrays["shN"]
    if shN.ndim != 3 or shN.shape[0] != n or shN.shape[2] != 3 or shN.shape[1] + 1 not in SH_COEFFS_PER_DEGREE.values():
        raise GagsError(f"cannot write {path}: shN has shape {shN.shape}, expected [N, K-1, 3] with K in 1, 4, 9, 16.")
    if pad_to_degree is not None and shN.shape[1] + 1 < SH_COEFFS_PER_DEGREE[pad_to_degree]:
        pad = np.zeros((n, SH_COEFFS_PER_DEGREE[pad_to_degree] - 1 - shN.shape[1], 3), shN.dtype)
        shN = np.concatenate([shN, pad], axis=1)
    k_rest = shN.shape[1]
    rest = shN.transpose(0, 2, 1).reshape(n, 3 * k_rest)  # channel-major, as the official writer
    columns: list[tuple[str, np.ndarray]] = [
        ("x", arrays["means"][:, 0]), ("y", arrays["means"][:, 1]), ("z", arrays["means"][:, 2]),
        ("nx", np.zeros(n, np.float32)), ("ny", np.zeros(n, np.float32)), ("nz", np.zeros(n, np.float32)),
    ]
    columns += [(f"f_dc_{c}", arrays["sh0"][:, 0, c]) for c in range(3)]
    columns += [(f"f_rest_{i}", rest[:, i]) for i in range(3 * k_rest)]
    columns += [("opacity", arrays["opacities"])]
    columns += [(f"scale_{i}", arrays["scales"][:, i]) for i in range(3)]
    columns += [(f"rot_{i}", arrays["quats"][:, i]) for i in range(4)]
    data = np.empty(n, dtype=[(name, "<f4") for name, _ in columns])
    for name, value in columns:
        data[name] = value
    with atomic_path(Path(path)) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], byte_order="<").write(str(tmp))


def write_point_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write a coloured point cloud (``x y z`` float32, ``red green blue`` uchar), atomically.

    Args:
        xyz: [P, 3] positions.
        rgb: [P, 3] uint8 colours.
    """
    xyz = np.asarray(xyz, dtype=np.float32)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise GagsError(f"cannot write {path}: xyz {xyz.shape} and rgb {rgb.shape} must both be [P, 3].")
    data = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                     ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, c in enumerate("xyz"):
        data[c] = xyz[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        data[c] = np.clip(rgb[:, i], 0, 255).astype(np.uint8)
    with atomic_path(Path(path)) as tmp:
        PlyData([PlyElement.describe(data, "vertex")], byte_order="<").write(str(tmp))


def read_point_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a point cloud PLY.

    Returns:
        xyz: [P, 3] float32.
        rgb: [P, 3] uint8, or None when the file has no ``red green blue`` properties (float colours all within
            [0, 1] are scaled by 255).
    """
    path = Path(path)
    vertex = _vertex_element(path, "point cloud")
    props = {p.name for p in vertex.properties}
    if not {"x", "y", "z"} <= props:
        raise GagsError(f"{path} has no x y z vertex properties; it is not a point cloud.")
    try:
        xyz = np.stack([_column(vertex, c) for c in ("x", "y", "z")], axis=1)
        rgb = None
        if {"red", "green", "blue"} <= props:
            cols = np.stack([np.asarray(vertex[c]) for c in ("red", "green", "blue")], axis=1)
            if np.issubdtype(cols.dtype, np.floating) and cols.size and np.nanmax(cols) <= 1.0:
                cols = np.round(np.clip(cols, 0.0, 1.0) * 255.0)
            rgb = np.clip(np.nan_to_num(cols), 0, 255).astype(np.uint8)
    except (ValueError, TypeError) as exc:
        raise GagsError(f"{path}: cannot read the point properties as numbers ({exc}).") from exc
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        raise GagsError(f"{path} has {int((~finite).sum())} points with NaN or infinite coordinates.")
    return xyz, rgb
