"""Nothing lost, nothing stale, one writer per stage: ``--overwrite`` keeps the previous outputs until the new ones
exist, fields remember the Gaussians and features they were made from, a second writer of a stage is refused, an
empty Gaussian PLY is refused, and options out of range are refused before anything is written."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.cli import main
from gags.config import DistillConfig, EvalConfig, SegmentConfig
from gags.data import write_ply
from gags.errors import GagsError
from gags.segment import extract
from gags.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def demo_copy(demo_run, tmp_path) -> Path:
    """A copy of the session's miniature demo: scene, Gaussians, features, gags and avg fields."""
    return Path(shutil.copytree(demo_run[0], tmp_path / "demo"))


def _segment_config(out: Path, encoder_dir: Path, **kwargs) -> SegmentConfig:
    return SegmentConfig(out=out, encoder=f"openclip:local-dir:{encoder_dir}", threads=1, **kwargs)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", [{"encoder": "tinyy"}, {"segmenter": "sam:vit_q"}, {"patch_grid": 0},
                                 {"pred_iou_thresh": math.nan}, {"features": Path("/nonexistent")}])
def test_overwrite_with_a_bad_option_loses_nothing(demo_copy, encoder_dir, bad):
    ws = Workspace(demo_copy)
    before = {p: _snapshot(p) for p in ws.segment_outputs}
    config = dataclasses.replace(_segment_config(demo_copy, encoder_dir, overwrite=True), **bad)
    with pytest.raises(GagsError):
        extract.run(config)
    assert {p: _snapshot(p) for p in ws.segment_outputs} == before


def test_a_failed_overwrite_puts_the_previous_outputs_back(demo_copy, encoder_dir, monkeypatch):
    ws = Workspace(demo_copy)
    before = {p: _snapshot(p) for p in ws.segment_outputs}

    def broken(*args, **kwargs):
        raise RuntimeError("the segmenter failed half-way")

    monkeypatch.setattr("gags.segment.parallel.segment_image", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        extract.run(_segment_config(demo_copy, encoder_dir, overwrite=True, prompts="uniform"))
    assert {p: _snapshot(p) for p in ws.segment_outputs} == before
    assert not list(demo_copy.glob(".replaced-*"))
    monkeypatch.undo()
    summary = extract.run(_segment_config(demo_copy, encoder_dir, overwrite=True, prompts="uniform"))
    assert summary["images"] > 0 and not list(demo_copy.glob(".replaced-*"))
    assert ws.segment_settings()["prompts"] == "uniform"


def test_a_killed_overwrite_keeps_the_last_complete_outputs(tmp_path):
    """A replacing run killed in the middle leaves the previous outputs aside; the next one keeps them aside (they
    are the last complete ones) and drops the killed run's partial outputs."""
    ws = Workspace(tmp_path)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "a.npy").write_text("complete")
    with pytest.raises(KeyboardInterrupt), ws.replacing("segment", [ws.prompts_dir]):
        (tmp_path / "prompts").mkdir()
        (tmp_path / "prompts" / "b.npy").write_text("partial")
        raise KeyboardInterrupt
    assert (tmp_path / "prompts" / "a.npy").read_text() == "complete"  # an interrupt puts them back at once
    backup = tmp_path / ".replaced-segment"
    backup.mkdir()  # as after kill -9: the previous outputs are in the backup, partial new ones in place
    (tmp_path / "prompts").rename(backup / "prompts")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "c.npy").write_text("partial")
    with pytest.raises(RuntimeError), ws.replacing("segment", [ws.prompts_dir]):
        assert not (tmp_path / "prompts").exists()  # the partial outputs are gone, the complete ones kept aside
        raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["a.npy"]


def test_a_field_of_other_inputs_is_refused(demo_copy):
    from gags.query.render import load_field

    ws = Workspace(demo_copy)
    load_field(demo_copy, "gags")  # made from these inputs
    splats = ws.read_gaussians()
    splats["means"] = splats["means"] + 0.01  # other Gaussians, the same count
    write_ply(ws.gaussians_ply, splats)
    with pytest.raises(GagsError, match="made from other Gaussians.*--no-resume"):
        load_field(demo_copy, "gags")
    with pytest.raises(GagsError, match="made from other Gaussians"):
        from gags.query.evaluate import run as evaluate

        evaluate(EvalConfig(out=demo_copy, method="gags", figures=False))
    # distilling again from the checkpoint of other inputs is refused too; --no-resume makes it again
    with pytest.raises(GagsError, match="other Gaussians or other language features.*--no-resume"):
        from gags.distill.train import run as distill

        distill(DistillConfig(out=demo_copy, method="gags", iterations=12))


