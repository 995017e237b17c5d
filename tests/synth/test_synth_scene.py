"""`gags synth` end to end: the files, their conventions, the ground truth's consistency across views, the labels."""

import json

import cv2
import numpy as np
import pytest
import torch
from plyfile import PlyData

from gags.cameras import OPENGL_TO_OPENCV, Camera
from gags.cli import main
from gags.config import SynthConfig
from gags.errors import GagsError
from gags.synth.labels import mask_iou, polygons_to_mask
from gags.synth.raycast import backproject, render
from gags.synth.rig import plan_cameras, split_views
from gags.synth.scenes import run, slug
from gags.synth.world import LEVELS, build_world

RES, VIEWS = 96, 16


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ramen"
    assert main(["synth", "--out", str(out), "--preset", "ramen", "--resolution", str(RES), "--views", str(VIEWS),
                 "--label-every", "3", "--points", "3000"]) == 0
    return out


def test_cli_writes_the_layout(scene):
    total, test = split_views(VIEWS)
    meta = json.loads((scene / "transforms.json").read_text())
    assert len(meta["frames"]) == total
    assert len(meta["test_filenames"]) == len(test) and len(meta["train_filenames"]) == VIEWS
    for f in meta["frames"]:
        assert (scene / f["file_path"]).is_file() and (scene / f["depth_file_path"]).is_file()
        assert f["w"] == f["h"] == RES and f["cx"] == RES / 2
        ids = np.load(scene / f["ids_file_path"])
        assert ids.shape == (3, RES, RES) and ids.dtype == np.int32
        assert np.load(scene / f["depth_file_path"]).dtype == np.float32
    ply = PlyData.read(str(scene / meta["ply_file_path"]))["vertex"]
    assert len(ply) == 3000 and {"x", "y", "z", "red", "green", "blue"} <= set(ply.data.dtype.names)
    world = json.loads((scene / "world.json").read_text())
    assert world["seed"] == 0 and world["preset"] == "ramen" and len(world["objects"]) > 5


def test_transforms_are_opengl_camera_to_world(scene):
    meta = json.loads((scene / "transforms.json").read_text())
    world = build_world("ramen", 0)
    cams, _ = plan_cameras(world, len(meta["frames"]), RES, 0)
    for f, cam in zip(meta["frames"], cams, strict=True):
        c2w_cv = (torch.tensor(f["transform_matrix"], dtype=torch.float64) @ OPENGL_TO_OPENCV).numpy()
        np.testing.assert_allclose(c2w_cv, cam.cam_to_world.double().numpy(), atol=1e-5)


def test_scene_loads_with_gags_data(scene):
    from gags.data.scene import load_scene

    s = load_scene(scene)
    meta = json.loads((scene / "transforms.json").read_text())
    assert len(s.cameras) == len(meta["frames"])
    assert sorted(s.cameras[i].name for i in s.test_ids) == sorted(p.split("/")[-1] for p in meta["test_filenames"])
    assert s.points is not None and len(s.points) == 3000


def test_labels_round_trip_and_queries(scene):
    queries = json.loads((scene / "queries.json").read_text())
    assert {q["level"] for q in queries["queries"]} == {"whole", "part", "subpart"}
    assert len(queries["queries"]) >= 12
    frames = queries["label_frames"]["train"] + queries["label_frames"]["test"]
    assert queries["label_frames"]["test"] and queries["label_frames"]["train"]
    checked = 0
    for frame in frames:
        label = json.loads((scene / "label" / f"{frame}.json").read_text())
        assert label["info"]["width"] == RES and label["info"]["name"] == f"{frame}.png"
        ids = np.load(scene / "ids" / f"{frame}.npy")
        by_category = {}
        for obj in label["objects"]:
            by_category.setdefault(obj["category"], []).append(obj)
            x1, y1, x2, y2 = obj["bbox"]
            pts = np.array(obj["segmentation"])
            assert pts[:, 0].min() >= x1 and pts[:, 0].max() <= x2 and pts[:, 1].min() >= y1 and pts[:, 1].max() <= y2
        for q in queries["queries"]:
            if frame in q["frames"]:
                assert q["text"] in by_category  # every query visible in the frame is labelled
        for category, objs in by_category.items():
            mask = cv2.imread(str(scene / "label" / frame / f"{slug(category)}.png"), cv2.IMREAD_GRAYSCALE) > 0
            level = objs[0]["level"]
            assert (mask <= (ids[LEVELS.index(level)] >= 0)).all()
            if mask.sum() < 100:  # tiny objects: the polygons of a few pixels are only approximate
                continue
            filled = polygons_to_mask([np.array(o["segmentation"]) for o in objs], RES, RES)
            assert mask_iou(filled, mask) >= 0.95, (frame, category)
            checked += 1
    assert checked >= 20


