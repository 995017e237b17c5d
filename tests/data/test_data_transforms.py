import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.cameras import OPENGL_TO_OPENCV
from gags.data import load_scene, write_point_ply
from gags.errors import GagsError
from tests.helpers import tiny_transforms_scene


def _kitchen(kitchen: Path, tmp_path: Path, images_dir: str = "images_8"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_scene(kitchen, images_dir=images_dir, cache_dir=tmp_path / "cache")


def _write_transforms(scene, folder: Path, *, per_frame: bool = False, with_ply: bool = False) -> Path:
    """A nerfstudio transforms.json of the COLMAP scene: distorted intrinsics + k1, OpenGL camera-to-world."""
    dist = scene.distortions[0]
    assert dist is not None  # the kitchen camera is SIMPLE_RADIAL
    intr = {"fl_x": dist.K[0, 0], "fl_y": dist.K[1, 1], "cx": dist.K[0, 2], "cy": dist.K[1, 2],
            "w": dist.width, "h": dist.height, "k1": dist.coeffs[0], "k2": 0.0, "p1": 0.0, "p2": 0.0,
            "camera_model": "OPENCV"}
    frames = []
    for cam, path in zip(scene.cameras, scene.image_paths, strict=True):
        c2w_gl = cam.cam_to_world.double() @ OPENGL_TO_OPENCV  # OpenCV -> OpenGL axes
        frame = {"file_path": f"images/{path.name}", "transform_matrix": c2w_gl.tolist()}
        if per_frame:
            frame.update(intr)
        frames.append(frame)
    meta = {"frames": frames[::-1]}  # out of order on purpose: the loader sorts by name
    if not per_frame:
        meta.update(intr)
    if with_ply:
        write_point_ply(folder / "sparse_pc.ply", scene.points, scene.point_colors)
        meta["ply_file_path"] = "sparse_pc.ply"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for path in scene.image_paths:
        target = folder / "images" / path.name
        if not target.exists():
            target.symlink_to(path)
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder / "transforms.json"


def _assert_same_cameras(a, b, atol_k=1e-3, atol_pose=1e-5):
    assert a.names == b.names
    for ca, cb in zip(a.cameras, b.cameras, strict=True):
        assert (ca.width, ca.height) == (cb.width, cb.height)
        torch.testing.assert_close(ca.K, cb.K, atol=atol_k, rtol=0)
        torch.testing.assert_close(ca.world_to_cam, cb.world_to_cam, atol=atol_pose, rtol=0)


@pytest.mark.parametrize("per_frame", [False, True])
def test_transforms_roundtrip_matches_colmap(kitchen, tmp_path, per_frame):
    ref = _kitchen(kitchen, tmp_path)
    json_path = _write_transforms(ref, tmp_path / "ns", per_frame=per_frame, with_ply=True)
    for target in (json_path, json_path.parent):
        scene = load_scene(target, cache_dir=tmp_path / "cache")
        assert scene.source_format == "transforms"
        _assert_same_cameras(scene, ref)
        assert scene.test_ids == ref.test_ids
        assert scene.scale == pytest.approx(ref.scale, rel=1e-5)
        np.testing.assert_array_equal(scene.points, ref.points)
        np.testing.assert_array_equal(scene.point_colors, ref.point_colors)
    # undistorted pixels agree too
    np.testing.assert_array_equal(scene.load_image(3), ref.load_image(3))


def test_transforms_images_dir_rescales(kitchen, tmp_path):
    """nerfstudio keeps intrinsics at full size and downscaled copies in images_N."""
    ref8 = _kitchen(kitchen, tmp_path, "images_8")
    ref4 = _kitchen(kitchen, tmp_path, "images_4")
    folder = tmp_path / "ns"
    _write_transforms(ref4, folder)
    (folder / "images_2").mkdir()
    for path in ref8.image_paths:
        (folder / "images_2" / path.name).symlink_to(path)
    scene = load_scene(folder, images_dir="images_2", cache_dir=tmp_path / "cache")
    _assert_same_cameras(scene, ref8)


def test_camera_angle_x_only_and_blender_split(tmp_path):
    """Blender layout: camera_angle_x, file paths without extension, RGBA on black, files define the split."""
    from PIL import Image

    folder = tmp_path / "blender"
    size = 40
    angle = 0.6911112070083618  # NeRF synthetic's camera_angle_x
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 128
    for split, count in (("train", 3), ("test", 2)):
        (folder / split).mkdir(parents=True)
        frames = []
        for i in range(count):
            Image.fromarray(rgba).save(folder / split / f"r_{i}.png")
            c2w = np.eye(4)
            c2w[:3, 3] = [i, 0.0, 4.0]
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        (folder / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    scene = load_scene(folder)
    assert scene.names == ["test/r_0.png", "test/r_1.png", "train/r_0.png", "train/r_1.png", "train/r_2.png"]
    assert [scene.names[i] for i in scene.test_ids] == ["test/r_0.png", "test/r_1.png"]
    f = 0.5 * size / math.tan(0.5 * angle)
    torch.testing.assert_close(scene.cameras[0].K, torch.tensor([[f, 0, 20], [0, f, 20], [0, 0, 1.0]]))
    # OpenGL camera at z=4 looking down -z: the world origin is 4 in front of the OpenCV camera
    uv, z = scene.cameras[2].project(torch.zeros(1, 3))
    assert z.item() == pytest.approx(4.0)
    torch.testing.assert_close(uv, torch.tensor([[20.0, 20.0]]))
    image = scene.load_image(0)
    assert image.shape == (size, size, 3)
    assert tuple(image[0, 0]) == (100, 0, 0)  # 200 * 128 / 255 on black


def test_nerfstudio_split_filenames(kitchen, tmp_path):
    ref = _kitchen(kitchen, tmp_path)
    json_path = _write_transforms(ref, tmp_path / "ns")
    meta = json.loads(json_path.read_text())
    names = [Path(f["file_path"]).name for f in meta["frames"]]
    meta["test_filenames"] = [f"images/{n}" for n in sorted(names)[1:4]]
    json_path.write_text(json.dumps(meta))
    scene = load_scene(json_path, cache_dir=tmp_path / "cache")
    assert scene.test_ids == [1, 2, 3]
    assert len(scene.train_ids) == len(ref) - 3
    # an explicit split wins
    scene = load_scene(json_path, cache_dir=tmp_path / "cache", split=(ref.names[5:], ref.names[:5]))
    assert scene.test_ids == [0, 1, 2, 3, 4]


def test_nan_pose_names_the_file(kitchen, tmp_path):
    ref = _kitchen(kitchen, tmp_path)
    json_path = _write_transforms(ref, tmp_path / "ns")
    meta = json.loads(json_path.read_text())
    meta["frames"][2]["transform_matrix"][0][3] = float("nan")
    json_path.write_text(json.dumps(meta))  # Python writes NaN, as nerfstudio-style tools do
    with pytest.raises(GagsError, match=rf"{json_path}.*{meta['frames'][2]['file_path']}.*NaN"):
        load_scene(json_path)


# ----------------------------------------------------------------------------------------------------------------------
# inputs real datasets ship


def test_windows_separators_are_accepted(tmp_path):
    """Older instant-ngp scenes write ``images\\0001.jpg``."""
    path = tiny_transforms_scene(tmp_path, ["0001.png", "0002.png"], ["images\\0001.png", ".\\images\\0002.png"])
    assert load_scene(path).names == ["0001.png", "0002.png"]


def test_frames_without_images_are_skipped_with_one_warning(tmp_path):
    path = tiny_transforms_scene(tmp_path, ["a.png", "b.png"], ["images/a.png", "images/gone.png", "images/b.png",
                                                            "images/lost.png"])
    with pytest.warns(UserWarning, match=r"2 of 4 frames have no image file and are skipped.*--strict"):
        scene = load_scene(path)
    assert scene.names == ["a.png", "b.png"]
    with pytest.raises(GagsError, match="gone.png"):
        load_scene(path, strict=True)


def test_zero_or_negative_focal_lengths_are_refused(tmp_path):
    for fl in (0.0, -25.0):
        path = tiny_transforms_scene(tmp_path / str(fl), ["a.png"], fl_x=fl)
        with pytest.raises(GagsError, match="must be positive"):
            load_scene(path)


def test_a_transforms_file_that_is_not_json_is_the_users_to_fix(tmp_path):
    path = tiny_transforms_scene(tmp_path, ["a.png"])
    path.write_text("{ not json")
    with pytest.raises(GagsError, match="is not valid JSON.*Fix the file") as err:
        load_scene(path)
    assert "Delete it" not in str(err.value)


def test_blender_train_and_val_holds_out_val(tmp_path):
    """A Blender folder with transforms_train.json and transforms_val.json but no test file."""
    from PIL import Image

    for split, count in (("train", 3), ("val", 2)):
        (tmp_path / split).mkdir()
        frames = []
        for i in range(count):
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / split / f"r_{i}.png")
            c2w = np.eye(4)
            c2w[:3, 3] = [i, 0.0, 4.0]
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    with pytest.warns(UserWarning, match="transforms_val.json are held out"):
        scene = load_scene(tmp_path)
    assert [scene.names[i] for i in scene.test_ids] == ["val/r_0.png", "val/r_1.png"]


def test_the_cli_prints_a_warning_as_one_line(tmp_path, capsys):
    from gags.cli import main

    path = tiny_transforms_scene(tmp_path / "scene", ["a.png", "b.png"], ["images/a.png", "images/gone.png",
                                                                      "images/b.png"])
    assert main(["reconstruct", str(path.parent), "--out", str(tmp_path / "out"), "--iterations", "0",
                 "--test-every", "0"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "warning" in x)
    assert line.startswith("gags reconstruct: warning: ") and "1 of 3 frames have no image file" in line
    assert ".py:" not in err and "warnings.warn" not in err


def test_a_jpeg_with_damaged_data_is_warned_about(tmp_path):
    """PIL decodes such a file without a word; libjpeg reports the damage, and read_image passes it on."""
    import io

    from PIL import Image

    from gags.data.images import read_image

    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    (tmp_path / "good.jpg").write_bytes(bytes(data))
    for i in range(len(data) // 2, len(data) // 2 + 6):  # a few bytes of the scan data changed
        data[i] ^= 0x21
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "good.jpg").shape == (64, 64, 3)
    with pytest.warns(UserWarning, match="bad.jpg: the JPEG decoder reports damaged data.*Corrupt JPEG data"):
        assert read_image(tmp_path / "bad.jpg").shape == (64, 64, 3)