def test_resegmented_features_make_the_fields_stale(demo_copy, encoder_dir):
    from gags.query.render import load_field

    extract.run(_segment_config(demo_copy, encoder_dir, overwrite=True, prompts="uniform"))
    with pytest.raises(GagsError, match="other language features"):
        load_field(demo_copy, "avg")


def test_one_writer_per_stage(demo_copy, encoder_dir, capsys):
    ws = Workspace(demo_copy)
    with ws.lock("segment"):
        with pytest.raises(GagsError, match="`gags segment` is already writing"):
            extract.run(_segment_config(demo_copy, encoder_dir))
        assert main(["segment", str(demo_copy), "--encoder", f"openclip:local-dir:{encoder_dir}"]) == 1
        assert "already writing" in capsys.readouterr().err
    with ws.lock("distill-avg", "gags distill --method avg"):
        with pytest.raises(GagsError, match="gags distill --method avg"):
            from gags.distill.train import run as distill

            distill(DistillConfig(out=demo_copy, method="avg", iterations=12))
    extract.run(_segment_config(demo_copy, encoder_dir))  # released: runs (everything is done already)


def test_an_empty_gaussian_ply_is_refused(demo_copy, encoder_dir):
    ws = Workspace(demo_copy)
    empty = {"means": torch.zeros(0, 3), "quats": torch.zeros(0, 4), "scales": torch.zeros(0, 3),
             "opacities": torch.zeros(0), "sh0": torch.zeros(0, 1, 3), "shN": torch.zeros(0, 0, 3)}
    write_ply(ws.gaussians_ply, empty)
    from gags.distill.train import run as distill

    with pytest.raises(GagsError, match="holds no Gaussians"):
        extract.run(_segment_config(demo_copy, encoder_dir, overwrite=True))
    assert all(p.exists() for p in ws.segment_outputs)  # refused before anything was replaced
    for method in ("gags", "lift"):
        with pytest.raises(GagsError, match="holds no Gaussians"):
            distill(DistillConfig(out=demo_copy, method=method, resume=False))


def test_reconstruct_writes_the_standard_ply_layout(tmp_path):
    """``--sh-degree 1`` trains one band but writes the 45 ``f_rest`` properties the official 3DGS loader asserts."""
    from plyfile import PlyData

    from gags.data import read_ply
    from tests.helpers import tiny_transforms_scene

    scene = tiny_transforms_scene(tmp_path / "scene", ["a.png", "b.png", "c.png"])
    assert main(["reconstruct", str(scene.parent), "--out", str(tmp_path / "out"), "--iterations", "3",
                 "--sh-degree", "1", "--test-every", "0"]) == 0
    props = [p.name for p in PlyData.read(str(tmp_path / "out" / "gaussians.ply"))["vertex"].properties]
    assert sum(name.startswith("f_rest_") for name in props) == 45
    assert torch.all(read_ply(tmp_path / "out" / "gaussians.ply")["shN"][:, 3:] == 0)


@pytest.mark.parametrize("argv, message", [
    (["reconstruct", "SCENE", "--sh-degree", "9"], "--sh-degree must be in"),
    (["reconstruct", "SCENE", "--threads", "-4"], "--threads"),
    (["reconstruct", "SCENE", "--test-every", "-1"], "--test-every"),
    (["distill", "OUT", "--downscale", "nan"], "--downscale must be a positive number"),
    (["distill", "OUT", "--feature-lr", "inf"], "--feature-lr must be a positive number"),
    (["segment", "OUT", "--patch-grid", "0"], "--patch-grid must be at least 1"),
    (["segment", "OUT", "--pred-iou-thresh", "nan"], "--pred-iou-thresh must be a number in"),
])
def test_options_out_of_range_are_refused_before_anything_runs(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "nothing") if a in ("SCENE", "OUT") else a for a in argv]
    if argv[0] == "reconstruct":
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    import errno

    from gags.io import write_json

    path = tmp_path / "record.json"
    write_json(path, {"old": 1})

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("gags.io.os.replace", full)
    with pytest.raises(GagsError, match="No space left on device.*Nothing already written was lost"):
        write_json(path, {"new": 2})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"old":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary file left