def test_ground_truth_is_consistent_across_views():
    """A surface point of an entity, back-projected from one view with the rendered depth, falls on the same entity
    (all three levels) in every other view where the depth says it is visible."""
    world = build_world("ramen", 2)
    cams, _ = plan_cameras(world, 8, 64, 2)
    renders = [render(world, c, 2) for c in cams]

    def interior(ids):  # pixels whose 3x3 neighbourhood is one sub-part
        sub = np.pad(ids[0], 1, mode="edge")
        ok = np.ones(ids[0].shape, bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                ok &= sub[dy:dy + ids.shape[1], dx:dx + ids.shape[2]] == ids[0]
        return ok & (ids[0] >= 0)

    checked = agree = 0
    for a in range(len(cams)):
        pts = backproject(cams[a], renders[a].depth).reshape(-1, 3).float()
        ids_a = renders[a].ids.reshape(3, -1)
        ok_a = interior(renders[a].ids).reshape(-1)
        for b in range(len(cams)):
            if a == b:
                continue
            uv, z = cams[b].project(pts)
            px = torch.floor(uv).long()
            inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < 64) & (px[:, 1] >= 0) & (px[:, 1] < 64)
            sel = torch.nonzero(inside & torch.as_tensor(ok_a)).flatten()
            u, v = px[sel, 0].numpy(), px[sel, 1].numpy()
            d_b = renders[b].depth[v, u]
            visible = (np.abs(d_b - z[sel].numpy()) < 0.01 * d_b + 0.002) & interior(renders[b].ids)[v, u]
            src = ids_a[:, sel.numpy()[visible]]
            dst = renders[b].ids[:, v[visible], u[visible]]
            checked += visible.sum()
            agree += (src == dst).all(0).sum()
    assert checked > 2000
    assert agree / checked > 0.995


def test_user_errors_and_determinism(tmp_path):
    with pytest.raises(GagsError, match="resolution"):
        run(SynthConfig(out=tmp_path / "big", resolution=1024))
    with pytest.raises(GagsError, match="preset"):
        run(SynthConfig(out=tmp_path / "x", preset="moon"))
    a = run(SynthConfig(out=tmp_path / "a", preset="figurines", seed=4, resolution=32, views=2, points=100))
    b = run(SynthConfig(out=tmp_path / "b", preset="figurines", seed=4, resolution=32, views=2, points=100))
    for name in ("images/frame_00001.png", "depth/frame_00001.npy", "ids/frame_00001.npy", "points3d.ply"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    # a different scene may not be written into the same folder; the same one resumes
    with pytest.raises(GagsError, match="different"):
        run(SynthConfig(out=a, preset="figurines", seed=5, resolution=32, views=2))
    run(SynthConfig(out=a, preset="figurines", seed=4, resolution=32, views=2, points=100))
    assert (a / "images/frame_00001.png").read_bytes() == (b / "images/frame_00001.png").read_bytes()
    # other label settings on resume: the label folder holds exactly the new evaluation frames
    for every, n_labelled in ((1, 3), (5, 2)):
        run(SynthConfig(out=a, preset="figurines", seed=4, resolution=32, views=2, points=100, label_every=every))
        frames = json.loads((a / "queries.json").read_text())["label_frames"]
        assert len(frames["train"] + frames["test"]) == n_labelled
        assert sorted(p.stem for p in (a / "label").glob("*.json")) == sorted(frames["train"] + frames["test"])
        assert sorted(p.name for p in (a / "label").iterdir() if p.is_dir()) == sorted(frames["train"] + frames["test"])


def test_camera_type_is_the_shared_one():
    world = build_world("random", 1)
    cams, _ = plan_cameras(world, 2, (48, 32), 1)
    assert all(isinstance(c, Camera) and (c.width, c.height) == (48, 32) for c in cams)
    out = render(world, cams[0], 1)
    assert out.rgb.shape == (32, 48, 3) and out.depth.shape == (32, 48) and out.ids.shape == (3, 32, 48)


@pytest.mark.parametrize("preset", ["teatime", "figurines", "kitchen", "random"])
def test_every_preset_has_queries_at_three_levels(tmp_path, preset):
    out = run(SynthConfig(out=tmp_path / preset, preset=preset, seed=1, resolution=64, views=10, label_every=2,
                          points=100))
    queries = json.loads((out / "queries.json").read_text())["queries"]
    assert {q["level"] for q in queries} == {"whole", "part", "subpart"}
    assert len(queries) >= 12
    labelled = set(json.loads((out / "queries.json").read_text())["label_frames"]["test"])
    assert labelled and all(len(q["frames"]) >= 2 for q in queries)


def test_labels_read_with_gags_data(scene):
    from gags.data.labels import load_labels

    labels = load_labels(scene / "label")
    queries = json.loads((scene / "queries.json").read_text())
    frames = queries["label_frames"]["train"] + queries["label_frames"]["test"]
    assert sorted(labels) == sorted(frames)
    for frame, lab in labels.items():
        expected = {q["text"] for q in queries["queries"] if frame in q["frames"]}
        assert set(lab.categories) == expected
        for category, mask in lab.masks.items():
            exact = cv2.imread(str(scene / "label" / frame / f"{slug(category)}.png"), cv2.IMREAD_GRAYSCALE) > 0
            if exact.sum() >= 100:
                assert mask_iou(mask, exact) >= 0.95
