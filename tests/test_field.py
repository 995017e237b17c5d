import json
import struct

import pytest
import torch
import torch.nn.functional as F

from gags.errors import GagsError
from gags.field import FeatureDecoder, GranularityDecoder, LangSplatAutoencoder, LanguageField


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_feature_decoder(dec: FeatureDecoder, x: torch.Tensor) -> torch.Tensor:
    """The release's CNN_decoder.forward written out on [N, C] vectors with plain matrix products."""
    W = [(layer.weight[:, :, 0, 0], layer.bias) for layer in dec.layers]

    def lin(i, t):
        return t @ W[i][0].T + W[i][1]

    x1 = torch.relu(lin(0, x))
    x2 = torch.relu(lin(1, x1))
    x2 = torch.relu(lin(2, x2))
    x3 = x1 + x2
    x3 = torch.relu(lin(3, x3))
    x4 = torch.relu(lin(4, x3))
    x4 = torch.relu(lin(5, x4))
    x5 = x3 + x4
    x5 = torch.relu(lin(6, x5))
    x5 = torch.relu(lin(7, x5))
    x5 = lin(8, x5)
    return x5 / x5.norm(dim=-1, keepdim=True)


def test_feature_decoder_parameters_shapes_and_norm():
    torch.manual_seed(0)
    dec = FeatureDecoder()
    # 16->256, seven 256->256, 256->512, each with a bias
    assert n_params(dec) == (16 * 256 + 256) + 7 * (256 * 256 + 256) + (256 * 512 + 512) == 596480
    maps = torch.randn(2, 16, 5, 7)
    out = dec(maps)
    assert out.shape == (2, 512, 5, 7)
    assert torch.allclose(out.norm(dim=1), torch.ones(2, 5, 7), atol=1e-5)
    vec = torch.randn(11, 16)
    out_v = dec(vec)
    assert out_v.shape == (11, 512)
    assert torch.allclose(out_v.norm(dim=1), torch.ones(11), atol=1e-5)
    # a map and its pixels as vectors decode the same
    flat = maps.permute(0, 2, 3, 1).reshape(-1, 16)
    assert torch.allclose(dec(flat), out.permute(0, 2, 3, 1).reshape(-1, 512), atol=1e-5)
    with pytest.raises(ValueError):
        dec(torch.randn(3, 15))


def test_feature_decoder_residual_structure_matches_release():
    torch.manual_seed(1)
    dec = FeatureDecoder()
    x = torch.randn(64, 16)
    assert torch.allclose(dec(x), reference_feature_decoder(dec, x), atol=1e-6)
    # the residual adds matter: without them (a plain chain) the output differs
    h = x
    for i, layer in enumerate(dec.layers):
        h = h @ layer.weight[:, :, 0, 0].T + layer.bias
        if i < 8:
            h = torch.relu(h)
    assert not torch.allclose(dec(x), F.normalize(h, dim=-1), atol=1e-3)


def test_granularity_decoder():
    torch.manual_seed(0)
    dec = GranularityDecoder()
    dims = [16, 64, 128, 64, 32, 16, 3]
    assert n_params(dec) == sum(a * b + b for a, b in zip(dims[:-1], dims[1:])) == 20323
    g = dec(torch.randn(1, 16, 4, 6))
    assert g.shape == (1, 3, 4, 6)
    assert (g >= 0).all()
    assert torch.allclose(g.sum(1), torch.ones(1, 4, 6), atol=1e-6)
    # literal forward: conv, relu, ..., conv, softmax
    x = torch.randn(9, 16)
    h = x
    for i, layer in enumerate(dec.layers):
        h = h @ layer.weight[:, :, 0, 0].T + layer.bias
        if i < 5:
            h = torch.relu(h)
    assert torch.allclose(dec(x), torch.softmax(h, dim=-1), atol=1e-6)


def test_autoencoder_layers_as_langsplat():
    ae = LangSplatAutoencoder()
    kinds = [type(m).__name__ for m in ae.encoder]
    assert kinds == ["Linear"] + ["BatchNorm1d", "ReLU", "Linear"] * 4
    assert [m.out_features for m in ae.encoder if isinstance(m, torch.nn.Linear)] == [256, 128, 64, 32, 3]
    kinds = [type(m).__name__ for m in ae.decoder]
    assert kinds == ["Linear"] + ["ReLU", "Linear"] * 6
    assert [m.out_features for m in ae.decoder if isinstance(m, torch.nn.Linear)] == [16, 32, 64, 128, 256, 256, 512]
    ae.eval()
    z = ae.encode(torch.randn(5, 512))
    assert z.shape == (5, 3) and torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
    y = ae.decode(torch.randn(2, 3, 3))
    assert y.shape == (2, 3, 512) and torch.allclose(y.norm(dim=-1), torch.ones(2, 3), atol=1e-5)


