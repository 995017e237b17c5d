import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from gags.data import read_ply, read_point_ply, write_ply, write_point_ply
from gags.errors import GagsError


def _splats(n: int, degree: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.randn(n, 3, generator=g) - 3,
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, k - 1, 3, generator=g),
    }


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_roundtrip_exact(tmp_path, degree):
    splats = _splats(57, degree, seed=degree)
    write_ply(tmp_path / "g.ply", splats)
    back = read_ply(tmp_path / "g.ply")
    assert set(back) == set(splats)
    for key, value in splats.items():
        assert back[key].shape == value.shape, key
        assert back[key].dtype == torch.float32
        assert torch.equal(back[key], value), key


def test_reads_reference_3dgs_layout(tmp_path):
    """A PLY built by hand in the official 3DGS attribute order (normals, channel-major f_rest, double precision)."""
    n, degree = 11, 3
    k = (degree + 1) ** 2
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(n, 3))
    f_dc = rng.normal(size=(n, 3))
    # the official writer stores features_rest [N, 3, K-1] (channel first) flattened
    rest_channel_first = rng.normal(size=(n, 3, k - 1))
    opacity = rng.normal(size=(n, 1))
    scale = rng.normal(size=(n, 3))
    rot = rng.normal(size=(n, 4))
    names = ["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))] + ["opacity"]
    names += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    values = np.concatenate([xyz, np.zeros((n, 3)), f_dc, rest_channel_first.reshape(n, -1), opacity, scale, rot], 1)
    data = np.empty(n, dtype=[(name, "f4") for name in names])
    data[:] = list(map(tuple, values))
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "ref.ply"))

    g = read_ply(tmp_path / "ref.ply")
    f32 = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    assert torch.equal(g["means"], f32(xyz))
    assert torch.equal(g["sh0"][:, 0], f32(f_dc))
    # shN[n, j, c] is coefficient j of channel c
    assert torch.equal(g["shN"], f32(rest_channel_first.transpose(0, 2, 1)))
    assert torch.equal(g["opacities"], f32(opacity[:, 0]))
    assert torch.equal(g["scales"], f32(scale))
    assert torch.equal(g["quats"], f32(rot))
    # and the writer reproduces the same columns in the same order
    write_ply(tmp_path / "ours.ply", g)
    ours = PlyData.read(str(tmp_path / "ours.ply"))["vertex"]
    assert [p.name for p in ours.properties] == names
    for name in names:
        np.testing.assert_array_equal(np.asarray(ours[name]), data[name])


def test_reads_gsplat_export(tmp_path):
    from gsplat.exporter import export_splats

    splats = _splats(20, 2, seed=7)
    export_splats(splats["means"], splats["scales"], splats["quats"], splats["opacities"], splats["sh0"],
                  splats["shN"], format="ply", save_to=str(tmp_path / "gsplat.ply"))
    back = read_ply(tmp_path / "gsplat.ply")
    for key, value in splats.items():
        assert torch.equal(back[key], value), key


def test_point_cloud_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(100, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(100, 3)).astype(np.uint8)
    write_point_ply(tmp_path / "p.ply", xyz, rgb)
    xyz2, rgb2 = read_point_ply(tmp_path / "p.ply")
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)


def test_corrupt_and_wrong_layout_raise(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"this is not a ply file at all")
    with pytest.raises(GagsError, match="bad.ply"):
        read_ply(bad)
    truncated = tmp_path / "trunc.ply"
    write_ply(truncated, _splats(50, 1))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(GagsError, match="trunc.ply"):
        read_ply(truncated)
    points = tmp_path / "points.ply"
    write_point_ply(points, np.zeros((4, 3)), np.zeros((4, 3), np.uint8))
    with pytest.raises(GagsError, match="points.ply.*point cloud"):
        read_ply(points)
    with pytest.raises(GagsError, match="missing.ply"):
        read_ply(tmp_path / "missing.ply")


def test_wrong_sh_count_and_nan_raise(tmp_path):
    splats = _splats(5, 1)
    write_ply(tmp_path / "g.ply", splats)
    v = PlyData.read(str(tmp_path / "g.ply"))["vertex"].data
    keep = [name for name in v.dtype.names if name != "f_rest_8"]
    odd = np.empty(len(v), dtype=[(name, "f4") for name in keep])
    for name in keep:
        odd[name] = v[name]
    PlyData([PlyElement.describe(odd, "vertex")]).write(str(tmp_path / "odd.ply"))
    with pytest.raises(GagsError, match="odd.ply.*f_rest"):
        read_ply(tmp_path / "odd.ply")
    splats["means"][2, 1] = float("nan")
    write_ply(tmp_path / "nan.ply", splats)
    with pytest.raises(GagsError, match="nan.ply.*1 of 5"):
        read_ply(tmp_path / "nan.ply")


def test_empty_ply_roundtrip(tmp_path):
    splats = _splats(0, 3)
    write_ply(tmp_path / "empty.ply", splats)
    back = read_ply(tmp_path / "empty.ply")
    for key, value in splats.items():
        assert back[key].shape == value.shape, key
