"""The viewer's rendering and per-client state, without a browser: frames per mode and query, the 3D selection, pass
reuse, concurrent renders from threads, sessions that keep their own query, camera conversions, user errors."""

from __future__ import annotations

import math
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.config import ViewConfig
from gags.errors import GagsError
from gags.viewer.render import Renderer, camera_from_pose, matrix_to_quat, quat_to_matrix, same_camera
from gags.viewer.scene import load_viewer_scene
from gags.viewer.session import ClientSession


@pytest.fixture(scope="module")
def renderer(viewer_out, encoder_spec) -> Renderer:
    return Renderer(load_viewer_scene(viewer_out, "gags", encoder_spec), decode_size=64)


@pytest.fixture
def cam(scene_helpers):
    """The held-out camera."""
    return scene_helpers.cameras()[3]


@pytest.fixture
def box(scene_helpers):
    def box(camera, category: str) -> tuple[slice, slice]:
        """Rows and columns of the pixels well inside an object's square (its projected box shrunk by 3 px)."""
        x1, y1, x2, y2 = scene_helpers.label_json(camera, camera.name, categories=(category,))["objects"][0]["bbox"]
        return slice(math.ceil(y1) + 3, math.floor(y2) - 3), slice(math.ceil(x1) + 3, math.floor(x2) - 3)

    return box


def test_scene_loads_cameras_up_and_center(renderer, scene_helpers):
    scene = renderer.scene
    assert len(scene.cameras) == 4 and scene.train_ids == scene_helpers.TRAIN
    # The cameras look straight down with the image's up along world +y: that is their mean up direction.
    torch.testing.assert_close(scene.up, torch.tensor([0.0, 1.0, 0.0]))
    assert len(scene.geometry) == len(scene.field.features) == scene.sh.shape[0]
    assert renderer.modes == ("rgb", "relevancy", "granularity", "selected")


