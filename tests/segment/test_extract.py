"""`gags segment` end to end on a tiny procedural scene (embedded segmenter, a random-weights open_clip encoder), and
the per-image steps with stand-in models whose answers are known."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.cli import main
from gags.config import SegmentConfig, SynthConfig
from gags.data.features import feature_paths, feature_stem
from gags.errors import GagsError
from gags.models.crops import crop_masks
from gags.models.segmenters import MaskPrediction
from gags.segment import extract
from gags.segment.exact import exact_language_features
from gags.segment.external import validate_language_features
from gags.segment.image import STEPS, box_nms_survivors, candidate_masks, packed_boxes, segment_image
from gags.segment.masks import LEVELS, granularity_levels, masks_to_boxes
from gags.segment.parallel import ImageWorker
from gags.threads import scoped_torch_threads

pytest.importorskip("open_clip")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # encoder_dir: tests/conftest.py

RES, VIEWS = 48, 5


def write_point_gaussians(scene, path: Path) -> None:
    """Opaque isotropic Gaussians at the scene's surface points (scale = nearest-neighbour spacing, capped at twice
    its median): they render a plausible depth without training."""
    from gags.data import write_ply
    from gags.splat.gaussians import knn_rms_distance, rgb_to_sh

    points = torch.as_tensor(scene.points).float()
    colors = torch.as_tensor(scene.point_colors).float() / 255.0
    n = len(points)
    spacing = knn_rms_distance(points)
    scales = spacing.clamp(1e-4, 2 * float(spacing.median())).log()[:, None].repeat(1, 3)
    write_ply(path, {"means": points, "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), "scales": scales,
                     "opacities": torch.full((n,), math.log(0.99 / 0.01)), "sh0": rgb_to_sh(colors)[:, None],
                     "shN": torch.zeros(n, 0, 3)})


@pytest.fixture(scope="module")
def scene_out(tmp_path_factory) -> Path:
    """A reconstructed-looking OUT: scene.json + gaussians.ply of a 48x48, 5+1-view ramen scene."""
    from gags.data import load_scene, save_scene_json
    from gags.synth.scenes import run as synth

    root = tmp_path_factory.mktemp("segment")
    with scoped_torch_threads(1):
        synth(SynthConfig(out=root / "synth", preset="ramen", resolution=RES, views=VIEWS, supersample=1,
                          points=3000))
        scene = load_scene(root / "synth")
        out = root / "out"
        save_scene_json(scene, out)
        write_point_gaussians(scene, out / "gaussians.ply")
    return out


def fresh_out(scene_out: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir(parents=True)
    for name in ("scene.json", "gaussians.ply", "points3D.ply"):
        if (scene_out / name).exists():
            shutil.copy(scene_out / name, out / name)
    return out


def config_for(out: Path, encoder_dir: Path, **kwargs) -> SegmentConfig:
    return SegmentConfig(out=out, encoder=f"openclip:local-dir:{encoder_dir}", threads=1, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# the stage


def test_stage_writes_langsplat_files(scene_out, encoder_dir, tmp_path):
    from gags.data import load_scene_json

    out = fresh_out(scene_out, tmp_path)
    summary = extract.run(config_for(out, encoder_dir))
    scene = load_scene_json(out)
    assert summary["images"] == len(scene) == VIEWS + 1
    levels_seen = np.zeros(4, bool)
    for name in scene.names:
        f_path, s_path = feature_paths(out / "language_features", name)
        feats, seg = np.load(f_path), np.load(s_path)
        assert feats.dtype == np.float16 and feats.ndim == 2 and feats.shape[1] == 32 and len(feats) > 0
        assert np.allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
        assert seg.dtype == np.int32 and seg.shape == (4, RES, RES)
        assert seg.min() >= -1 and seg.max() < len(feats)
        levels_seen |= (seg >= 0).any(axis=(1, 2))
        # LangSplat's offsets: level k's indices come after those of the levels before it
        for k in range(2, 4):
            prev, cur = seg[k - 1][seg[k - 1] >= 0], seg[k][seg[k] >= 0]
            if len(prev) and len(cur):
                assert cur.min() > prev.max()
        pts = np.load(out / "prompts" / f"{feature_stem(name)}.npy")
        assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 64
        assert (pts >= 0).all() and (pts <= RES).all()
        depth = np.load(out / "segment" / "depth" / f"{feature_stem(name)}.npy")
        assert depth.shape == (RES, RES) and (depth > 0).mean() > 0.5
    assert levels_seen.all()  # every level has masks in some view
    timings = json.loads((out / "segment" / "timings.json").read_text())
    assert timings["per_image_s"] > 0 and set(STEPS) <= set(timings["steps_s_per_image"])
    assert set(timings["global_s_per_image"]) == {"depth", "visibility_prompts"}
    record = json.loads((out / "segment" / "config.json").read_text())["settings"]
    assert record["prompts"] == "gags" and record["segmenter"] == "hierarchy" and str(encoder_dir) in record["encoder"]
    assert len(record["encoder_weights"]) == 16 and len(record["gaussians"]) == 16


def test_rerun_continues_and_recomputes_nothing_done(scene_out, encoder_dir, tmp_path):
    from gags.data import load_scene_json

    out = fresh_out(scene_out, tmp_path)
    extract.run(config_for(out, encoder_dir))
    names = load_scene_json(out).names
    files = {n: feature_paths(out / "language_features", n) for n in names}
    before = {n: [np.load(p) for p in files[n]] for n in names}
    stamps = {n: [p.stat().st_mtime_ns for p in files[n]] for n in names}
    prompt_stamp = (out / "prompts" / f"{feature_stem(names[0])}.npy").stat().st_mtime_ns

    assert extract.run(config_for(out, encoder_dir)) == {"images": 0, "done": len(names)}
    assert main(["segment", str(out), "--encoder", f"openclip:local-dir:{encoder_dir}", "--threads", "1"]) == 0
    lost = names[2]
    files[lost][1].unlink()  # as if killed between writing _f and _s
    summary = extract.run(config_for(out, encoder_dir))
    assert summary["images"] == 1 and summary["global_s_per_image"] == {}  # depth and prompts were kept
    for n in names:
        now = [p.stat().st_mtime_ns for p in files[n]]
        if n != lost:
            assert now == stamps[n]
        assert np.array_equal(np.load(files[n][1]), before[n][1])  # the same result, deterministically
        assert np.allclose(np.load(files[n][0]).astype(np.float32), before[n][0].astype(np.float32), atol=1e-3)
    assert (out / "prompts" / f"{feature_stem(names[0])}.npy").stat().st_mtime_ns == prompt_stamp


def test_other_settings_refuse_to_mix(scene_out, encoder_dir, tmp_path):
    out = fresh_out(scene_out, tmp_path)
    extract.run(config_for(out, encoder_dir))
    with pytest.raises(GagsError, match="other settings.*prompts"):
        extract.run(config_for(out, encoder_dir, prompts="uniform"))
    with pytest.raises(GagsError, match="other settings.*mask_nms_iou"):
        extract.run(config_for(out, encoder_dir, mask_nms_iou=0.5))
    summary = extract.run(config_for(out, encoder_dir, prompts="uniform", overwrite=True))
    assert summary["images"] == VIEWS + 1 and summary["points_per_image"] == 32 * 32
    record = json.loads((out / "segment" / "config.json").read_text())["settings"]
    assert record["prompts"] == "uniform"


def test_changed_gaussians_refuse_to_mix(scene_out, encoder_dir, tmp_path):
    out = fresh_out(scene_out, tmp_path)
    cfg = config_for(out, encoder_dir)
    extract.run(cfg)
    with open(out / "gaussians.ply", "ab") as fh:  # a different file (bytes appended after the data)
        fh.write(b"\0" * 16)
    with pytest.raises(GagsError, match="gaussians"):
        extract.run(cfg)


def test_user_errors(scene_out, encoder_dir, tmp_path, capsys):
    out = fresh_out(scene_out, tmp_path)
    (out / "gaussians.ply").unlink()
    with pytest.raises(GagsError, match="gags reconstruct"):
        extract.run(config_for(out, encoder_dir))
    assert main(["segment", str(out)]) == 1  # the CLI prints the GagsError and exits 1
    assert "gags reconstruct" in capsys.readouterr().err
    with pytest.raises(GagsError, match="scene.json"):
        extract.run(config_for(tmp_path / "nowhere", encoder_dir))
    out2 = fresh_out(scene_out, tmp_path / "b")
    with pytest.raises(GagsError, match="unknown segmenter spec"):
        extract.run(dataclasses.replace(config_for(out2, encoder_dir), segmenter="sam:vit_q"))
    with pytest.raises(GagsError, match="encoder folder"):
        extract.run(SegmentConfig(out=out2, encoder=f"openclip:local-dir:{tmp_path / 'missing'}"))


@pytest.mark.parametrize("parallel", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_workers_give_the_same_files(scene_out, encoder_dir, tmp_path, parallel):
    from gags.data import load_scene_json

    one = fresh_out(scene_out, tmp_path / "one")
    two = fresh_out(scene_out, tmp_path / "two")
    extract.run(config_for(one, encoder_dir))
    summary = extract.run(config_for(two, encoder_dir, workers=2, parallel=parallel))
    assert summary["workers"] == 2 and summary["parallel"] == parallel
    for name in load_scene_json(one).names:
        (f1, s1), (f2, s2) = feature_paths(one / "language_features", name), feature_paths(two / "language_features",
                                                                                          name)
        assert np.array_equal(np.load(s1), np.load(s2))
        assert np.allclose(np.load(f1).astype(np.float32), np.load(f2).astype(np.float32), atol=1e-3)


@pytest.mark.slow
def test_kill_9_then_rerun_continues(scene_out, encoder_dir, tmp_path):
    """A `gags segment` process killed with SIGKILL mid-run: the rerun finishes, redoing no finished image, and the
    result equals an uninterrupted run's."""
    from gags.data import load_scene_json

    out = fresh_out(scene_out, tmp_path / "killed")
    ref = fresh_out(scene_out, tmp_path / "ref")
    extract.run(config_for(ref, encoder_dir))
    names = load_scene_json(out).names
    s_files = [feature_paths(out / "language_features", n)[1] for n in names]
    cmd = [sys.executable, "-m", "gags", "segment", str(out), "--encoder", f"openclip:local-dir:{encoder_dir}",
           "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while not any(p.exists() for p in s_files):
            assert proc.poll() is None, "gags segment ended before writing any image"
            assert time.monotonic() < deadline, "no image written within 300 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = [p for p in s_files if p.exists()]
    assert 1 <= len(done) < len(names), "the kill came too late to interrupt the run"
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env).returncode == 0
    timings = json.loads((out / "segment" / "timings.json").read_text())
    assert timings["images"] == len(names) - len(done)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in done)
    assert not list((out / "language_features").glob(".*tmp*"))  # no temporary file left behind
    for name in names:
        (fa, sa), (fb, sb) = feature_paths(out / "language_features", name), feature_paths(ref / "language_features",
                                                                                          name)
        assert np.array_equal(np.load(sa), np.load(sb))
        assert np.allclose(np.load(fa).astype(np.float32), np.load(fb).astype(np.float32), atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------------
# on a Ray cluster (ray_head: a real local cluster, tests/conftest.py)


def _same_files(a: Path, b: Path) -> None:
    files_a = sorted(p.name for p in (a / "language_features").glob("*.npy"))
    assert files_a and files_a == sorted(p.name for p in (b / "language_features").glob("*.npy"))
    for name in files_a:
        assert (a / "language_features" / name).read_bytes() == (b / "language_features" / name).read_bytes(), name


def test_ray_gives_the_serial_files_byte_for_byte(scene_out, encoder_dir, tmp_path, ray_head, capsys):
    serial = fresh_out(scene_out, tmp_path / "serial")
    on_ray = fresh_out(scene_out, tmp_path / "ray")
    extract.run(config_for(serial, encoder_dir))
    assert main(["segment", str(on_ray), "--encoder", f"openclip:local-dir:{encoder_dir}", "--threads", "1",
                 "--ray", ray_head]) == 0
    _same_files(serial, on_ray)
    timings = json.loads((on_ray / "segment" / "timings.json").read_text())
    assert timings["parallel"] == "ray" and timings["workers"] == 2  # the cluster's 2 CPUs, one actor each
    assert not list(on_ray.glob(".ray-probe-*"))  # the shared-storage probe is removed
    # a rerun finds every image done (resume is unchanged on Ray)
    assert main(["segment", str(on_ray), "--encoder", f"openclip:local-dir:{encoder_dir}", "--threads", "1",
                 "--ray", ray_head]) == 0
    assert "already done" in capsys.readouterr().out


class DiesOnceMidImage(ImageWorker):
    """An actor that, the first time it meets image 1, writes that image's _f file and dies (SIGKILL) before its _s
    file: a worker lost mid-image. The marker file makes it happen once in the whole cluster."""

    def process(self, index: int) -> dict:
        marker = Path(self.config.out) / "died-once"
        if index == 1 and not marker.exists():
            marker.write_text("1")
            name = self.scene.names[index]
            f_path = feature_paths(self.ws.features_dir, name)[0]
            np.save(f_path, np.zeros((1, 4), np.float16))  # a wrong, half-finished output
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(index)


def test_ray_actor_killed_mid_image_leads_to_the_complete_result(scene_out, encoder_dir, tmp_path, ray_head):
    import ray

    from gags.cluster import connect
    from gags.data import load_scene_json
    from gags.segment.parallel import ray_images

    serial = fresh_out(scene_out, tmp_path / "serial")
    on_ray = fresh_out(scene_out, tmp_path / "ray")
    extract.run(config_for(serial, encoder_dir))
    # the depth maps and prompts the stage writes before handing out images: the serial run's
    shutil.copytree(serial / "segment", on_ray / "segment")
    shutil.copytree(serial / "prompts", on_ray / "prompts")
    (on_ray / "language_features").mkdir()
    names = load_scene_json(serial).names
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not importable by workers
    with connect(ray_head):
        reports = list(ray_images(config_for(on_ray, encoder_dir, ray=ray_head), range(len(names)),
                                  worker_class=DiesOnceMidImage))
    (on_ray / "died-once").unlink()  # the actor did die (the file exists), and the run went on
    assert sorted(r["index"] for r in reports) == list(range(len(names)))
    _same_files(serial, on_ray)


def test_ray_user_errors(scene_out, encoder_dir, tmp_path, monkeypatch):
    out = fresh_out(scene_out, tmp_path)
    with pytest.raises(GagsError, match="--ray-cpus-per-worker and --ray-gpus-per-worker are both 0"):
        extract.run(config_for(out, encoder_dir, ray="local", ray_cpus_per_worker=0))
    with pytest.raises(GagsError, match="--ray-workers must be >= 0"):
        extract.run(config_for(out, encoder_dir, ray="local", ray_workers=-1))
    with pytest.raises(GagsError, match="with --ray, say how many Ray workers with --ray-workers"):
        extract.run(config_for(out, encoder_dir, ray="local", workers=2))
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(GagsError, match=r'pip install "gags\[ray\]"'):
        extract.run(config_for(out, encoder_dir, ray="local"))
    assert not (out / "language_features").exists()  # nothing written


# ----------------------------------------------------------------------------------------------------------------------
# existing LangSplat folders


def langsplat_folder(scene_out: Path, path: Path, dim: int = 8) -> Path:
    """Files as LangSplat's preprocess.py writes them: _f float16, _s float32 (torch.zeros then numpy)."""
    from gags.data import load_scene_json

    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for cam in load_scene_json(scene_out).cameras:
        m = 7
        feats = rng.normal(size=(m, dim)).astype(np.float16)
        seg = rng.integers(-1, m, size=(4, cam.height, cam.width)).astype(np.float32)
        stem = cam.name.split(".")[0]
        np.save(path / f"{stem}_f.npy", feats)
        np.save(path / f"{stem}_s.npy", seg)
    return path


def test_existing_langsplat_folder_is_validated_and_used(scene_out, encoder_dir, tmp_path):
    out = fresh_out(scene_out, tmp_path)
    src = langsplat_folder(scene_out, tmp_path / "ls")
    report = extract.run(config_for(out, encoder_dir, features=src))
    assert report["source"] == "external" and report["dim"] == 8 and report["images"] == VIEWS + 1
    assert sorted(p.name for p in (out / "language_features").iterdir()) == sorted(p.name for p in src.iterdir())
    assert not (out / "prompts").exists()  # nothing was segmented
    # a rerun with the folder in place validates again and does no work
    assert extract.run(config_for(out, encoder_dir))["source"] == "external"
    # a folder put into OUT by hand is picked up the same way
    out2 = fresh_out(scene_out, tmp_path / "b")
    shutil.copytree(src, out2 / "language_features")
    assert extract.run(config_for(out2, encoder_dir))["images"] == VIEWS + 1


def test_bad_langsplat_files_name_the_file(scene_out, tmp_path):
    from gags.data import load_scene_json

    scene = load_scene_json(scene_out)
    names, sizes = scene.names, [(c.width, c.height) for c in scene.cameras]
    train = [names[i] for i in scene.train_ids]

    def broken(tag, edit):
        folder = langsplat_folder(scene_out, tmp_path / tag)
        f_path, s_path = feature_paths(folder, names[1])
        edit(f_path, s_path)
        return folder, f_path, s_path

    folder, _, s_path = broken("range", lambda f, s: np.save(s, np.full((4, RES, RES), 7, np.int64)))
    with pytest.raises(GagsError, match=f"{s_path.name}.*indices in \\[7, 7\\].*7 rows"):
        validate_language_features(folder, names, sizes, train)
    folder, _, s_path = broken("shape", lambda f, s: np.save(s, np.zeros((3, RES, RES), np.int32)))
    with pytest.raises(GagsError, match=f"{s_path.name}.*\\[4, H, W\\]"):
        validate_language_features(folder, names, sizes, train)
    folder, _, s_path = broken("aspect", lambda f, s: np.save(s, np.zeros((4, RES, RES // 2), np.int32)))
    with pytest.raises(GagsError, match="aspect ratio"):
        validate_language_features(folder, names, sizes, train)
    folder, f_path, _ = broken("dtype", lambda f, s: np.save(f, np.zeros((7, 8), np.int32)))
    with pytest.raises(GagsError, match=f"{f_path.name}.*float16"):
        validate_language_features(folder, names, sizes, train)
    folder, f_path, _ = broken("dim", lambda f, s: np.save(f, np.zeros((7, 9), np.float16)))
    with pytest.raises(GagsError, match=f"{f_path.name}.*dimension 9"):
        validate_language_features(folder, names, sizes, train)
    folder, _, s_path = broken("frac", lambda f, s: np.save(s, np.full((4, RES, RES), 0.5, np.float32)))
    with pytest.raises(GagsError, match="non-integer"):
        validate_language_features(folder, names, sizes, train)
    folder, f_path, _ = broken("corrupt", lambda f, s: f.write_bytes(b"not a numpy file"))
    with pytest.raises(GagsError, match=f"cannot read {f_path}"):
        validate_language_features(folder, names, sizes, train)
    folder, f_path, _ = broken("missing", lambda f, s: f.unlink())
    with pytest.raises(GagsError, match=f"{f_path}.*missing"):
        validate_language_features(folder, names, sizes, [names[1]])
    # a held-out image without files is allowed, and reported
    report = validate_language_features(folder, names, sizes, [n for n in names if n != names[1]])
    assert report["missing"] == [names[1]] and report["images"] == len(names) - 1


# ----------------------------------------------------------------------------------------------------------------------
# per-image steps with stand-in models


class BoxSegmenter:
    """Answers a point with three nested boxes around it (sizes from a fixed table keyed by the point's pixel), and
    scores from the same table; records every point it is asked."""

    def __init__(self, height=40, width=50, seed=0):
        self.height, self.width = height, width
        g = np.random.default_rng(seed)
        self.half = np.sort(g.integers(2, 14, size=(height, width, 3)), axis=2)
        self.iou = g.uniform(0.6, 1.0, size=(height, width, 3)).astype(np.float32)
        self.stab = g.uniform(0.8, 1.0, size=(height, width, 3)).astype(np.float32)
        self.asked = []

    def set_image(self, rgb, depth=None):
        assert rgb.shape[:2] == (self.height, self.width)

    def predict(self, points):
        pts = torch.as_tensor(points).float().reshape(-1, 2)
        self.asked.append(pts.clone())
        xs, ys = pts[:, 0].long().clamp(0, self.width - 1), pts[:, 1].long().clamp(0, self.height - 1)
        yy, xx = torch.meshgrid(torch.arange(self.height), torch.arange(self.width), indexing="ij")
        half = torch.from_numpy(self.half[ys.numpy(), xs.numpy()])  # [P, 3]
        masks = ((yy[None, None] - ys[:, None, None, None]).abs() <= half[..., None, None]) & (
            (xx[None, None] - xs[:, None, None, None]).abs() <= half[..., None, None])
        return MaskPrediction(masks, torch.from_numpy(self.iou[ys.numpy(), xs.numpy()]),
                              torch.from_numpy(self.stab[ys.numpy(), xs.numpy()]))


class MeanColourEncoder:
    """Feature = normalised (mean R, G, B, 1) of the crop; counts crops."""

    input_size = 16
    dim = 4

    def __init__(self):
        self.seen = 0

    def encode_images(self, crops):
        self.seen += len(crops)
        x = torch.as_tensor(crops).float().mean(dim=(1, 2))
        return torch.nn.functional.normalize(torch.cat([x, torch.ones(len(x), 1)], dim=1), dim=1)


def test_box_nms_first_keeps_the_release_result():
    """Per-level box NMS over all candidates, then granularity_levels on the survivors only, equals
    granularity_levels on every candidate (the claim that lets candidates stay bit-packed)."""
    seg = BoxSegmenter()
    g = torch.Generator().manual_seed(3)
    points = torch.stack([torch.randint(0, 50, (120,), generator=g), torch.randint(0, 40, (120,), generator=g)], 1)
    points = points.float() + 0.5
    cand = candidate_masks(seg, points, 40, 50, 0.7, 0.85, chunk_elements=3 * 40 * 50 * 7)  # 7 points per call
    assert len(seg.asked) > 10  # the chunking was exercised
    rows = torch.arange(len(cand.boxes))
    every = granularity_levels(cand.unpack(rows), cand.predicted_iou, cand.stability, cand.granularity)
    kept = box_nms_survivors(cand, 0.7)
    assert len(kept) < len(rows)
    fast = granularity_levels(cand.unpack(kept), cand.predicted_iou[kept], cand.stability[kept],
                              cand.granularity[kept])
    for name in LEVELS:
        assert torch.equal(kept[fast[name].source], every[name].source)
        assert torch.equal(fast[name].masks, every[name].masks)


def test_candidates_are_quality_filtered_and_points_asked_once():
    seg = BoxSegmenter()
    points = torch.tensor([[10.5, 5.5], [20.5, 30.5], [10.5, 5.5], [20.5, 30.5], [3.5, 3.5]])
    cand = candidate_masks(seg, points, 40, 50, 0.7, 0.85)
    asked = torch.cat(seg.asked)
    assert asked.tolist() == [[10.5, 5.5], [20.5, 30.5], [3.5, 3.5]]  # first occurrences, in order
    ious = torch.from_numpy(seg.iou[asked[:, 1].long(), asked[:, 0].long()])
    stab = torch.from_numpy(seg.stab[asked[:, 1].long(), asked[:, 0].long()])
    passing = (ious > 0.7) & (stab >= 0.85)
    assert len(cand.boxes) == int(passing.sum()) and cand.asked == 3
    assert torch.equal(cand.granularity, torch.nonzero(passing, as_tuple=True)[1])
    full = seg.predict(asked).masks[passing]
    assert torch.equal(cand.unpack(torch.arange(len(full))), full)
    assert torch.equal(cand.boxes.long(), masks_to_boxes(full))


def test_packed_boxes_match_masks_to_boxes():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(20, 13, 21, generator=g) > 0.97  # sparse: boxes of all shapes, width not a multiple of 8
    masks[0] = False
    masks[1, 12, 20] = True
    packed = np.packbits(masks.numpy(), axis=2)
    assert torch.equal(packed_boxes(packed, 21), masks_to_boxes(masks))


def test_segment_image_features_and_maps():
    seg, enc = BoxSegmenter(), MeanColourEncoder()
    rgb = np.random.default_rng(1).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    g = torch.Generator().manual_seed(5)
    points = torch.stack([torch.randint(0, 50, (60,), generator=g), torch.randint(0, 40, (60,), generator=g)], 1)
    cfg = SegmentConfig(out=Path("unused"), min_region_area=10)
    result = segment_image(rgb, None, points.float() + 0.5, seg, enc, cfg)
    # the same steps, by hand
    cand = candidate_masks(BoxSegmenter(), points.float() + 0.5, 40, 50, 0.7, 0.85)
    kept = box_nms_survivors(cand, 0.7)
    levels = granularity_levels(cand.unpack(kept), cand.predicted_iou[kept], cand.stability[kept],
                                cand.granularity[kept], min_region_area=10)
    masks = torch.cat([levels[n].masks for n in LEVELS])
    expected = MeanColourEncoder().encode_images(crop_masks(rgb, masks, MeanColourEncoder.input_size))
    assert result.features.dtype == np.float16 and result.features.shape == (len(masks), 4)
    assert np.allclose(result.features.astype(np.float32), expected.numpy(), atol=1e-3)
    assert result.masks == {n: len(levels[n].masks) for n in LEVELS}
    # a mask present in several levels is encoded once: the default level holds masks of s, m and l
    unique = len(torch.unique(torch.cat([levels[n].source for n in LEVELS])))
    assert enc.seen == unique < len(masks)
    # _s: at each pixel the smallest mask covering it (painted last), offset per level
    offsets = np.cumsum([0] + [result.masks[n] for n in LEVELS])
    for k, name in enumerate(LEVELS):
        lv = levels[name].masks
        if len(lv) == 0:
            assert (result.segments[k] == -1).all()
            continue
        area = lv.flatten(1).sum(1)
        big = torch.where(lv, area[:, None, None], torch.iinfo(torch.int64).max).amin(0)
        covered = lv.any(0)
        idx = torch.from_numpy(result.segments[k]).long()
        local = idx - (offsets[k] if k > 0 else 0)
        assert torch.equal(idx >= 0, covered)
        assert torch.equal(area[local[covered]], big[covered])


def test_no_masks_gives_empty_features():
    class Nothing(BoxSegmenter):
        def predict(self, points):
            out = super().predict(points)
            return MaskPrediction(out.masks, out.scores * 0, out.stability)

    result = segment_image(np.zeros((40, 50, 3), np.uint8), None, torch.tensor([[3.5, 4.5]]), Nothing(),
                           MeanColourEncoder(), SegmentConfig(out=Path("unused")))
    assert result.features.shape == (0, 4) and (result.segments == -1).all() and result.segments.shape == (4, 40, 50)


def _blind_reader(path: str) -> tuple[str, None]:
    """A node that does not see the output folder (its storage is not shared)."""
    import ray

    return ray.util.get_node_ip_address(), None


def test_ray_says_which_nodes_do_not_see_the_output_folder(tmp_path, ray_head):
    import ray

    from gags.cluster import check_shared_storage, connect

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with connect(ray_head) as connected:
        assert check_shared_storage(connected, tmp_path) == 1  # the one node of the test cluster reads the probe
        with pytest.raises(GagsError, match=r"1 of 1 Ray nodes \(.+\) do not see .+ storage every node mounts"):
            check_shared_storage(connected, tmp_path, reader=_blind_reader)
    assert not list(tmp_path.glob(".ray-probe-*"))


class CannotStart(ImageWorker):
    """An actor whose models cannot load on its node."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("no such checkpoint on this node")


def test_ray_worker_that_cannot_start_is_one_clear_error(scene_out, encoder_dir, tmp_path, ray_head):
    import ray

    from gags.cluster import connect
    from gags.segment.parallel import ray_images

    out = fresh_out(scene_out, tmp_path / "ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with connect(ray_head), pytest.raises(GagsError, match="lost for good .*no such checkpoint on this node"):
        list(ray_images(config_for(out, encoder_dir, ray=ray_head), [0, 1], worker_class=CannotStart))


# ----------------------------------------------------------------------------------------------------------------------
# --segmenter exact: the scene's own entities


def test_exact_language_features_are_the_entities_of_each_level():
    ids = -np.ones((3, 12, 10), np.int64)
    ids[2, 2:10, 1:9] = 7  # a whole
    ids[1, 2:10, 1:5], ids[1, 2:10, 5:9] = 3, 4  # its two parts
    ids[0, 3:6, 2:4] = 11  # one sub-part inside part 3
    rgb = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    enc = MeanColourEncoder()
    features, segments = exact_language_features(ids, rgb, enc)
    assert segments.dtype == np.int32 and segments.shape == (4, 12, 10) and features.dtype == np.float16
    assert len(features) == enc.seen == 4  # one row per entity: 1 sub-part, 2 parts, 1 whole
    for level in range(3):
        seg = segments[level + 1]
        assert np.array_equal(seg >= 0, ids[level] >= 0)
        for entity in np.unique(ids[level][ids[level] >= 0]):
            rows = np.unique(seg[ids[level] == entity])
            assert len(rows) == 1  # one entity, one segment, encoded from its own mask
            expected = enc.encode_images(crop_masks(rgb, torch.from_numpy(ids[level] == entity)[None],
                                                    enc.input_size))
            assert np.allclose(features[rows[0]].astype(np.float32), expected[0].numpy(), atol=1e-3)
    # default: the smallest entity at each pixel, as the stage paints all granularities larger first
    smallest = np.where(segments[1] >= 0, segments[1], np.where(segments[2] >= 0, segments[2], segments[3]))
    assert np.array_equal(segments[0], smallest)


def test_exact_segmenter_runs_the_stage_without_prompts(scene_out, encoder_dir, tmp_path):
    from gags.data import load_scene_json
    from gags.synth.scenes import ids_dir

    out = fresh_out(scene_out, tmp_path)
    summary = extract.run(config_for(out, encoder_dir, segmenter="exact", workers=2))
    scene = load_scene_json(out)
    assert summary["images"] == len(scene) and summary["points_per_image"] == 0
    for name in scene.names:
        ids = np.load(ids_dir(scene.root) / f"{feature_stem(name)}.npy")
        feats, seg = np.load(feature_paths(out / "language_features", name)[0]), np.load(
            feature_paths(out / "language_features", name)[1])
        assert np.array_equal(seg[1:] >= 0, ids >= 0)
        assert len(feats) == sum(len(np.unique(level[level >= 0])) for level in ids)
    assert not (out / "prompts").exists() and not (out / "segment" / "depth").exists()
    record = json.loads((out / "segment" / "config.json").read_text())["settings"]
    assert record["segmenter"] == "exact" and record["segmenter_weights"] is None
    # the same command resumes; another segmenter on the same folder refuses to mix
    assert extract.run(config_for(out, encoder_dir, segmenter="exact"))["images"] == 0
    with pytest.raises(GagsError, match="other settings"):
        extract.run(config_for(out, encoder_dir))


def test_exact_segmenter_needs_a_synthetic_scene(scene_out, encoder_dir, tmp_path):
    from gags.data import load_scene, save_scene_json
    from gags.models import load_segmenter
    from gags.synth.scenes import ids_dir

    photos = Path(shutil.copytree(scene_out.parent / "synth", tmp_path / "photos"))
    shutil.rmtree(ids_dir(photos))  # the same scene without its entity ids, as any scene of photos
    out = tmp_path / "out"
    save_scene_json(load_scene(photos), out)
    shutil.copy(scene_out / "gaussians.ply", out / "gaussians.ply")
    for segmenter in ("exact", "oracle"):
        with pytest.raises(GagsError, match=f"--segmenter {segmenter} needs a scene made by gags synth"):
            extract.run(config_for(out, encoder_dir, segmenter=segmenter))
    assert not (out / "language_features").exists()
    with pytest.raises(GagsError, match="not a promptable segmenter"):
        load_segmenter("exact")


def test_the_oracle_answers_a_point_with_the_entities_that_contain_it():
    from gags.models import load_segmenter

    ids = -np.ones((3, 12, 10), np.int64)
    ids[2, 2:10, 1:9] = 7
    ids[1, 2:10, 1:5], ids[1, 2:10, 5:9] = 3, 4
    ids[0, 3:6, 2:4] = 11
    oracle = load_segmenter("oracle")
    with pytest.raises(GagsError, match="set_ids"):
        oracle.set_image(np.zeros((12, 10, 3), np.uint8))
    oracle.set_ids(ids)
    oracle.set_image(np.zeros((12, 10, 3), np.uint8))
    # pixel (row 4, col 3) is in all three; (row 8, col 6) in part 4 and the whole only; (row 0, col 0) in nothing
    masks, scores, stability = oracle.predict(np.array([[3.5, 4.5], [6.2, 8.9], [0.5, 0.5]]))
    assert masks.shape == (3, 3, 12, 10)
    for level, entity in enumerate((11, 3, 7)):
        assert torch.equal(masks[0, level], torch.from_numpy(ids[level] == entity))
    assert not masks[1, 0].any() and torch.equal(masks[1, 1], torch.from_numpy(ids[1] == 4))
    assert not masks[2].any()
    assert scores.tolist() == stability.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 0]]


def test_the_oracle_through_the_stage_keeps_whole_entities(scene_out, encoder_dir, tmp_path):
    """A perfect promptable segmenter through the stage's prompts and filters (no small-region step): every segment
    of a level is one whole entity of that level."""
    from gags.data import load_scene_json
    from gags.synth.scenes import ids_dir

    out = fresh_out(scene_out, tmp_path)
    extract.run(config_for(out, encoder_dir, segmenter="oracle", min_region_area=0))
    scene = load_scene_json(out)
    entities = 0
    for name in scene.names:
        ids = np.load(ids_dir(scene.root) / f"{feature_stem(name)}.npy")
        seg = np.load(feature_paths(out / "language_features", name)[1])
        assert (out / "prompts" / f"{feature_stem(name)}.npy").is_file()
        for level in range(3):
            for row in np.unique(seg[level + 1][seg[level + 1] >= 0]):
                where = seg[level + 1] == row
                entity = np.unique(ids[level][where])
                assert len(entity) == 1 and entity[0] >= 0
                assert np.array_equal(where, ids[level] == entity[0])
                entities += 1
    assert entities > 3 * len(scene.names)