def make_gags_field(n: int = 50) -> LanguageField:
    torch.manual_seed(3)
    return LanguageField(
        method="gags",
        features=torch.randn(n, 16),
        feature_decoder=FeatureDecoder(),
        granularity_decoder=GranularityDecoder(),
        config={"method": "gags", "iterations": 3000, "out": "/tmp/x", "weights": [0.001, 0.002]},
    )


def test_field_decode_and_granularity():
    fld = make_gags_field()
    assert fld.levels == 1
    out = fld.decode_features(fld.features)
    assert out.shape == (50, 1, 512)
    assert torch.allclose(out[:, 0], fld.feature_decoder(fld.features), atol=1e-6)
    rendered = torch.randn(4, 5, 16)  # channel-last rendered map
    assert fld.decode_features(rendered).shape == (4, 5, 1, 512)
    g = fld.granularity(rendered)
    assert g.shape == (4, 5, 3) and torch.allclose(g.sum(-1), torch.ones(4, 5), atol=1e-6)


def test_langsplat_field_decodes_each_level():
    torch.manual_seed(4)
    ae = LangSplatAutoencoder()
    codes = F.normalize(torch.randn(7, 3, 3), dim=-1)
    fld = LanguageField(method="langsplat", features=codes.reshape(7, 9), autoencoder=ae)
    assert fld.levels == 3
    out = fld.decode_features(fld.features)
    assert out.shape == (7, 3, 512)
    for k in range(3):
        assert torch.allclose(out[:, k], ae.decode(codes[:, k]), atol=1e-6)
    with pytest.raises(GagsError):
        fld.granularity(fld.features)


def test_field_rejects_inconsistent_parts():
    with pytest.raises(ValueError):
        LanguageField(method="gags", features=torch.zeros(3, 8), feature_decoder=FeatureDecoder())
    with pytest.raises(ValueError):
        LanguageField(method="x", features=torch.zeros(3, 16))


def test_field_save_load_roundtrip_exact(tmp_path):
    fld = make_gags_field()
    path = tmp_path / "field" / "gags" / "field.safetensors"
    fld.save(path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["field.safetensors"]
    back = LanguageField.load(path)
    assert back.method == "gags"
    assert back.config == fld.config
    assert torch.equal(back.features, fld.features)
    for name in ("feature_decoder", "granularity_decoder"):
        a, b = getattr(fld, name).state_dict(), getattr(back, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.autoencoder is None
    x = torch.randn(20, 16)
    assert torch.equal(back.decode_features(x), fld.decode_features(x))


def test_langsplat_field_roundtrip_keeps_batchnorm_statistics(tmp_path):
    torch.manual_seed(5)
    ae = LangSplatAutoencoder()
    ae.train()
    ae(torch.randn(32, 512))  # moves the running statistics away from their initial values
    fld = LanguageField(method="langsplat", features=torch.randn(6, 9), autoencoder=ae, config={"a": 1})
    fld.save(tmp_path / "f.safetensors")
    back = LanguageField.load(tmp_path / "f.safetensors")
    a, b = ae.state_dict(), back.autoencoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "encoder.1.running_mean" in b and not torch.equal(b["encoder.1.running_mean"], torch.zeros(256))
    assert torch.equal(back.decode_features(fld.features), fld.decode_features(fld.features))


def test_field_load_errors(tmp_path):
    fld = make_gags_field(10)
    good = tmp_path / "good.safetensors"
    fld.save(good)
    data = good.read_bytes()

    with pytest.raises(GagsError, match="does not exist"):
        LanguageField.load(tmp_path / "missing.safetensors")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(GagsError, match="truncated.safetensors"):
        LanguageField.load(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3 + b"not a safetensors file at all")
    with pytest.raises(GagsError, match="garbage.safetensors"):
        LanguageField.load(garbage)

    # a valid safetensors file that is not a field
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(GagsError, match="not a gags language field"):
        LanguageField.load(other)

    # a field whose decoder weights do not match its declared architecture
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    specs = json.loads(header["__metadata__"]["decoders"])
    specs["feature_decoder"]["hidden_dim"] = 128
    header["__metadata__"]["decoders"] = json.dumps(specs)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + header_len :])
    with pytest.raises(GagsError, match="inconsistent"):
        LanguageField.load(bad)


def test_save_failure_keeps_previous_file(tmp_path, monkeypatch):
    import safetensors.torch

    fld = make_gags_field(10)
    path = tmp_path / "field.safetensors"
    fld.save(path)
    before = path.read_bytes()

    def fail_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_midway)
    with pytest.raises(GagsError, match="disk full.*Nothing already written was lost"):
        make_gags_field(12).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.safetensors"]
