"""Does GaS make segments more consistent across views? ``gags segment`` with --prompts gags / paper / uniform on
procedural scenes, scored by ``gags.segment.consistency``.

Per preset: ``gags synth`` writes a small scene; its Gaussians are opaque isotropic ones at the scene's surface points
(no training: they render a depth within ~1-2% of the truth, which is all GaS uses); ``gags segment`` runs once per
prompt mode with the embedded hierarchy segmenter (the encoder does not affect the segments: the shipped tiny CLIP
when present, else random weights of its architecture). Each run is scored on the segment maps it wrote:

- multi-view consistency per level (default, s, m, l): carried with the rendered depth, pooled over overlapping pairs;
- purity / completeness of levels s, m, l against the true sub-parts, parts and wholes;
- segments per view, prompt points and masks per image, seconds per image.

The ground-truth ids carried with the same rendered depth give the ceiling that depth errors and resampling leave.

    gags bench segment-consistency [--out bench_out/segment_consistency] [--presets ramen teatime figurines]
        [--resolution 128] [--views 12] [--modes gags paper uniform] [--encoder SPEC] [--threads 1]

Writes OUT/segment_consistency.json and prints a table. Scenes and runs are kept in OUT and reused on a rerun.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.config import BenchConsistencyConfig, SegmentConfig, SynthConfig
from gags.data.features import feature_stem
from gags.io import write_json
from gags.levels import CODES
from gags.segment import extract
from gags.segment.consistency import (
    GT_LEVELS,
    evaluate_segment_outputs,
    multiview_consistency,
)
from gags.segment.prompts import PromptMode
from gags.synth.scenes import ids_dir
from gags.threads import scoped_torch_threads
from gags.workspace import Workspace

RESULT_JSON = "segment_consistency.json"
SCALE_CAP = 2.0
"""Gaussian scale = nearest-neighbour spacing of the surface points, capped at twice its median (sparse background
points would otherwise give huge Gaussians that blur depth edges and cost rendering time)."""
OPACITY = 0.99


def point_gaussians(scene, path: Path) -> None:
    """Write opaque isotropic Gaussians at the scene's surface points as a 3DGS PLY."""
    from gags.data import write_ply
    from gags.splat.gaussians import knn_rms_distance, rgb_to_sh

    points = torch.as_tensor(scene.points).float()
    colors = torch.as_tensor(scene.point_colors).float() / 255.0
    n = len(points)
    spacing = knn_rms_distance(points)
    scales = spacing.clamp(1e-4, SCALE_CAP * float(spacing.median())).log()[:, None].repeat(1, 3)
    write_ply(path, {"means": points, "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), "scales": scales,
                     "opacities": torch.full((n,), math.log(OPACITY / (1 - OPACITY))),
                     "sh0": rgb_to_sh(colors)[:, None], "shN": torch.zeros(n, 0, 3)})


def random_tiny_encoder(folder: Path) -> str:
    """An open_clip local-dir folder with random weights of the embedded tiny CLIP's architecture; returns its spec."""
    import open_clip
    from safetensors.torch import save_file

    from gags.models.train_tinyclip import MODEL_CFG, PREPROCESS_CFG

    if not (folder / "open_clip_model.safetensors").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG,
                                                                  "preprocess_cfg": PREPROCESS_CFG}))
        torch.manual_seed(0)
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
        save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
                  str(folder / "open_clip_model.safetensors"))
    return f"openclip:local-dir:{folder}"


def default_encoder(out: Path) -> tuple[str, str]:
    """(spec, description): the shipped tiny CLIP when present, else random weights of its architecture."""
    from gags.errors import GagsError
    from gags.models.specs import parse_encoder_spec

    try:
        parse_encoder_spec("tiny")
        return "tiny", "embedded tiny CLIP"
    except GagsError:
        return random_tiny_encoder(out / "tinyclip_random"), "random weights of the tiny CLIP architecture"


def prepare_scene(root: Path, preset: str, resolution: int, views: int, seed: int) -> Path:
    """A synthetic scene and a scene output folder on it (scene record and Gaussians); returns that folder."""
    from gags.data import load_scene, save_scene_json
    from gags.synth.scenes import run as synth

    scene_dir = root / "scene"
    base = root / "base"
    synth(SynthConfig(out=scene_dir, preset=preset, seed=seed, resolution=resolution, views=views))
    if not Workspace(base).gaussians_ply.is_file():
        scene = load_scene(scene_dir)
        save_scene_json(scene, base)
        point_gaussians(scene, Workspace(base).gaussians_ply)
    return base


def run_mode(base: Path, out: Path, mode: PromptMode, encoder: str, threads: int) -> dict[str, Any]:
    """``gags segment`` with --prompts mode into ``out`` (a copy of base; rendered depth shared between modes)."""
    out.mkdir(parents=True, exist_ok=True)
    a, b = Workspace(base), Workspace(out)
    for src, dst in ((a.scene_json, b.scene_json), (a.gaussians_ply, b.gaussians_ply), (a.points_ply, b.points_ply)):
        if src.is_file() and not dst.is_file():
            shutil.copy(src, dst)
    shared_depth = Workspace(base).depth_dir
    own_depth = Workspace(out).depth_dir
    if shared_depth.is_dir() and not own_depth.is_dir():
        shutil.copytree(shared_depth, own_depth)
    start = time.perf_counter()
    extract.run(SegmentConfig(out=out, prompts=mode, encoder=encoder, threads=threads))
    seconds = time.perf_counter() - start
    if not shared_depth.is_dir():
        shutil.copytree(own_depth, shared_depth)
    timings_path = Workspace(out).segment_timings
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    return {"seconds": seconds, "timings": timings}


