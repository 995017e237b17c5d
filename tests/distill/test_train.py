"""``gags distill`` as a stage: inputs in LangSplat's format, every method's output, resume, user errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.cameras import Camera
from gags.config import DistillConfig
from gags.data import Scene, save_scene_json
from gags.data.features import read_language_features
from gags.data.ply import write_ply
from gags.distill import _reference as reference
from gags.distill import losses
from gags.distill.train import Schedule, checkpoint_info, default_schedule, pixel_losses, run
from gags.errors import GagsError
from gags.field import LanguageField
from gags.methods import TRAINED
from gags.workspace import CHECKPOINT as CHECKPOINT_FILE
from gags.workspace import CURVES_JSON, CURVES_PNG, FIELD_FILE
from tests.distill.flat_square import pixel_points, ring_cameras, segment_ids, square_gaussians
from tests.helpers import tiny_clip_cfg, write_random_clip

SIZE = 16
"""Image side of the constructed scene (pixels)."""
DIM = 32
"""Feature dimension (the random open_clip model of tests/conftest.py embeds in 32 dimensions)."""
N_VIEWS = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _seg_map(cam: Camera, scale: int) -> np.ndarray:
    """[4, S, S] LangSplat levels of the quadrants of the square [-1, 1]^2 seen by ``cam`` at ``scale`` x its size:
    s = 16 cells, m = 4 quadrants, l = 2 halves (indices into a 22-row _f), default = m; -1 off the square."""
    s, m, whole = segment_ids(pixel_points(cam, scale))
    levels = torch.stack([m + 16, s, m + 16, whole + 20])
    return torch.where(s >= 0, levels, torch.full_like(levels, -1)).numpy()


def make_out(root: Path, float_s: bool = True, feature_scale: int = 2) -> Path:
    """A scene output folder as other tools leave it: scene.json, gaussians.ply and LangSplat-format features (float
    ``_s`` at ``feature_scale`` x the image size, float16 ``_f``, no prompts/ folder), with one held-out view."""
    out = root / "out"
    cams = ring_cameras(N_VIEWS + 1, SIZE, "frame_{i:05d}.jpg")
    scene = Scene(root=root, source_format="transforms", cameras=cams,
                  image_paths=[root / c.name for c in cams], train_ids=list(range(N_VIEWS)), test_ids=[N_VIEWS])
    save_scene_json(scene, out)
    gaussians, _ = square_gaussians(12)
    n = len(gaussians)
    write_ply(out / "gaussians.ply", {
        "means": gaussians.means, "quats": gaussians.quats, "scales": gaussians.scales.log(),
        "opacities": torch.logit(gaussians.opacities), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)})
    folder = out / "language_features"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.standard_normal((22, DIM))
    for cam in cams:
        feats = base + 0.1 * rng.standard_normal((22, DIM))
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        seg = _seg_map(cam, feature_scale)
        stem = cam.name.split(".")[0]
        np.save(folder / f"{stem}_f.npy", feats.astype(np.float16))
        np.save(folder / f"{stem}_s.npy", seg.astype(np.float32) if float_s else seg.astype(np.int32))
    return out


def _config(out: Path, **kwargs) -> DistillConfig:
    defaults = {"iterations": 6, "downscale": 1.0, "checkpoint_every": 3, "ae_epochs": 2, "init": "zero"}
    return DistillConfig(out=out, **{**defaults, **kwargs})


# ---------------------------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(("mode", "normalize"), [("mix", False), ("mix", True), ("weighted-l2", False)])
def test_pixel_losses_equal_the_map_losses(mode, normalize):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(7, 5, generator=gen)  # [P, D]
    levels = torch.randn(3, 7, 5, generator=gen)
    g = torch.softmax(torch.randn(3, 7, generator=gen), 0)
    got = pixel_losses(pred, levels, g, mode, normalize)
    maps = levels.permute(0, 2, 1)[..., None]  # [3, D, P, 1]: a P x 1 image
    if mode == "weighted-l2":
        want = reference.weighted_l2_map(pred.T[..., None], maps, g[..., None])
    else:
        target = reference.mix_target(maps, g[..., None])
        if normalize:
            target = torch.nn.functional.normalize(target, dim=0)
        want = losses.l1_map(pred.T[..., None], target)
    torch.testing.assert_close(got, want[:, 0])


def test_gpu_schedule_is_the_release_and_the_cpu_one_starts_lifted_at_full_size_up_to_128_px():
    assert default_schedule(True, 1000, bfloat16=True) == Schedule(30_000, 2.0, "zero", region_aware=True,
                                                                   precision="float32")
    cpu = default_schedule(False, 128)
    assert cpu.iterations < 30_000 and cpu.downscale == 1.0 and cpu.init == "lift" and not cpu.region_aware
    assert cpu.precision == "float32" and default_schedule(False, 128, bfloat16=True).precision == "bfloat16"
    assert default_schedule(False, 60).downscale == 1.0  # never upsampled
    assert 960 / default_schedule(False, 960).downscale == pytest.approx(128)


def test_language_features_float_or_int_and_bad_files(tmp_path):
    out = make_out(tmp_path)
    folder = out / "language_features"
    f, s = read_language_features(folder, "frame_00000.jpg")
    assert f.dtype == np.float16 and f.shape == (22, DIM) and s.dtype == np.int32 and s.shape == (4, 32, 32)
    assert s.min() == -1 and s.max() == 21
    np.save(folder / "frame_00001_s.npy", np.load(folder / "frame_00001_s.npy") + 0.5)
    with pytest.raises(GagsError, match="non-integer"):
        read_language_features(folder, "frame_00001.jpg")
    np.save(folder / "frame_00002_s.npy", np.full((4, 8, 8), 22, np.int32))
    with pytest.raises(GagsError, match=r"indices in \[22, 22\].*22 rows"):
        read_language_features(folder, "frame_00002.jpg")
    (folder / "frame_00003_f.npy").unlink()
    with pytest.raises(GagsError, match="frame_00003_f.npy is missing"):
        read_language_features(folder, "frame_00003.jpg")


# --------------------------------------------------------------------------------------------------------------- stage


@pytest.mark.parametrize("method", [m for m in TRAINED if m != "n2f2"])
def test_every_method_writes_a_loadable_field(tmp_path, method):
    out = make_out(tmp_path)
    report = run(_config(out, method=method))
    stage = out / "field" / method
    field = LanguageField.load(stage / FIELD_FILE)
    n = 12 * 12
    assert field.method == method and field.features.shape[0] == n
    decoded = field.decode_features(field.features)
    assert decoded.shape == (n, 3 if method in ("langsplat", "langsplat-v2") else 1, DIM)
    torch.testing.assert_close(decoded.norm(dim=-1), torch.ones(decoded.shape[:2]))
    if method == "langsplat-v2":  # sparse coefficients: top-4 of 64 per level, summing to 1
        codes = field.features.float().reshape(n, 3, 64)
        assert ((codes > 0).sum(-1) == 4).all()
        torch.testing.assert_close(codes.sum(-1), torch.ones(n, 3), atol=2e-3, rtol=0)  # float16 storage
        assert field.sparse is not None and field.sparse.codebooks.shape == (3, 64, DIM)
    else:
        assert field.features.abs().sum() > 0  # trained: zeros at the start
    assert (field.granularity_decoder is not None) == (method == "gags")
    assert field.config["method"] == method and field.config["iterations"] == 6
    curves = json.loads((stage / CURVES_JSON).read_text())
    assert curves["iterations"] == 6 == report["iterations"] and len(curves["history"]) == 6
    assert curves["resolution"] == [SIZE, SIZE] and curves["num_views"] == N_VIEWS
    assert all(math.isfinite(h["loss"]) for h in curves["history"])
    assert (stage / CURVES_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert checkpoint_info(stage / CHECKPOINT_FILE)["step"] == 6


def test_n2f2_fuses_the_levels_with_the_encoders_phrases(tmp_path, encoder_dir):
    out = make_out(tmp_path)
    run(_config(out, method="n2f2", encoder=f"openclip:local-dir:{encoder_dir}"))
    field = LanguageField.load(out / "field" / "n2f2" / FIELD_FILE)
    assert field.features.shape == (144, 16) and field.feature_decoder is not None
    weights = field.config["n2f2_mean_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1.0) < 1e-5
    assert field.config["n2f2_phrases"] == ["object", "thing", "stuff", "part", "texture"]


def test_n2f2_refuses_an_encoder_of_another_dimension(tmp_path):
    pytest.importorskip("open_clip")
    out = make_out(tmp_path)
    write_random_clip(tmp_path / "clip24", tiny_clip_cfg(embed_dim=24))
    with pytest.raises(GagsError, match="embeds text in 24 dimensions"):
        run(_config(out, method="n2f2", encoder=f"openclip:local-dir:{tmp_path / 'clip24'}"))


def test_integer_and_float_segment_maps_give_the_same_field(tmp_path):
    a = run(_config(make_out(tmp_path / "a", float_s=True), iterations=3))
    b = run(_config(make_out(tmp_path / "b", float_s=False), iterations=3))
    fa = LanguageField.load(tmp_path / "a" / "out" / "field" / "gags" / FIELD_FILE)
    fb = LanguageField.load(tmp_path / "b" / "out" / "field" / "gags" / FIELD_FILE)
    torch.testing.assert_close(fa.features, fb.features)
    assert a["final"]["loss"] == b["final"]["loss"]


@pytest.mark.parametrize("method", ["gags", "langsplat-v2"])
def test_a_stopped_run_continues_from_its_checkpoint_as_if_never_stopped(tmp_path, monkeypatch, capsys, method):
    from gags.distill import train

    ref_out = make_out(tmp_path / "b")
    run(_config(ref_out, iterations=8, checkpoint_every=3, method=method))
    out = make_out(tmp_path / "a")
    real_render, calls = train.render_features, []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # stopped during iteration 5: the checkpoint of iteration 3 stays
        return real_render(*args, **kwargs)

    monkeypatch.setattr(train, "render_features", failing_render)
    with pytest.raises(KeyboardInterrupt):
        run(_config(out, iterations=8, checkpoint_every=3, method=method))
    monkeypatch.setattr(train, "render_features", real_render)
    assert checkpoint_info(out / "field" / method / CHECKPOINT_FILE)["step"] == 3
    report = run(_config(out, iterations=8, checkpoint_every=3, method=method))
    assert f"resuming {method} from iteration 3" in capsys.readouterr().out
    assert report["resumed_from"] == 3 and report["session_iterations"] == 5
    resumed = LanguageField.load(out / "field" / method / FIELD_FILE)
    straight = LanguageField.load(ref_out / "field" / method / FIELD_FILE)
    torch.testing.assert_close(resumed.features, straight.features, rtol=0, atol=0)
    reader = "feature_decoder" if method == "gags" else "sparse"
    for a, b in zip(getattr(resumed, reader).state_dict().values(), getattr(straight, reader).state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ref_curves = json.loads((ref_out / "field" / method / CURVES_JSON).read_text())["history"]
    curves = json.loads((out / "field" / method / CURVES_JSON).read_text())["history"]
    assert [h["loss"] for h in curves] == [h["loss"] for h in ref_curves]


def test_changed_settings_are_refused_and_no_resume_starts_over(tmp_path):
    out = make_out(tmp_path)
    run(_config(out, iterations=4))  # on a CPU the loss is averaged over pixels by default
    with pytest.raises(GagsError, match="other settings"):
        run(_config(out, iterations=4, region_aware=True))
    run(_config(out, iterations=4, region_aware=False))  # the default spelt out: the same settings, continued
    report = run(_config(out, iterations=4, region_aware=True, resume=False))
    assert report["resumed_from"] is None and report["iterations"] == 4
    again = run(_config(out, iterations=4, region_aware=True))  # finished: resumes at the end, rewrites outputs
    assert again["resumed_from"] == 4 and again["session_iterations"] == 0


def test_missing_inputs_are_gags_errors(tmp_path):
    with pytest.raises(GagsError, match="scene.json"):
        run(_config(tmp_path))
    out = make_out(tmp_path)
    for stem in ("frame_00001_f", "frame_00001_s"):
        (out / "language_features" / f"{stem}.npy").unlink()
    with pytest.raises(GagsError, match="frame_00001_f.npy is missing"):
        run(_config(out))
    (out / "gaussians.ply").unlink()
    with pytest.raises(GagsError, match="gaussians.ply"):
        run(_config(out))


def test_held_out_views_need_no_features(tmp_path):
    out = make_out(tmp_path)
    for suffix in ("f", "s"):
        (out / "language_features" / f"frame_{N_VIEWS:05d}_{suffix}.npy").unlink()
    assert run(_config(out, iterations=2))["num_views"] == N_VIEWS


# ---------------------------------------------------------------------------------------------------------------- kill


def _cli(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gags", "distill", str(out), "--iterations", "400", "--downscale", "1", "--init", "zero",
            "--checkpoint-every", "10", *args]


@pytest.mark.slow
def test_kill_9_then_the_same_command_continues_from_the_last_checkpoint(tmp_path):
    out = make_out(tmp_path / "a")
    ckpt = out / "field" / "gags" / CHECKPOINT_FILE
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 600
        step = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if ckpt.is_file():
                try:
                    step = checkpoint_info(ckpt)["step"]
                except GagsError:  # being replaced this very moment
                    continue
                if step >= 20:
                    break
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = checkpoint_info(ckpt)["step"]
    assert 20 <= killed_at < 400 and killed_at % 10 == 0
    assert not (out / "field" / "gags" / FIELD_FILE).exists()
    done = subprocess.run(_cli(out), check=False, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming gags from iteration {killed_at}" in done.stdout
    curves = json.loads((out / "field" / "gags" / CURVES_JSON).read_text())
    assert curves["iterations"] == 400 and curves["resumed_from"] == killed_at
    assert curves["session_iterations"] == 400 - killed_at
    # the same as a run that was never interrupted (same machine, same thread count)
    ref = make_out(tmp_path / "b")
    subprocess.run(_cli(ref), capture_output=True, text=True, env=env, timeout=1200, check=True)
    resumed = LanguageField.load(out / "field" / "gags" / FIELD_FILE)
    straight = LanguageField.load(ref / "field" / "gags" / FIELD_FILE)
    torch.testing.assert_close(resumed.features, straight.features, rtol=1e-5, atol=1e-6)


def test_bfloat16_decoders_train_close_to_float32_and_are_a_setting_of_the_run(tmp_path):
    """--precision bfloat16 runs the decoders' products in bfloat16 (weights and the field stay float32): the field
    trains to nearly the same loss, the config records it, and a float32 run is refused on its checkpoint."""
    from gags.field import FeatureDecoder, decoder_precision

    decoder = FeatureDecoder(16, out_dim=32)
    x = torch.randn(8, 16)
    with decoder_precision("bfloat16", x.device):
        low = decoder.layers[0](x[:, :, None, None])
    with decoder_precision("float32", x.device):
        full = decoder.layers[0](x[:, :, None, None])
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.02)

    out = make_out(tmp_path)
    reference = run(_config(make_out(tmp_path / "ref"), iterations=6, precision="float32"))
    report = run(_config(out, iterations=6, precision="bfloat16"))
    field = LanguageField.load(out / "field" / "gags" / FIELD_FILE)
    assert field.config["precision"] == "bfloat16" and field.features.dtype == torch.float32
    assert report["final"]["loss"] == pytest.approx(reference["final"]["loss"], rel=0.05)
    with pytest.raises(GagsError, match="other settings"):
        run(_config(out, iterations=6, precision="float32"))


def test_a_checkpoint_from_before_precision_was_recorded_resumes_as_float32(tmp_path):
    from gags.distill.train import CHECKPOINT_KIND
    from gags.training import load_checkpoint, save_checkpoint

    out = make_out(tmp_path)
    run(_config(out, iterations=4, checkpoint_every=2, precision="float32"))
    path = out / "field" / "gags" / CHECKPOINT_FILE
    ckpt = load_checkpoint(path, CHECKPOINT_KIND)
    del ckpt.info["settings"]["precision"]
    save_checkpoint(path, CHECKPOINT_KIND, ckpt)
    report = run(_config(out, iterations=4, checkpoint_every=2, precision="float32"))  # finished: resumes at the end
    assert report["resumed_from"] == 4
    with pytest.raises(GagsError, match="other settings"):
        run(_config(out, iterations=4, checkpoint_every=2, precision="bfloat16"))