def test_up_and_center_of_a_camera_ring():
    """Cameras on a ring above a point, looking at it: up is the world's +z, the centre is that point."""
    from gags.cameras import Camera, intrinsics, look_at
    from gags.viewer.scene import look_center, world_up

    target = torch.tensor([0.3, -0.2, 0.5])
    cams = [Camera(name=f"{k}", K=intrinsics(50, 50, 32, 24), width=64, height=48,
                   world_to_cam=look_at(target + torch.tensor([2 * math.cos(a), 2 * math.sin(a), 1.0]), target))
            for k, a in enumerate(np.linspace(0, 2 * math.pi, 7)[:-1])]
    torch.testing.assert_close(world_up(cams), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(look_center(cams), target, atol=1e-4, rtol=0)


def test_query_recolours_the_relevancy_overlay(renderer, cam, box):
    rgb, _ = renderer.render(cam, "rgb", "egg")
    egg, _ = renderer.render(cam, "relevancy", "egg")
    bowl, _ = renderer.render(cam, "relevancy", "bowl")
    assert rgb.relevancy is None and rgb.query == ""  # the colours do not depend on the query
    assert egg.query == "egg" and bowl.query == "bowl"
    assert egg.image.shape == (cam.height, cam.width, 3) and egg.image.dtype == np.uint8
    assert np.abs(egg.image.astype(int) - rgb.image.astype(int)).mean() > 10
    assert np.abs(egg.image.astype(int) - bowl.image.astype(int)).mean() > 10
    egg_box, bowl_box = box(cam, "egg"), box(cam, "bowl")
    # Each query is relevant (> 0.5) on its own object and not on the other one.
    assert egg.relevancy[egg_box].min() > 0.5 and egg.relevancy[bowl_box].max() < 0.5
    assert bowl.relevancy[bowl_box].min() > 0.5 and bowl.relevancy[egg_box].max() < 0.5
    # The overlay is hottest (turbo red: R high, B low) on the queried object.
    red = egg.image[..., 0].astype(int) - egg.image[..., 2].astype(int)
    assert red[egg_box].mean() > red[bowl_box].mean() + 50


def test_selected_and_granularity_modes(renderer, cam, box, scene_helpers):
    _, owner = scene_helpers.scene_gaussians()
    selection = renderer.selection("egg")
    assert torch.equal(selection.selected, owner == 1)  # exactly the egg's Gaussians
    rgb, base = renderer.render(cam, "rgb")
    selected, _ = renderer.render(cam, "selected", "egg", base)
    assert "of" in selected.info and str(int((owner == 1).sum())) in selected.info
    egg_box, bowl_box = box(cam, "egg"), box(cam, "bowl")
    # Kept in colour (the dimmed plane shows through a little), the rest dimmed.
    np.testing.assert_allclose(selected.image[egg_box], rgb.image[egg_box], atol=6)
    assert selected.image[bowl_box].mean() < 0.5 * rgb.image[bowl_box].mean()
    gran, _ = renderer.render(cam, "granularity", "", base)
    assert gran.relevancy is None and gran.info.startswith("granularity:")
    assert np.abs(gran.image.astype(int) - rgb.image.astype(int)).mean() > 5
    empty, _ = renderer.render(cam, "relevancy", "  ", base)
    assert empty.info == "type a query" and np.array_equal(empty.image, rgb.image)
    with pytest.raises(ValueError, match="mode"):
        renderer.render(cam, "depth")


def test_pass_is_reused_only_for_the_same_camera(renderer, cam, scene_helpers):
    _, base = renderer.render(cam, "relevancy", "egg")
    again, base2 = renderer.render(cam, "relevancy", "bowl", base)
    assert base2 is base and "language" in base.cache
    fresh, _ = renderer.render(cam, "relevancy", "bowl")
    np.testing.assert_array_equal(again.image, fresh.image)
    other = scene_helpers.cameras()[0]
    moved, base3 = renderer.render(other, "relevancy", "bowl", base)
    assert base3 is not base and same_camera(moved.camera, other)


def test_concurrent_renders_do_not_mix(renderer, scene_helpers):
    """Threads rendering different queries and views at once each get exactly the frame of their own request."""
    cams = scene_helpers.cameras()
    requests = [(cams[i % 4], mode, text) for i, (mode, text) in enumerate(
        [("relevancy", "egg"), ("relevancy", "bowl"), ("selected", "egg"), ("granularity", ""), ("selected", "bowl"),
         ("relevancy", "table")])]
    expected = [renderer.render(*r)[0].image for r in requests]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for k in range(len(requests)):
                j = (k + t) % len(requests)
                results[t, j] = renderer.render(*requests[j])[0].image
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    assert len(results) == 4 * len(requests)
    for (_, j), image in results.items():
        np.testing.assert_array_equal(image, expected[j])


def test_sessions_keep_their_own_query(renderer, cam, box):
    """Two clients with different queries: each publishes only frames of its own query; bursts of updates coalesce."""
    published: dict[int, list] = {1: [], 2: []}
    sessions = {k: ClientSession(k, renderer, published[k].append) for k in (1, 2)}
    try:
        for k, text in ((1, "egg"), (2, "bowl")):
            sessions[k].update(camera=cam, mode="relevancy")
            for n in range(1, len(text) + 1):  # typed one key at a time
                sessions[k].update(query=text[:n])
        frames = {k: s.wait_frame(timeout=60) for k, s in sessions.items()}
        assert frames[1].query == "egg" and frames[2].query == "bowl"
        assert not np.array_equal(frames[1].image, frames[2].image)
        egg_box = box(cam, "egg")
        assert frames[1].relevancy[egg_box].min() > 0.5 > frames[2].relevancy[egg_box].max()
        for k, text in ((1, "egg"), (2, "bowl")):
            assert all(text.startswith(f.query) for f in published[k])  # never the other tab's query
            assert sessions[k].frames_rendered <= 1 + len(text)
        # A mode change renders again from the same camera.
        version = sessions[1].update(mode="selected")
        frame = sessions[1].wait_frame(version, timeout=60)
        assert frame.mode == "selected" and frame.query == "egg"
        with pytest.raises(GagsError, match="unknown view mode"):
            sessions[1].update(mode="depth")
    finally:
        for s in sessions.values():
            s.close()


def test_camera_pose_round_trip(scene_helpers):
    from gags.viewer.server import camera_pose

    for cam in scene_helpers.cameras():
        wxyz, position, fov_y, aspect = camera_pose(cam)
        np.testing.assert_allclose(quat_to_matrix(wxyz), cam.cam_to_world[:3, :3].numpy(), atol=1e-6)
        back = camera_from_pose(wxyz, position, fov_y, aspect, max(cam.width, cam.height))
        assert (back.width, back.height) == (cam.width, cam.height)
        torch.testing.assert_close(back.world_to_cam, cam.world_to_cam, atol=1e-5, rtol=0)
        torch.testing.assert_close(back.K, cam.K, atol=1e-3, rtol=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * np.sign(q[0])
        np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-9)
    tall = camera_from_pose(np.array([1.0, 0, 0, 0]), np.zeros(3), 1.0, 0.5, 100)
    assert (tall.width, tall.height) == (50, 100)


def test_missing_pieces_are_user_errors(viewer_out, encoder_spec, tmp_path):
    with pytest.raises(GagsError, match="does not exist"):
        load_viewer_scene(tmp_path / "nowhere")
    with pytest.raises(GagsError, match=r"scene.json does not exist.*gags reconstruct"):
        load_viewer_scene(tmp_path)
    out = tmp_path / "out"
    shutil.copytree(viewer_out, out)
    with pytest.raises(GagsError, match=r"field/avg/field.safetensors does not exist.*gags distill"):
        load_viewer_scene(out, "avg", encoder_spec)
    shutil.rmtree(out / "field")
    with pytest.raises(GagsError, match=r"no language field.*gags segment.*gags distill"):
        load_viewer_scene(out, "gags", encoder_spec)
    (out / "gaussians.ply").unlink()
    with pytest.raises(GagsError, match=r"gaussians.ply does not exist.*gags reconstruct"):
        load_viewer_scene(out, "gags", encoder_spec)


@pytest.mark.parametrize("change, message", [({"port": 70000}, "--port"), ({"max_size": 4}, "--max-size"),
                                             ({"decode_size": 0}, "--decode-size"), ({"threshold": 2.0}, "--threshold"),
                                             ({"threads": -1}, "--threads")])
def test_bad_options_are_user_errors(change, message):
    from gags.viewer.server import check_config

    with pytest.raises(GagsError, match=message):
        check_config(ViewConfig(out=Path("x"), **change))


def test_cli_reports_a_missing_folder(tmp_path, capsys):
    from gags.cli import main

    assert main(["view", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err + capsys.readouterr().out


def test_langsplat_field_picks_its_level(viewer_out, encoder_dir, encoder_spec, scene_helpers, tmp_path, cam, box):
    """A three-level (langsplat) field: no granularity mode; relevancy from the level that knows the objects."""
    out = tmp_path / "out"
    shutil.copytree(viewer_out, out)
    scene_helpers.write_field(out, "langsplat", encoder_dir)
    renderer = Renderer(load_viewer_scene(out, "langsplat", encoder_spec), decode_size=64)
    assert renderer.modes == ("rgb", "relevancy", "selected")
    frame, _ = renderer.render(cam, "relevancy", "egg")
    assert frame.info.endswith("(level 1)")
    assert frame.relevancy[box(cam, "egg")].min() > 0.5 > frame.relevancy[box(cam, "bowl")].max()
    with pytest.raises(ValueError, match="mode"):
        renderer.render(cam, "granularity")