def truth_consistency(base: Path, scene_dir: Path) -> dict:
    """Consistency of the true ids (sub-part, part, whole) carried with the same rendered depth: the ceiling."""
    from gags.data import load_scene_json

    scene = load_scene_json(base)
    depth_dir = Workspace(base).depth_dir
    stems = [feature_stem(n) for n in scene.names]
    depths = [torch.from_numpy(np.load(depth_dir / f"{s}.npy")) for s in stems]
    ids = [torch.from_numpy(np.load(ids_dir(scene_dir) / f"{s}.npy").astype(np.int64)) for s in stems]
    return multiview_consistency(ids, depths, scene.cameras, level_names=GT_LEVELS)


def run(config: BenchConsistencyConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    with scoped_torch_threads(config.threads):
        return _run(config)


def _run(config: BenchConsistencyConfig) -> dict[str, Any]:
    config.out.mkdir(parents=True, exist_ok=True)
    encoder, encoder_note = (config.encoder, config.encoder) if config.encoder else default_encoder(config.out)

    asked = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    results = {"settings": {**asked,
                            "encoder": encoder, "encoder_note": encoder_note, "segmenter": "hierarchy",
                            "machine": platform.platform(), "cpu_count": __import__("os").cpu_count()},
               "presets": {}}
    for preset in config.presets:
        root = config.out / preset
        base = prepare_scene(root, preset, config.resolution, config.views, config.seed)
        entry: dict = {"modes": {}}
        for mode in config.modes:
            run = run_mode(base, root / mode, mode, encoder, config.threads)
            score = evaluate_segment_outputs(root / mode, ids_dir(root / "scene"))
            t = run["timings"]
            entry["modes"][mode] = {
                "consistency": score["consistency"],
                "purity": {f"{lv}/{gt}": score["purity"][f"{lv}/{gt}"]
                           for lv, gt in zip(CODES, GT_LEVELS, strict=True)},
                "segments_per_view": score["segments_per_view"],
                "pairs": score["pairs"],
                "points_per_image": t.get("points_per_image"),
                "masks_per_image": t.get("masks_per_image"),
                "per_image_s": t.get("per_image_s"),
                "seconds": run["seconds"],
            }
            print(f"{preset:10s} {mode:8s} consistency " + " ".join(
                f"{k}={v:.3f}" for k, v in score["consistency"].items()) + "  purity/completeness " + " ".join(
                f"{k}={v['purity']:.3f}/{v['completeness']:.3f}" for k, v in entry["modes"][mode]["purity"].items()),
                flush=True)
        entry["truth"] = truth_consistency(base, root / "scene")
        results["presets"][preset] = entry
        write_json(config.out / RESULT_JSON, results)

    # summary: mean over presets
    summary: dict[str, Any] = {}
    for mode in config.modes:
        rows = [results["presets"][p]["modes"][mode] for p in config.presets]
        summary[mode] = {
            "consistency": {lv: float(np.mean([r["consistency"][lv] for r in rows if r["consistency"][lv] is not None]))
                            for lv in ("default", "s", "m", "l")},
            "purity": {k: float(np.mean([r["purity"][k]["purity"] for r in rows])) for k in rows[0]["purity"]},
            "completeness": {k: float(np.mean([r["purity"][k]["completeness"] for r in rows]))
                             for k in rows[0]["purity"]},
            "segments_per_view": {lv: float(np.mean([r["segments_per_view"][lv] for r in rows]))
                                  for lv in ("default", "s", "m", "l")},
            "points_per_image": float(np.mean([r["points_per_image"] or 0 for r in rows])),
        }
    summary["truth"] = {lv: float(np.mean([results["presets"][p]["truth"]["consistency"][lv] for p in config.presets]))
                        for lv in GT_LEVELS}
    results["mean_over_presets"] = summary
    write_json(config.out / RESULT_JSON, results)

    print(f"\nmean over {', '.join(config.presets)} ({config.resolution}x{config.resolution}, {config.views} "
          "training views; "
          f"segmenter hierarchy, encoder: {encoder_note})")
    print(f"{'prompts':8s} | {'consistency default/s/m/l':28s} | {'purity s/m/l':20s} | {'completeness s/m/l':20s} | "
          f"{'segments s/m/l':16s} | points")
    for mode in config.modes:
        r = summary[mode]
        c, pu, co, sg = r["consistency"], list(r["purity"].values()), list(r["completeness"].values()), r[
            "segments_per_view"]
        print(f"{mode:8s} | {c['default']:.3f} {c['s']:.3f} {c['m']:.3f} {c['l']:.3f}        | "
              f"{pu[0]:.3f} {pu[1]:.3f} {pu[2]:.3f}    | {co[0]:.3f} {co[1]:.3f} {co[2]:.3f}    | "
              f"{sg['s']:.0f} {sg['m']:.0f} {sg['l']:.1f}        | {r['points_per_image']:.0f}")
    t = summary["truth"]
    print(f"{'truth':8s} | ids carried with the same depth: sub-part {t['subpart']:.3f}, part {t['part']:.3f}, "
          f"whole {t['whole']:.3f}")
    print(f"wrote {config.out / RESULT_JSON}")
    return results
