"""Multi-view consistency and purity of segment maps: hand-checked counts, exact geometry, and the procedural world's
ground truth (consistent by construction) against view-dependent relabellings of it."""

import numpy as np
import pytest
import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.config import SynthConfig
from gags.errors import GagsError
from gags.segment.consistency import (
    agreement_counts,
    carry_pixels,
    evaluate_segment_outputs,
    multiview_consistency,
    purity_completeness,
    view_pairs,
)
from gags.threads import scoped_torch_threads

RES, VIEWS = 48, 6
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 48x48 ramen scene: cameras, exact depth and ids (levels sub-part, part, whole)."""
    from gags.data import load_scene
    from gags.synth.scenes import run as synth

    root = tmp_path_factory.mktemp("consistency") / "synth"
    with scoped_torch_threads(1):
        synth(SynthConfig(out=root, preset="ramen", resolution=RES, views=VIEWS, supersample=1, points=500))
    scene = load_scene(root)
    stems = [n.split(".")[0] for n in scene.names]
    depths = [torch.from_numpy(np.load(root / "depth" / f"{s}.npy")) for s in stems]
    ids = [torch.from_numpy(np.load(root / "ids" / f"{s}.npy")).long() for s in stems]
    return root, scene, depths, ids


def camera(eye, target=(0.0, 0.0, 0.0), size=32, f=30.0, name="cam"):
    w2c = look_at(torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64))
    return Camera(name, intrinsics(f, f, size / 2, size / 2), w2c, size, size)


def test_agreement_counts_by_hand():
    a = torch.tensor([0, 0, 0, 1, 1, 2, -1, 5])
    b = torch.tensor([7, 7, 8, 9, 9, 9, 3, -1])
    # label 0: 2 of 3 in its best partner (7); label 1: 2 of 2; label 2: 1 of 1; the last two pairs are unlabelled
    assert agreement_counts(a, b) == (5, 6)
    assert agreement_counts(b, a) == (5, 6)  # 7 -> 0 (2/2), 8 -> 0 (1/1), 9 -> 1 (2/3)
    assert agreement_counts(torch.tensor([-1]), torch.tensor([2])) == (0, 0)
    with pytest.raises(GagsError, match="paired labels"):
        agreement_counts(torch.zeros(3), torch.zeros(4))


def test_carry_pixels_follows_the_geometry():
    """A plane z = 0 seen straight down from two heights and offsets: carried pixels land where the plane point is."""
    cam_a = camera((0.0, 0.0, 2.0), name="a")
    cam_b = camera((0.3, 0.1, 2.5), target=(0.3, 0.1, 0.0), name="b")
    # depth of the plane z = 0 in each view (cameras look straight down the -z axis: depth = height)
    depth_a = torch.full((32, 32), 2.0)
    depth_b = torch.full((32, 32), 2.5)
    src, dst = carry_pixels(depth_a, cam_a, depth_b, cam_b)
    assert len(src) > 300
    # the plane point of every source pixel centre, projected into b by the camera itself
    u, v = (src % 32).double() + 0.5, (src // 32).double() + 0.5
    K = cam_a.K.double()
    rays = torch.stack([(u - K[0, 2]) / K[0, 0] * 2.0, (v - K[1, 2]) / K[1, 1] * 2.0, torch.full_like(u, 2.0)], 1)
    world = (rays - cam_a.world_to_cam[:3, 3].double()) @ cam_a.world_to_cam[:3, :3].double()
    assert world[:, 2].abs().max() < 1e-5
    uv, _ = cam_b.project(world)
    assert torch.equal(dst, (uv[:, 1].floor() * 32 + uv[:, 0].floor()).long())
    # same camera: every pixel lands on itself
    same_src, same_dst = carry_pixels(depth_a, cam_a, depth_a, cam_a)
    assert torch.equal(same_src, same_dst) and len(same_src) == 32 * 32
    # an occluder in view b (nearer than the plane) hides what lies behind it
    occluded = depth_b.clone()
    occluded[:, :16] = 1.0
    src2, dst2 = carry_pixels(depth_a, cam_a, occluded, cam_b)
    assert len(src2) < len(src) and ((dst2 % 32) >= 16).all()
    # unknown depth (0) in a is never carried
    holes = depth_a.clone()
    holes[:8] = 0.0
    assert ((carry_pixels(holes, cam_a, depth_b, cam_b)[0] // 32) >= 8).all()
    with pytest.raises(GagsError, match="camera's size"):
        carry_pixels(depth_a[:10], cam_a, depth_b, cam_b)


def test_ground_truth_is_consistent_and_view_dependent_labels_are_not(world):
    _, scene, depths, ids = world
    pairs = view_pairs(scene.cameras, depths)
    assert len(pairs) >= VIEWS and all(0.1 <= p[2] <= 1.0 for p in pairs)
    names = ("subpart", "part", "whole")
    truth = multiview_consistency(ids, depths, scene.cameras, level_names=names)
    # exact depth and ids: only pixels at boundaries (resampled differently per view) disagree
    assert all(v > 0.85 for v in truth["consistency"].values())
    assert truth["pairs"] == len(pairs) and all(n > 0 for n in truth["pixels"].values())
    # split every part differently in every view (by image column, with a per-view offset): consistency drops
    g = torch.Generator().manual_seed(0)
    split = []
    for m in ids:
        offset = int(torch.randint(0, 24, (1,), generator=g))
        half = ((torch.arange(RES) + offset) // 12 % 2).expand(RES, RES)
        split.append(torch.where(m >= 0, m * 2 + half, m))
    worse = multiview_consistency(split, depths, scene.cameras, level_names=names)
    for name in names:
        assert worse["consistency"][name] < truth["consistency"][name] - 0.1
        assert worse["segments_per_view"][name] > truth["segments_per_view"][name]
    # one segment per view is trivially consistent (why purity is reported beside it)
    ones = [torch.where(m >= 0, 0, -1) for m in ids]
    assert multiview_consistency(ones, depths, scene.cameras, level_names=names)["consistency"]["whole"] == 1.0
    with pytest.raises(GagsError, match="one segment map"):
        multiview_consistency(ids[:2], depths, scene.cameras)
    with pytest.raises(GagsError, match="expected"):
        multiview_consistency(ids, depths, scene.cameras)  # 3 levels given, 4 named by default


def test_purity_and_completeness(world):
    _, _, _, ids = world
    exact = purity_completeness(ids, ids, level_names=("s", "m", "l"))
    for k, name in enumerate(("s/subpart", "m/part", "l/whole")):
        assert exact[name] == {"purity": 1.0, "completeness": 1.0}
    # sub-parts lie inside parts: purity of sub-parts against parts is 1, completeness below
    assert exact["s/part"]["purity"] == 1.0 and exact["s/part"]["completeness"] < 1.0
    merged = [torch.where(m >= 0, 0, -1) for m in ids]  # everything one segment
    coarse = purity_completeness(merged, ids, level_names=("s", "m", "l"))
    assert coarse["s/subpart"]["completeness"] == 1.0 and coarse["s/subpart"]["purity"] < 0.9


def test_evaluate_segment_outputs_reads_the_stage_files(world, tmp_path):
    """OUT files laid out as `gags segment` writes them, filled with the ground truth: perfect purity."""
    from gags.data import save_scene_json
    from gags.workspace import Workspace

    root, scene, depths, ids = world
    out = tmp_path / "out"
    ws = Workspace(out)
    save_scene_json(scene, out)
    ws.features_dir.mkdir()
    ws.depth_dir.mkdir(parents=True)
    for name, depth, m in zip(scene.names, depths, ids):
        stem = name.split(".")[0]
        seg = torch.cat([m[:1], m]).numpy().astype(np.int32)  # default, s, m, l
        np.save(ws.features_dir / f"{stem}_s.npy", seg)
        np.save(ws.depth_file(stem), depth.numpy())
    result = evaluate_segment_outputs(out, root / "ids")
    assert result["views"] == VIEWS + 1 and set(result["consistency"]) == {"default", "s", "m", "l"}
    assert all(v > 0.85 for v in result["consistency"].values())
    assert result["purity"]["s/subpart"]["purity"] == 1.0 and result["purity"]["l/whole"]["completeness"] == 1.0
    with pytest.raises(GagsError, match="ground truth"):
        evaluate_segment_outputs(out, tmp_path)
