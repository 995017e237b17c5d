"""``gags demo``: every stage on a procedural scene with the embedded models, on a CPU.

synth -> reconstruct -> segment -> distill (gags + baselines) -> eval -> ladder (``gags bench ladder``: where the
quality of queries is lost, rung by rung). Each stage writes into the same output folder
and resumes by itself; a stage whose final artifact exists is skipped, so re-running the command after an interruption
continues where it stopped. Time per stage goes to ``Workspace.demo_json``. Last, the report (``gags.report``) is
written again on every run: it is cheap and shows what the stages did.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from gags.bench.provenance import provenance
from gags.config import (
    BenchLadderConfig,
    DemoConfig,
    DistillConfig,
    EvalConfig,
    ReconstructConfig,
    SegmentConfig,
    SynthConfig,
)
from gags.errors import GagsError
from gags.io import ensure_dir, read_json, write_json
from gags.methods import BASELINES, METHODS
from gags.pipeline import Step, run_steps
from gags.report import write_report
from gags.synth.scenes import transforms_path
from gags.workspace import Workspace


def _steps(config: DemoConfig) -> list[Step]:
    from gags.bench.ladder import RESULT_NAME as LADDER
    from gags.bench.ladder import run as ladder
    from gags.distill.train import run as distill
    from gags.query.evaluate import run as evaluate
    from gags.segment.extract import run as segment
    from gags.splat.reconstruct import run as reconstruct
    from gags.synth.scenes import run as synth

    out = Path(config.out)
    ws = Workspace(out)
    scene = ws.synth_scene
    methods = ("gags", *config.baselines)
    steps = [
        Step("synth", transforms_path(scene),
             lambda: synth(SynthConfig(out=scene, preset=config.preset, seed=config.seed,
                                       resolution=config.resolution, views=config.views))),
        Step("reconstruct", ws.reconstruct_metrics,
             lambda: reconstruct(ReconstructConfig(scene=scene, out=out, iterations=config.reconstruct_iterations,
                                                   max_gaussians=config.max_gaussians))),
        Step("segment", ws.segment_timings,
             lambda: segment(SegmentConfig(out=out, segmenter=config.segmenter, encoder=config.encoder))),
    ]
    for method in methods:
        distill_config = DistillConfig(out=out, method=method, encoder=config.encoder,
                                       iterations=config.distill_iterations,
                                       init=config.distill_init if METHODS[method].build == "distill" else None)
        steps.append(Step(f"distill {method}", ws.field_file(method), functools.partial(distill, distill_config)))
    for method in methods:
        steps.append(Step(f"eval {method}", ws.eval_metrics(method, "test"),
                          functools.partial(evaluate, EvalConfig(out=out, method=method, split="all"))))
    steps.append(Step("ladder", ws.bench_file(LADDER), functools.partial(ladder, BenchLadderConfig(
        out=out, encoder=config.encoder))))
    return steps


def run(config: DemoConfig) -> dict[str, Any]:
    """Run every stage that is not done yet; print and return the headline metrics."""
    unknown = set(config.baselines) - set(BASELINES)
    if unknown:
        raise GagsError(f"unknown baseline(s) {sorted(unknown)}; choose among {', '.join(BASELINES)}.")
    out = ensure_dir(Path(config.out))
    timings_path = Workspace(out).demo_json
    _drop_stale_ladder(Workspace(out), ("gags", *config.baselines))
    timings = run_steps(_steps(config), timings_path).seconds

    summary = headline(out, ("gags", *config.baselines))
    write_json(timings_path, {"seconds": timings, "total_seconds": round(sum(timings.values()), 2), **summary,
                              "segmenter": config.segmenter, "preset": config.preset, "seed": config.seed,
                              "provenance": provenance()})
    print("report ...", flush=True)
    report = write_report(out)
    _print_summary(out, summary)
    print(f"Report: {report}")
    return summary


def _drop_stale_ladder(ws: Workspace, methods: tuple[str, ...]) -> None:
    """Remove a ladder measured before one of ``methods`` had a field (a rerun with more --baselines), so that its
    step runs again instead of being found done."""
    from gags.bench.ladder import RESULT_NAME as LADDER

    path = ws.bench_file(LADDER)
    if path.is_file() and not set(methods) <= set(read_json(path).get("methods", [])):
        path.unlink()


def headline(out: Path, methods: tuple[str, ...]) -> dict[str, Any]:
    """The figures a user looks at first: held-out PSNR and, per method and split, mIoU and localization accuracy."""
    ws = Workspace(out)
    rec = read_json(ws.reconstruct_metrics)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        for split in ("train", "test"):
            path = ws.eval_metrics(method, split)
            if path.is_file():
                metrics = read_json(path)
                results.setdefault(method, {})[split] = {"miou": metrics["miou"], "loc_acc": metrics["loc_acc"]}
    return {"psnr": rec["psnr"], "num_gaussians": rec["num_gaussians"], "eval": results}


def markdown(record: dict[str, Any]) -> str:
    """``demo.json`` as Markdown: mIoU and localization per method and split, then the time per stage."""
    lines = ["| method | training views: mIoU | loc. acc. | held-out views: mIoU | loc. acc. |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for method, splits in record["eval"].items():
        cells = [f"{100 * splits[s][k]:.1f}%" if s in splits else "-" for s in ("train", "test")
                 for k in ("miou", "loc_acc")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in record["seconds"].items())
    total = record["total_seconds"]
    lines += ["", f"Held-out PSNR {record['psnr']:.1f} dB with {record['num_gaussians']:,} Gaussians; segmenter "
              f"`{record.get('segmenter', 'hierarchy')}`. Time per stage: {stages}; "
              f"{int(total // 60)} min {total % 60:.0f} s in all."]
    return "\n".join(lines)


def spread_markdown(records: list[dict[str, Any]]) -> str:
    """Several ``demo.json`` records (one per ``--seed``) as Markdown: per method and split the mean, minimum and
    maximum of mIoU and localization over the runs, then the range of the total time."""
    if not records:
        raise ValueError("no demo record")
    lines = ["| method | training views: mIoU | loc. acc. | held-out views: mIoU | loc. acc. |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for method in records[0]["eval"]:
        cells = []
        for split in ("train", "test"):
            for key in ("miou", "loc_acc"):
                values = [100 * r["eval"][method][split][key] for r in records
                          if split in r["eval"].get(method, {})]
                cells.append(f"{sum(values) / len(values):.1f}% ({min(values):.1f}-{max(values):.1f})" if values
                             else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    totals = [r["total_seconds"] for r in records]
    seeds = ", ".join(str(r.get("seed", "?")) for r in records)
    segmenters = ", ".join(f"`{s}`" for s in dict.fromkeys(r.get("segmenter", "hierarchy") for r in records))
    lines += ["", f"Mean (minimum-maximum) over {len(records)} runs (`--seed` {seeds}), segmenter {segmenters}. Time "
              f"in all: {min(totals) / 60:.1f}-{max(totals) / 60:.1f} min."]
    return "\n".join(lines)


def _print_summary(out: Path, summary: dict[str, Any]) -> None:
    print(f"\nRGB reconstruction: held-out PSNR {summary['psnr']:.2f} dB, {summary['num_gaussians']} Gaussians")
    width = max([len("method"), *(len(m) for m in summary["eval"])])
    print(f"{'method':<{width}} {'split':<6} {'mIoU':>7} {'loc acc':>8}")
    for method, splits in summary["eval"].items():
        for split, m in splits.items():
            print(f"{method:<{width}} {split:<6} {100 * m['miou']:>6.1f}% {100 * m['loc_acc']:>7.1f}%")
    print(f"\nEverything is in {out}")
