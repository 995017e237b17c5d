"""Structural similarity (SSIM) with a Gaussian window, differentiable, for the 3DGS loss and held-out metrics.

SSIM as Wang et al. 2004 ("Image quality assessment: from error visibility to structural similarity"): an 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) covariances. The window is separable and
applied as two 1-D convolutions.

Two border rules:
- ``padding="valid"``: only pixels whose whole window lies inside the image are averaged. This equals
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, which
  crops the window radius from the border before averaging. Used for metrics.
- ``padding="same"``: zero padding, every pixel averaged, as the 3DGS reference code's loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

# Wang et al. 2004, also the 3DGS loss: window 11 taps, sigma 1.5, stabilising constants K1, K2.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """[size] normalised 1-D Gaussian taps centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _blur(x: torch.Tensor, window: torch.Tensor, pad: int) -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``x`` [B, C, H, W] (zero padding ``pad`` on each side)."""
    c = x.shape[1]
    size = window.numel()
    kx = window.view(1, 1, 1, size).expand(c, 1, 1, size)
    ky = window.view(1, 1, size, 1).expand(c, 1, size, 1)
    x = F.conv2d(x, kx, padding=(0, pad), groups=c)
    return F.conv2d(x, ky, padding=(pad, 0), groups=c)


def ssim_map(img1: torch.Tensor, img2: torch.Tensor, *, padding: Literal["valid", "same"] = "valid",
             data_range: float = 1.0, window_size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-pixel SSIM.

    Args:
        img1, img2: [B, C, H, W] images with values in [0, data_range].
        padding: "valid" (window fully inside: output [B, C, H - w + 1, W - w + 1]) or "same" (zero padding:
            [B, C, H, W]).
    Returns:
        [B, C, H', W'] SSIM per pixel and channel.
    """
    if img1.shape != img2.shape or img1.dim() != 4:
        raise ValueError(f"ssim expects two [B, C, H, W] images of one shape, got {tuple(img1.shape)} and "
                         f"{tuple(img2.shape)}")
    if padding == "valid" and min(img1.shape[-2:]) < window_size:
        raise ValueError(f"image {tuple(img1.shape[-2:])} is smaller than the SSIM window ({window_size})")
    window = gaussian_window_1d(window_size, sigma, img1.dtype, img1.device)
    pad = window_size // 2 if padding == "same" else 0
    c = img1.shape[1]
    # One blur over the five statistics at once: x, y, x^2, y^2, xy.
    stats = _blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], dim=1), window, pad)
    mu1, mu2, e11, e22, e12 = stats.split(c, dim=1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    var1, var2, cov12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * mu12 + c1) * (2 * cov12 + c2)) / ((mu1_sq + mu2_sq + c1) * (var1 + var2 + c2))


def ssim(img1: torch.Tensor, img2: torch.Tensor, *, padding: Literal["valid", "same"] = "valid",
         data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM (a scalar tensor) of two images.

    Args:
        img1, img2: [H, W, C] (channels last, as rendered) or [B, C, H, W] images in [0, data_range].
    """
    if img1.dim() == 3:
        img1 = img1.permute(2, 0, 1).unsqueeze(0)
        img2 = img2.permute(2, 0, 1).unsqueeze(0)
    return ssim_map(img1, img2, padding=padding, data_range=data_range).mean()


def psnr(img1: torch.Tensor, img2: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (scalar tensor) of two images of one shape with values in [0, data_range]."""
    mse = (img1.double() - img2.double()).pow(2).mean().clamp_min(1e-20)
    return 10.0 * torch.log10(data_range**2 / mse)
