import pytest
import torch
import torch.nn.functional as F

from gags.distill.autoencoder import (
    autoencoder_loss,
    default_autoencoder_epochs,
    encode_features,
    reconstruction_cosine,
    train_autoencoder,
)
from gags.errors import GagsError


def clustered(m: int, k: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, 512, generator=g), dim=-1)
    labels = torch.arange(m) % k
    x = F.normalize(centres[labels] + noise * torch.randn(m, 512, generator=g), dim=-1)
    return x, centres, labels


def test_loss_hand_value():
    recon = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # mse: (0 + 0 + 1 + 1) / 4 = 0.5; cosines 1 and 0 -> 1 - 0.5 = 0.5
    assert autoencoder_loss(recon, target, 0.001).item() == pytest.approx(0.5 + 0.001 * 0.5)


def test_default_epochs():
    assert default_autoencoder_epochs(1_000, 64, None) == 100
    assert default_autoencoder_epochs(1_000, 64, 20_000) == 100  # 16 steps per epoch
    assert default_autoencoder_epochs(64_000, 64, 20_000) == 20  # 1000 steps per epoch
    assert default_autoencoder_epochs(10_000_000, 64, 20_000) == 1


def test_reconstructs_clustered_features(one_torch_thread):
    # 6 clusters of CLIP-like unit features; within-cluster cosine to the centre is 0.975 (the noise floor).
    # Measured with seeds 0-5: reconstruction cosine min 0.971, mean 0.976; the centres come back at > 0.999.
    x, centres, labels = clustered(256, 6, 0.01, seed=100)
    model = train_autoencoder(x, epochs=100, batch_size=64, lr=1e-3, cos_weight=0.001, seed=0)
    cos = reconstruction_cosine(model, x)
    assert cos.min() > 0.95
    back = model(centres)
    sims = back @ centres.T
    assert sims.diagonal().min() > 0.98
    assert (sims.argmax(1) == torch.arange(6)).all()  # each centre decodes to itself, not to another cluster
    codes = encode_features(model, x)
    assert codes.shape == (256, 3) and torch.allclose(codes.norm(dim=-1), torch.ones(256), atol=1e-5)


def test_same_seed_same_model_and_global_rng_untouched(one_torch_thread):
    x, _, _ = clustered(130, 3, 0.05, seed=1)  # 130 = 2 * 64 + 2: a last batch of 2
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    losses: list[float] = []
    a = train_autoencoder(
        x, epochs=2, batch_size=64, lr=1e-4, cos_weight=0.001, seed=7, on_epoch=lambda e, v: losses.append(v)
    )
    assert torch.equal(torch.get_rng_state(), state)
    b = train_autoencoder(x, epochs=2, batch_size=64, lr=1e-4, cos_weight=0.001, seed=7)
    c = train_autoencoder(x, epochs=2, batch_size=64, lr=1e-4, cos_weight=0.001, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert len(losses) == 2 and all(v > 0 for v in losses)
    assert not a.training


def test_single_leftover_feature_is_skipped(one_torch_thread):
    x, _, _ = clustered(65, 2, 0.05, seed=2)  # the last batch would hold one feature: BatchNorm cannot train on it
    model = train_autoencoder(x, epochs=1, batch_size=64, lr=1e-4, cos_weight=0.001, seed=0)
    assert torch.isfinite(reconstruction_cosine(model, x)).all()


def test_bad_input_is_a_gags_error():
    with pytest.raises(GagsError):
        train_autoencoder(torch.zeros(1, 512), epochs=1, batch_size=64, lr=1e-4, cos_weight=0.001, seed=0)
    bad = torch.randn(10, 512)
    bad[3, 5] = float("nan")
    with pytest.raises(GagsError, match="NaN"):
        train_autoencoder(bad, epochs=1, batch_size=64, lr=1e-4, cos_weight=0.001, seed=0)
