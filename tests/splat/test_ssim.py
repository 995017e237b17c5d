import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from gags.splat.ssim import psnr, ssim


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return structural_similarity(a.double().numpy(), b.double().numpy(), channel_axis=-1, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage_on_random_images(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(37, 53, 3, generator=g, dtype=torch.float64)
    # b: a correlated, noisy version of a, so that SSIM is neither 0 nor 1
    b = 0.6 * a + 0.4 * torch.rand(37, 53, 3, generator=g, dtype=torch.float64)
    ours = ssim(a, b).item()
    ref = _skimage_ssim(a, b)
    assert 0.05 < ref < 0.95
    assert ours == pytest.approx(ref, abs=1e-10)


def test_ssim_float32_and_smooth_images():
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 60), indexing="ij")
    a = torch.stack([x, y, x * y], dim=-1)
    b = (a + 0.05 * torch.sin(20 * x)[..., None]).clamp(0, 1)
    assert ssim(a, b).item() == pytest.approx(_skimage_ssim(a, b), abs=1e-5)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_same_padding_is_differentiable_and_full_size():
    a = torch.rand(1, 3, 20, 24, requires_grad=True)
    b = torch.rand(1, 3, 20, 24)
    loss = 1 - ssim(a, b, padding="same")
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_psnr():
    a = torch.zeros(4, 4, 3)
    b = torch.full((4, 4, 3), 0.1)
    assert psnr(a, b).item() == pytest.approx(20.0)
    assert np.isfinite(psnr(a, a).item())
