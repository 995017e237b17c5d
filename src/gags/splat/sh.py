"""Real spherical harmonics up to degree 3, in the convention of 3DGS and gsplat.

The basis order and signs are those of the 3D Gaussian Splatting reference renderer (and gsplat's
`spherical_harmonics`): for coefficient k, band l = floor(sqrt(k)), and within a band the order runs m = -l..l with the
sign convention of the 3DGS ``SH2RGB`` code. The constants are the normalisation factors of the real SH basis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MAX_SH_DEGREE = 3

# Normalisation constants of the real spherical harmonics Y_l^m (l <= 3), e.g. sqrt(1 / (4 pi)) for l = 0.
_SH_C0 = 0.5 / math.sqrt(math.pi)  # 0.28209479177387814
_SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.4886025119029199
_SH_C2 = (
    0.5 * math.sqrt(15.0 / math.pi),  # xy
    -0.5 * math.sqrt(15.0 / math.pi),  # yz
    0.25 * math.sqrt(5.0 / math.pi),  # 2zz - xx - yy
    -0.5 * math.sqrt(15.0 / math.pi),  # xz
    0.25 * math.sqrt(15.0 / math.pi),  # xx - yy
)
_SH_C3 = (
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),  # y (3xx - yy)
    0.5 * math.sqrt(105.0 / math.pi),  # xyz
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),  # y (4zz - xx - yy)
    0.25 * math.sqrt(7.0 / math.pi),  # z (2zz - 3xx - 3yy)
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),  # x (4zz - xx - yy)
    0.25 * math.sqrt(105.0 / math.pi),  # z (xx - yy)
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),  # x (xx - 3yy)
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients used by ``degree``: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the real SH basis at unit directions.

    dirs: [..., 3] unit vectors. Returns [..., (degree + 1)^2].
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _SH_C0)]
    if degree >= 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _SH_C2[0] * x * y,
            _SH_C2[1] * y * z,
            _SH_C2[2] * (2.0 * zz - xx - yy),
            _SH_C2[3] * x * z,
            _SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _SH_C3[0] * y * (3.0 * xx - yy),
            _SH_C3[1] * x * y * z,
            _SH_C3[2] * y * (4.0 * zz - xx - yy),
            _SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _SH_C3[4] * x * (4.0 * zz - xx - yy),
            _SH_C3[5] * z * (xx - yy),
            _SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour seen along ``dirs`` from SH coefficients (no offset, no clamping).

    degree: SH degree to evaluate (0..3), (degree + 1)^2 <= K.
    dirs: [N, 3] viewing directions (need not be normalised).
    coeffs: [N, K, D] coefficients. Returns [N, D].
    """
    n_bases = num_sh_bases(degree)
    if coeffs.shape[-2] < n_bases:
        raise ValueError(f"SH degree {degree} needs {n_bases} coefficients, got {coeffs.shape[-2]}")
    unit = torch.nn.functional.normalize(dirs, p=2, dim=-1)
    bases = sh_bases(degree, unit)  # [N, n_bases]
    return torch.einsum("nk,nkd->nd", bases, coeffs[:, :n_bases, :])