def test_overwrite_in_a_folder_that_refuses_changes_is_a_clear_error(demo_copy, encoder_dir, monkeypatch):
    ws = Workspace(demo_copy)
    before = {p: _snapshot(p) for p in ws.segment_outputs}
    calls = []

    def refuse(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the first output moved aside, then the folder refuses
            raise PermissionError(13, "Permission denied")
        return shutil.move(src, dst)

    monkeypatch.setattr("gags.workspace.os.replace", refuse)
    with pytest.raises(GagsError, match="cannot replace the segment outputs.*Permission denied.*nothing was changed"):
        extract.run(_segment_config(demo_copy, encoder_dir, overwrite=True))
    monkeypatch.undo()
    assert {p: _snapshot(p) for p in ws.segment_outputs} == before and not list(demo_copy.glob(".replaced-*"))


def test_names_of_queries_and_figures_are_unique():
    from gags.workspace import query_slug

    names = {query_slug(t) for t in ("Red cup", "red cup", "red-cup!", "杯子", "чашка", "")}
    assert len(names) == 6
    assert query_slug("Red cup").startswith("red-cup-") and query_slug("杯子").startswith("query-")
    assert query_slug("Red cup") == query_slug("Red cup")  # stable


def test_label_boxes_outside_the_image_are_clipped_or_refused(tmp_path):
    import json

    from gags.data.labels import read_frame_labels

    def write(bbox):
        label = {"info": {"name": "a.png", "width": 40, "height": 30},
                 "objects": [{"category": "cup", "segmentation": [[5, 5], [20, 5], [20, 20], [5, 20]],
                              "bbox": bbox}]}
        (tmp_path / "frame_00001.json").write_text(json.dumps(label))
        return read_frame_labels(tmp_path / "frame_00001.json")

    assert write([5, 5, 1e9, 20]).boxes["cup"].tolist() == [[5, 5, 40, 20]]
    with pytest.raises(GagsError, match="outside the 40x30 image"):
        write([500, 500, 900, 900])


def test_quoted_library_messages_are_one_clean_line():
    from gags.errors import one_line

    text = "\x1b[31mWeights only load failed.\x1b[0m\n\n  " + " ".join(f"word{i}" for i in range(100))
    line = one_line(text)
    assert "\x1b" not in line and "\n" not in line and line.endswith(" ...") and "word35 ..." in line
    assert "word36" not in line  # cut after whole words (40 of them)


def test_intrinsics_no_camera_has_are_refused_and_odd_ones_warned():
    from gags.data.colmap import check_intrinsics

    K = np.array([[0.0, 0, 10], [0, 0.0, 10], [0, 0, 1]])
    with pytest.raises(GagsError, match="must be positive"):
        check_intrinsics(K, None, 20, 20, "cameras.bin: camera 1")
    K = np.array([[100.0, 0, 10], [0, 280.0, 10], [0, 0, 1]])
    with pytest.warns(UserWarning, match="implausible calibration"):
        check_intrinsics(K, np.array([46.0, -3690.0, 0, 0]), 20, 20, "cameras.bin: camera 1")


def test_the_viewer_shows_a_query_as_plain_text_and_warns_when_public():
    from types import SimpleNamespace

    from gags.viewer.server import ViewerHandle, plain_text

    shown = plain_text("![x](http://example.com/a.png) <img src=x onerror=alert(1)>")
    assert "](" not in shown.replace("\\](", "") and "<" not in shown and "![" not in shown
    server = SimpleNamespace(get_port=lambda: 8080)
    local = ViewerHandle(server=server, renderer=None, config=SimpleNamespace(host="127.0.0.1"))
    public = ViewerHandle(server=server, renderer=None, config=SimpleNamespace(host="0.0.0.0"))
    assert not local.public and local.url == "http://localhost:8080"
    assert public.public and public.url == "http://0.0.0.0:8080"


def test_sigterm_stops_a_stage_like_ctrl_c(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import tiny_transforms_scene

    scene = tiny_transforms_scene(tmp_path / "scene", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gags", "reconstruct", str(scene.parent), "--out", str(out), "--iterations", "100000",
           "--checkpoint-every", "5", "--test-every", "0"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "reconstruct" / "checkpoint.safetensors").is_file():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err and "Fatal" not in err


def test_an_empty_images_bin_says_what_is_wrong(tmp_path):
    from tests.data.conftest import KITCHEN as KITCHEN_DIR

    if not KITCHEN_DIR.is_dir():
        pytest.skip(f"{KITCHEN_DIR} not found")
    scene = tmp_path / "kitchen"
    shutil.copytree(KITCHEN_DIR / "sparse", scene / "sparse")
    (scene / "images_8").symlink_to(KITCHEN_DIR / "images_8")
    (scene / "sparse" / "0" / "images.bin").write_bytes(b"")
    from gags.data import load_scene

    with pytest.raises(GagsError, match="entries missing from another.*images.bin") as err:
        load_scene(scene, images_dir="images_8")
    assert "unordered_map" not in str(err.value)


def test_a_refused_pickle_is_one_clean_line(tmp_path, capsys):
    """A checkpoint holding Python objects is refused by torch.load(weights_only=True) with a page of advice; the
    error quotes it on one line."""
    from gags.models.segmenters import load_state_dict

    path = tmp_path / "sam.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": SegmentConfig(out=tmp_path)}, path)
    with pytest.raises(GagsError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert message.startswith(f"cannot read checkpoint {path}") and "\n" not in message and "\x1b" not in message
    assert "weights_only=True" in message
