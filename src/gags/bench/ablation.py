"""``gags bench ablation``: every method and prompt mode over presets and seeds, as the GAGS paper's tables.

Per preset and seed, in ``OUT/PRESET/seedN/`` (stages chained with :mod:`gags.pipeline`: a step whose final artifact
exists is skipped, so an interrupted benchmark resumes where it stopped, and each stage resumes by itself)::

    scene/               gags synth --preset PRESET --seed N (the scene and its LERF-OVS labels)
    gas/                 gags reconstruct (once per preset and seed; every other folder shares its Gaussians),
                         gags segment --prompts gags (GaS: depth-aware prompts), gags distill / gags eval of --methods
    uniform/             gags segment --prompts uniform (LangSplat's 32x32 grid), distill / eval of --uniform-methods
    gas-VARIANT/         GaD with one switch off (--variants), on the features of gas/ (shared, not recomputed)

Shared inputs are symbolic links (the Gaussians, the scene's points and the language features) next to a copy of the
scene record (``gags.workspace.Workspace``). Seeds: the scene's seed is N; reconstruct, segment and distill run with
their default seed + N.

Results: ``OUT/ablation.json`` (settings, every run's figures with the path of its metrics.json, mean +- std over seeds
per row, preset and split, and the tables) and ``OUT/ablation.md``:

- Table 1 / Table 2 (layout of the paper's per-scene comparisons): localization accuracy / mIoU of every GaS method,
  one column per preset and split, plus the mean over presets;
- Table 4 (GaS and GaD ablation): uniform vs GaS prompts x averaged levels, one level, or GaD, over all presets;
- Table 6 (GaD's losses): region-aware loss, entropy and feature consistency switched off one at a time (every other
  row trains with the release's three losses, whatever ``gags distill``'s CPU default for the loss mean is);
- by query granularity: every row on the held-out views, queries grouped by what they name (whole objects, parts,
  sub-parts: the synthetic scene's queries), to see which granularity a method serves;
- GaD granularity: the mean level weights (s, m, l) GaD ends training with (its training curves), per preset and
  seed;
- paired per query: every row against GaS + GaD on the same (preset, seed, view, query), per split: the mean IoU
  difference, which of the two has the higher IoU and which alone localizes, with exact sign tests
  (:func:`paired_tests`). Means over seeds hide how often two methods answer the same query differently; the pairs
  show it.

A cell is ``mean +- std`` over seeds (sample standard deviation, n - 1; none with one seed), in percent. Over all
presets:
per seed, the mean over the presets, then mean +- std of those over seeds.

Time: a trained field costs what ``gags distill`` costs with the CPU default (a lifted start, then 200 iterations at
up to 128 px): at 128 px on one core about 1.5-2 minutes, so a (preset, seed) with 11 trained fields and their
evaluations takes about 20-25 minutes, and two run at once as Ray tasks on a 2-core machine (``--ray local``). Add
presets and seeds later: the same command with more of them reuses every finished run.

Scale: the segment stage's constants are the official release's, in pixels of ~1000 px frames; 64 px is far from that.
Both prompt modes reach every region of the embedded hierarchy segmenter at 64 px (GaS draws ~3,000 points per 64 x 64
image, the uniform grid 1,024), so they give the same masks there and the GaS axis of Table 4 is not exercised. The
release's --min-region-area 100, taken as pixels of a 64-px image, removes the whole-object masks of scenes whose
objects are smaller than 100 px (ramen at 64 px: the pixels covered at all three levels, the only ones GaD and the level
baselines train on, are 8 % of an image; teatime: 52 %); --min-region-area 1 covered more but traded them for specks
whose crops carry little (every method lost about half its mIoU on ramen at 64 px). ``gags segment`` now scales it to
the image by default (``gags.segment.masks.min_region_area_for``: 2 px at 128 px, none at 64 px); the recorded
``min_region_area`` of a run says which (``None``: scaled).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gags.bench.provenance import provenance
from gags.config import (
    BenchAblationConfig,
    DistillConfig,
    EvalConfig,
    ReconstructConfig,
    SegmentConfig,
    SynthConfig,
)
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, read_json, write_json
from gags.levels import CODES as GRANULARITY_NAMES
from gags.levels import NAMES
from gags.methods import METHOD_NAMES, METHODS
from gags.pipeline import Step, StepsResult, read_timings, run_steps
from gags.segment.prompts import PromptMode
from gags.synth.scenes import query_levels, transforms_path
from gags.threads import scoped_torch_threads
from gags.workspace import Workspace

RESULT_JSON = "ablation.json"
RESULT_MD = "ablation.md"
SETTINGS_FILE = "ablation_settings.json"
TIMINGS_FILE = "ablation_timings.json"
SPLITS = ("test", "train")
"""Held-out views first: the split users asked for; training views are LangSplat's protocol."""
METRICS = ("miou", "loc_acc")
QUERY_LEVELS = tuple(reversed(NAMES))
"""Granularity of the procedural world's queries (``gags.levels.NAMES``), coarse first."""
LEVEL_METRICS = tuple(f"{m}_{level}" for level in QUERY_LEVELS for m in METRICS)
"""Per-run figures over the queries of one granularity (e.g. ``miou_part``)."""
ALL_PRESETS = "all"
"""Column of the mean over presets."""

PROMPT_MODES: dict[str, PromptMode] = {"gas": "gags", "uniform": "uniform"}
"""Folder name -> ``gags segment --prompts`` value: GaS (the release's depth ratio) and LangSplat's uniform grid."""
VARIANTS: dict[str, dict[str, bool]] = {
    "no-region-aware": {"region_aware": False},
    "no-entropy": {"entropy": False},
    "no-consistency": {"consistency": False},
    "all-off": {"region_aware": False, "entropy": False, "consistency": False},
}
"""Table 6: GaD (method gags, GaS features) with DistillConfig switches off."""
SWITCHES = ("region_aware", "entropy", "consistency")
RESULT_SETTINGS = ("resolution", "views", "reconstruct_iterations", "max_gaussians", "distill_iterations",
                   "distill_init", "distill_cpu_defaults", "segmenter", "min_region_area", "encoder", "eval_downscale",
                   "protocol_min_side")
"""Settings that change the results: a benchmark folder holds runs of one set of them only."""
UNRECORDED_SETTINGS: dict[str, Any] = {"distill_cpu_defaults": {"iterations": 1000, "max_side": 40, "init": "zero"}}
"""What a result-changing setting was in folders made before it was recorded (``gags distill``'s CPU defaults until
``--init lift`` became one of them)."""


@dataclass(frozen=True)
class Row:
    """One row of the tables: a method distilled from one prompt mode's features, with DistillConfig switches.

    prompts: "gas" | "uniform"; variant: "" (the method as it is) or a key of ``VARIANTS`` (gags only).
    """

    prompts: str
    method: str
    variant: str = ""

    @property
    def key(self) -> str:
        return f"{self.prompts}/{self.method}" + (f"/{self.variant}" if self.variant else "")

    @property
    def folder(self) -> str:
        """The output folder of the row inside ``PRESET/seedN``."""
        return self.prompts + (f"-{self.variant}" if self.variant else "")

    def switches(self) -> dict[str, bool]:
        return {k: VARIANTS.get(self.variant, {}).get(k, True) for k in SWITCHES}

    def label(self) -> str:
        text = f"{'GaS' if self.prompts == 'gas' else 'uniform'} + {METHODS[self.method].label}"
        return text + (f", {self.variant}" if self.variant else "")


def plan_rows(config: BenchAblationConfig) -> list[Row]:
    """The rows the config asks for (GaS methods, uniform methods, GaD variants); GagsError on unknown names."""
    for name, values in (("--methods", config.methods), ("--uniform-methods", config.uniform_methods)):
        unknown = [m for m in values if m not in METHODS]
        if unknown:
            raise GagsError(f"{name}: unknown method(s) {unknown}; choose among {', '.join(METHOD_NAMES)}.")
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise GagsError(f"--variants: unknown variant(s) {unknown}; choose among {', '.join(VARIANTS)}.")
    rows = [Row("gas", m) for m in dict.fromkeys(config.methods)]
    rows += [Row("uniform", m) for m in dict.fromkeys(config.uniform_methods)]
    rows += [Row("gas", "gags", v) for v in dict.fromkeys(config.variants)]
    if not rows:
        raise GagsError("nothing to run: --methods, --uniform-methods and --variants are all empty.")
    return rows


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def seed_folder(out: Path, preset: str, seed: int) -> Path:
    return Path(out) / preset / f"seed{seed}"


def metrics_path(out: Path, preset: str, seed: int, row: Row, split: str) -> Path:
    """The metrics ``gags eval`` writes for one row of one (preset, seed) in OUT/PRESET/seedN/FOLDER."""
    return Workspace(seed_folder(out, preset, seed) / row.folder).eval_metrics(row.method, split)


# ----------------------------------------------------------------------------------------------------------------------
# the chain of stages


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` as a relative symbolic link (replacing an older link)."""
    if link.is_symlink():
        link.unlink()
    if link.exists():
        raise GagsError(f"{link} exists and is not a link to {target}; delete it, or use another --out.")
    link.symlink_to(os.path.relpath(target, link.parent))


def share_inputs(src: Path, dst: Path, features: bool) -> None:
    """Make ``dst`` a scene output folder on the same scene and Gaussians as ``src``: a copy of the scene record, links
    to the Gaussians and the scene's points and, with ``features``, to the language features (and the segment
    record)."""
    a, b = Workspace(src), Workspace(dst)
    ensure_dir(dst)
    with atomic_path(b.scene_json) as tmp:
        shutil.copyfile(a.scene_json, tmp)
    pairs = [(a.gaussians_ply, b.gaussians_ply), (a.points_ply, b.points_ply)]
    pairs += [(a.features_dir, b.features_dir)] if features else []
    for target, link in pairs:
        if target.exists():
            _link(target, link)
    if features and a.segment_config.is_file():
        ensure_dir(b.segment_dir)
        _link(a.segment_config, b.segment_config)


def _steps(config: BenchAblationConfig, out: Path, rows: Sequence[Row], encoder: str) -> list[Step]:
    """Every step of every (preset, seed) run, in order."""
    return [step for preset in config.presets for seed in range(config.seeds)
            for step in run_steps_of(config, out, rows, encoder, preset, seed)]


def run_steps_of(config: BenchAblationConfig, out: Path, rows: Sequence[Row], encoder: str, preset: str,
                 seed: int) -> list[Step]:
    """The steps of one (preset, seed) run, which shares nothing with the others (its own folder)."""
    from gags.distill.train import run as distill
    from gags.query.evaluate import run as evaluate
    from gags.segment.extract import run as segment
    from gags.splat.reconstruct import run as reconstruct
    from gags.synth.scenes import run as synth

    threads = config.threads
    steps: list[Step] = []
    root = seed_folder(out, preset, seed)
    scene, gas = root / "scene", root / "gas"
    tag = f"{preset}/seed{seed}"
    steps.append(Step(f"{tag} synth", transforms_path(scene), functools.partial(synth, SynthConfig(
        out=scene, preset=preset, seed=seed, resolution=config.resolution, views=config.views))))
    steps.append(Step(f"{tag} reconstruct", Workspace(gas).reconstruct_metrics,
                      functools.partial(reconstruct, ReconstructConfig(
                          scene=scene, out=gas, iterations=config.reconstruct_iterations,
                          max_gaussians=config.max_gaussians,
                          seed=_default(ReconstructConfig, "seed") + seed, threads=threads))))
    for mode in dict.fromkeys(r.prompts for r in rows):
        folder = root / mode

        def run_segment(f: Path = folder, m: str = mode, g: Path = gas, n: int = seed) -> None:
            if f != g:
                share_inputs(g, f, features=False)
            segment(SegmentConfig(out=f, segmenter=config.segmenter, encoder=encoder,
                                  prompts=PROMPT_MODES[m],
                                  seed=_default(SegmentConfig, "seed") + n, threads=threads,
                                  min_region_area=config.min_region_area))

        steps.append(Step(f"{tag} segment {mode}", Workspace(folder).segment_timings, run_segment))
    for row in rows:
        folder = root / row.folder

        def run_distill(f: Path = folder, r: Row = row, g: Path = gas, n: int = seed) -> None:
            if r.variant:
                share_inputs(g, f, features=True)
            switches = r.switches()
            distill(DistillConfig(out=f, method=r.method, iterations=config.distill_iterations,
                                  init=config.distill_init if METHODS[r.method].build == "distill" else None,
                                  encoder=encoder, seed=_default(DistillConfig, "seed") + n, threads=threads,
                                  region_aware=switches["region_aware"], entropy=switches["entropy"],
                                  consistency=switches["consistency"]))

        steps.append(Step(f"{tag} distill {row.key}", Workspace(folder).field_file(row.method),
                          run_distill))
        eval_config = EvalConfig(out=folder, method=row.method, split="all", encoder=encoder,
                                 downscale=config.eval_downscale, figures=config.figures,
                                 protocol_min_side=config.protocol_min_side)
        steps.append(Step(f"{tag} eval {row.key}", metrics_path(out, preset, seed, row, "test"),
                          functools.partial(_evaluate, evaluate, eval_config, threads)))
    return steps


def _run_remote(config: BenchAblationConfig, out: Path, rows: Sequence[Row], encoder: str, preset: str, seed: int,
                cwd: str) -> StepsResult:
    """A Ray task: the steps of one (preset, seed) run not done yet (run in a worker; see :func:`run_on_ray`)."""
    from gags.cluster import worker_setup

    worker_setup(cwd, config.threads)
    return run_steps(run_steps_of(config, out, rows, encoder, preset, seed))


def run_on_ray(config: BenchAblationConfig, out: Path, rows: Sequence[Row], encoder: str) -> StepsResult:
    """Every (preset, seed) run as one Ray task (``--ray``), as many at once as the cluster fits; a task whose worker
    dies is rerun and resumes like a rerun of the benchmark. The timings of finished runs are merged here, the only
    writer of OUT's timings file."""
    from gags.cluster import MAX_RESTARTS, RaySlot, check_shared_storage, connect

    slot = RaySlot(config.ray_cpus_per_task, config.ray_gpus_per_task)
    result = StepsResult(seconds=read_timings(out / TIMINGS_FILE))
    with connect(str(config.ray)) as ray:
        check_shared_storage(ray, out)
        slot.fits_in_cluster(ray, "task", "--ray")
        task = ray.remote(_run_remote).options(max_retries=MAX_RESTARTS, **slot.options())
        pending = [task.remote(config, out, rows, encoder, preset, seed, os.getcwd())
                   for preset in config.presets for seed in range(config.seeds)]
        with tqdm(total=len(pending), desc="gags bench ablation (ray)", unit="run") as bar:
            try:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    try:
                        part: StepsResult = ray.get(ready[0])
                    except ray.exceptions.RayTaskError as exc:  # the run's own error, raised here as itself
                        raise exc.as_instanceof_cause() from None
                    result.seconds.update(part.seconds)
                    result.ran += part.ran
                    result.skipped += part.skipped
                    write_json(out / TIMINGS_FILE, {"seconds": result.seconds})
                    bar.update(1)
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)
    return result


def _evaluate(evaluate: Any, config: EvalConfig, threads: int) -> None:
    with scoped_torch_threads(threads):
        evaluate(config)


# ----------------------------------------------------------------------------------------------------------------------
# tables


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample, n - 1; None for one value), "n", "values"} of ``values`` (mean None when empty)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": values}


def by_query_level(queries: Sequence[dict[str, Any]], levels: dict[str, str]) -> dict[str, float | None]:
    """``LEVEL_METRICS`` of one evaluation: mIoU and localization accuracy over the queries of each granularity."""
    out: dict[str, float | None] = {}
    for level in QUERY_LEVELS:
        chosen = [q for q in queries if levels.get(q["label"]) == level]
        out[f"miou_{level}"] = math.fsum(q["iou"] for q in chosen) / len(chosen) if chosen else None
        out[f"loc_acc_{level}"] = math.fsum(bool(q["hit"]) for q in chosen) / len(chosen) if chosen else None
    return out


def final_granularity(curves: Path) -> list[float] | None:
    """Mean level weights (s, m, l) over the training pixels at the last logged iteration of a gags field (None when
    there are no curves or no granularity; logged steps whose view had no pixel to train are skipped)."""
    if not curves.is_file():
        return None
    logged = [h.get("granularity") for h in read_json(curves).get("history", [])]
    logged = [g for g in logged if g and math.fsum(g) > 0.5]
    return [float(v) for v in logged[-1]] if logged else None


def collect_runs(out: Path, presets: Sequence[str], seeds: int, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Every finished run's figures: one record per (preset, seed, row, split) whose metrics.json exists, with the
    figures per query granularity and, for GaD, the final granularity weights."""
    runs = []
    for preset in presets:
        for seed in range(seeds):
            levels = query_levels(seed_folder(out, preset, seed) / "scene")
            for row in rows:
                folder = seed_folder(out, preset, seed) / row.folder
                granularity = final_granularity(Workspace(folder).field_curves(row.method)) \
                    if row.method == "gags" else None
                for split in SPLITS:
                    path = metrics_path(out, preset, seed, row, split)
                    if not path.is_file():
                        continue
                    m = read_json(path)
                    runs.append({"preset": preset, "seed": seed, "row": row.key, "prompts": row.prompts,
                                 "method": row.method, "variant": row.variant, "split": split,
                                 "miou": float(m["miou"]), "loc_acc": float(m["loc_acc"]),
                                 **by_query_level(m["queries"], levels), "granularity": granularity,
                                 "n_queries": int(m["n_queries"]), "metrics": str(path.relative_to(out))})
    return runs


def aggregate(runs: Sequence[dict[str, Any]], presets: Sequence[str], rows: Sequence[Row],
              metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """row key -> preset (and ``ALL_PRESETS``) -> split -> metric -> :func:`mean_std` over seeds.

    ``ALL_PRESETS``: per seed, the mean over the presets (seeds that have every preset only), then over seeds. A run
    without a figure (None, e.g. no query of that granularity) does not count.
    """
    table: dict[str, Any] = {}
    for row in rows:
        by_row = [r for r in runs if r["row"] == row.key]
        table[row.key] = {}
        for preset in [*presets, ALL_PRESETS]:
            table[row.key][preset] = {}
            for split in SPLITS:
                cell = {}
                for metric in metrics:
                    if preset == ALL_PRESETS:
                        per_seed: dict[int, dict[str, float]] = {}
                        for r in by_row:
                            if r["split"] == split and r.get(metric) is not None:
                                per_seed.setdefault(r["seed"], {})[r["preset"]] = r[metric]
                        values = [math.fsum(v.values()) / len(v) for _, v in sorted(per_seed.items())
                                  if set(v) == set(presets)]
                    else:
                        values = [r[metric] for r in sorted(by_row, key=lambda r: r["seed"])
                                  if r["preset"] == preset and r["split"] == split and r.get(metric) is not None]
                    cell[metric] = mean_std(values)
                table[row.key][preset][split] = cell
    return table


def _cell(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    text = f"{100 * stat['mean']:.1f}"
    return text + (f" ± {100 * stat['std']:.1f}" if stat["std"] is not None else "")


def _check(flag: bool) -> str:
    return "✓" if flag else "✗"


def build_tables(results: dict[str, Any], presets: Sequence[str], rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """The tables as {"title", "header", "rows"}; numeric cells are :func:`mean_std` dicts, the others strings."""
    columns = [(p, s) for p in [*presets, ALL_PRESETS] for s in SPLITS]
    header = ["method"] + [f"{'mean' if p == ALL_PRESETS else p} {'held-out' if s == 'test' else 'train'}"
                           for p, s in columns]
    gas_rows = [r for r in rows if r.prompts == "gas" and not r.variant]
    tables: dict[str, dict[str, Any]] = {}
    for name, metric, what in (("table1", "loc_acc", "Localization accuracy (%)"), ("table2", "miou", "mIoU (%)")):
        tables[name] = {
            "name": f"Table {name[-1]}",
            "title": f"{what} per scene, GaS features (layout of the paper's Tables 1-2)",
            "header": header,
            "rows": [[r.label()] + [results[r.key][p][s][metric] for p, s in columns] for r in gas_rows],
        }
    split_header = [f"{'held-out' if s == 'test' else 'train'} {'mIoU' if m == 'miou' else 'loc. acc.'}"
                    for s in SPLITS for m in METRICS]
    ablation_rows = [r for r in rows if not r.variant and METHODS[r.method].query == "one-map"]
    ablation_rows.sort(key=lambda r: (r.method == "gags", METHOD_NAMES.index(r.method), r.prompts == "gas"))
    tables["table4"] = {
        "name": "Table 4",
        "title": "GaS and GaD ablation, mean over presets (layout of the paper's Table 4)",
        "header": ["GaS prompts", "distillation", *split_header],
        "rows": [[_check(r.prompts == "gas"), METHODS[r.method].label]
                 + [results[r.key][ALL_PRESETS][s][m] for s in SPLITS for m in METRICS] for r in ablation_rows],
    }
    loss_rows = [r for r in rows if r.prompts == "gas" and r.method == "gags"]
    tables["table6"] = {
        "name": "Table 6",
        "title": "GaD losses, GaS features, mean over presets (layout of the paper's Table 6)",
        "header": ["region-aware", "entropy", "consistency", *split_header],
        "rows": [[_check(r.switches()[k]) for k in SWITCHES]
                 + [results[r.key][ALL_PRESETS][s][m] for s in SPLITS for m in METRICS] for r in loss_rows],
    }
    tables["levels"] = {
        "name": "By query granularity",
        "title": "held-out views, queries grouped by the granularity of what they name, mean over presets",
        "header": ["method"] + [f"{level} {'mIoU' if m == 'miou' else 'loc. acc.'}" for level in QUERY_LEVELS
                                for m in METRICS],
        "rows": [[r.label()] + [results[r.key][ALL_PRESETS]["test"][m] for m in LEVEL_METRICS] for r in rows],
    }
    return tables


def granularity_table(runs: Sequence[dict[str, Any]], presets: Sequence[str], seeds: int,
                      rows: Sequence[Row]) -> dict[str, Any]:
    """GaD's mean level weights (s, m, l) over the training pixels at the end of training, per preset and seed."""
    columns = [(p, n) for p in presets for n in range(seeds)]
    found = {(r["row"], r["preset"], r["seed"]): r["granularity"] for r in runs if r.get("granularity")}
    table_rows = []
    for row in rows:
        if row.method != "gags":
            continue
        cells = []
        for p, n in columns:
            g = found.get((row.key, p, n))
            cells.append("-" if g is None else " / ".join(f"{v:.2f}" for v in g)
                         + f" ({GRANULARITY_NAMES[max(range(len(g)), key=g.__getitem__)]})")
        table_rows.append([row.label(), *cells])
    return {"name": "GaD granularity",
            "title": "mean weights s / m / l over the training pixels at the end of training (the largest in "
                     "brackets)",
            "header": ["method"] + [f"{p} seed{n}" for p, n in columns], "rows": table_rows}


REFERENCE_ROW = "gas/gags"
"""The row every other row is compared with, query by query (GaS + GaD)."""


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the probability, if either side were as likely to win each pair, of a split at
    least as uneven as ``wins`` : ``losses`` (ties dropped). 1.0 with no untied pair.

    >>> round(sign_test(9, 1), 4)
    0.0215
    """
    n = wins + losses
    if n == 0:
        return 1.0
    tail = math.fsum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _queries(out: Path, run: dict[str, Any]) -> dict[tuple[str, str, int, str, str], dict[str, Any]]:
    """(preset, seed, split, frame, label) -> the query's record in the run's metrics.json."""
    found = read_json(out / run["metrics"])["queries"]
    return {(run["preset"], run["seed"], run["split"], q["frame"], q["label"]): q for q in found}


def paired_tests(out: Path, runs: Sequence[dict[str, Any]], rows: Sequence[Row],
                 reference: str = REFERENCE_ROW) -> dict[str, Any]:
    """Every row against ``reference``, query by query over every preset and seed, per split: the queries both
    evaluated, the mean IoU difference (reference minus row), how many queries each has the higher IoU on and how
    many only one of them localizes, each with :func:`sign_test`'s p-value (on localization this is McNemar's exact
    test). A table named like the others."""
    split_header = ["held-out" if s == "test" else "train" for s in SPLITS]
    header = ["method"] + [f"{s} {what}" for s in split_header
                           for what in ("queries", "mean ΔIoU", "IoU higher: GaD / row (p)",
                                        "localized by one only: GaD / row (p)")]
    queries = {(r["row"], r["preset"], r["seed"], r["split"]): _queries(out, r) for r in runs}  # each file once
    table_rows: list[list[Any]] = []
    record: dict[str, Any] = {}
    for row in rows:
        if row.key == reference:
            continue
        cells: list[Any] = [row.label()]
        record[row.key] = {}
        for split in SPLITS:
            ref_q: dict[Any, dict[str, Any]] = {}
            row_q: dict[Any, dict[str, Any]] = {}
            for (key, preset, seed, run_split), found in queries.items():
                ref_key = (reference, preset, seed, split)
                if key == row.key and run_split == split and ref_key in queries:
                    row_q.update(found)
                    ref_q.update(queries[ref_key])
            keys = sorted(set(ref_q) & set(row_q))
            diff = [ref_q[k]["iou"] - row_q[k]["iou"] for k in keys]
            higher = (sum(d > 0 for d in diff), sum(d < 0 for d in diff))
            only = (sum(bool(ref_q[k]["hit"]) and not row_q[k]["hit"] for k in keys),
                    sum(bool(row_q[k]["hit"]) and not ref_q[k]["hit"] for k in keys))
            stats = {"queries": len(keys), "mean_iou_difference": math.fsum(diff) / len(diff) if diff else None,
                     "iou_higher": list(higher), "iou_p": sign_test(*higher),
                     "localized_only": list(only), "localized_p": sign_test(*only)}
            record[row.key][split] = stats
            mean = "-" if stats["mean_iou_difference"] is None else f"{100 * stats['mean_iou_difference']:+.1f}"
            cells += [str(len(keys)), mean, f"{higher[0]} / {higher[1]} ({stats['iou_p']:.2g})",
                      f"{only[0]} / {only[1]} ({stats['localized_p']:.2g})"]
        table_rows.append(cells)
    return {"name": "Paired per query",
            "title": "every row against GaS + GaD on the same queries (every preset and seed): mean IoU difference "
                     "in points, and exact sign tests (p, two-sided)",
            "header": header, "rows": table_rows, "record": record}


def markdown(tables: dict[str, dict[str, Any]], settings: dict[str, Any], n_runs: int) -> str:
    """The tables as Markdown, after a line of settings."""
    summary = (f"Presets {', '.join(settings['presets'])}; seeds 0..{settings['seeds'] - 1}; "
               f"{settings['resolution']} px, {settings['views']} training views, "
               f"{settings['reconstruct_iterations']} RGB iterations, distillation iterations "
               f"{settings['distill_iterations'] or 'default'}; encoder {settings['encoder']}, segmenter "
               f"{settings['segmenter']}. {n_runs} evaluated (run, split) pairs. "
               "Cells: mean ± std over seeds (sample std), in percent; '-' = not run yet.")
    lines = ["# gags bench ablation", "", summary, ""]
    for table in tables.values():
        lines += [f"## {table['name']}: {table['title']}", ""]
        lines.append("| " + " | ".join(table["header"]) + " |")
        lines.append("|" + "|".join("---" for _ in table["header"]) + "|")
        for row in table["rows"]:
            lines.append("| " + " | ".join(c if isinstance(c, str) else _cell(c) for c in row) + " |")
        lines.append("")
    return "\n".join(lines)


def write_results(out: Path, config: BenchAblationConfig, rows: Sequence[Row],
                  timings: dict[str, float]) -> dict[str, Any]:
    """Collect every finished run, aggregate, and write OUT/ablation.json and OUT/ablation.md; returns the JSON."""
    runs = collect_runs(out, config.presets, config.seeds, rows)
    results = aggregate(runs, config.presets, rows, METRICS + LEVEL_METRICS)
    tables = build_tables(results, config.presets, rows)
    tables["granularity"] = granularity_table(runs, config.presets, config.seeds, rows)
    if any(r.key == REFERENCE_ROW for r in rows):
        tables["paired"] = paired_tests(out, runs, rows)
    settings = settings_of(config)
    record = {
        "settings": settings,
        "rows": {r.key: {"label": r.label(), "prompts": r.prompts, "method": r.method, "variant": r.variant,
                         **r.switches()} for r in rows},
        "results": results,
        "tables": tables,
        "runs": runs,
        "seconds": timings,
        "provenance": provenance(),
    }
    write_json(out / RESULT_JSON, record)
    with atomic_path(out / RESULT_MD) as tmp:
        tmp.write_text(markdown(tables, settings, len(runs)))
    return record


# ----------------------------------------------------------------------------------------------------------------------
# the benchmark


def settings_of(config: BenchAblationConfig) -> dict[str, Any]:
    s = {k: v for k, v in dataclasses.asdict(config).items() if k != "out"}
    s["encoder"] = config.encoder or "tiny"
    s["distill_cpu_defaults"] = distill_cpu_defaults()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}


def distill_cpu_defaults() -> dict[str, Any]:
    """What ``gags distill`` runs on a CPU when the benchmark leaves it open (:func:`gags.distill.train
    .default_schedule`)."""
    from gags.distill.train import CPU_ITERATIONS, CPU_MAX_SIDE, default_schedule
    from gags.field import native_bfloat16

    schedule = default_schedule(False, 1, native_bfloat16())
    return {"iterations": CPU_ITERATIONS, "max_side": CPU_MAX_SIDE, "init": schedule.init,
            "precision": schedule.precision}


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """A benchmark folder holds runs of one set of result-changing settings: refuse to mix."""
    path = out / SETTINGS_FILE
    now = {k: settings[k] for k in RESULT_SETTINGS}
    if path.is_file():
        then = read_json(path)  # a setting added since that folder was made had its default value then
        then = {k: then.get(k, UNRECORDED_SETTINGS.get(k) or _default(BenchAblationConfig, k)) for k in RESULT_SETTINGS}
        diff = {k: (then[k], v) for k, v in now.items() if then[k] != v}
        if diff:
            raise GagsError(f"{out} holds ablation runs made with other settings ({diff}, as (then, now)). Run with "
                            "the same settings to resume, or pass another --out.")
    write_json(path, now)


def run(config: BenchAblationConfig) -> dict[str, Any]:
    """Run every step not done yet, then write the tables; returns the record written to OUT/ablation.json."""
    if config.seeds < 1:
        raise GagsError(f"--seeds must be at least 1, got {config.seeds}.")
    if not config.presets:
        raise GagsError("--presets is empty; name at least one preset (ramen, teatime, figurines, kitchen, random).")
    from gags.synth.library import PRESETS

    unknown = [p for p in config.presets if p not in PRESETS]
    if unknown:
        raise GagsError(f"--presets: unknown preset(s) {unknown}; choose among {', '.join(PRESETS)}.")
    if config.ray is not None:
        from gags.cluster import RaySlot, require_ray

        require_ray()
        RaySlot(config.ray_cpus_per_task, config.ray_gpus_per_task).check("--ray-cpus-per-task", "--ray-gpus-per-task")
    rows = plan_rows(config)
    out = ensure_dir(Path(config.out))
    settings = settings_of(config)
    _check_settings(out, settings)
    if config.ray is not None:
        done = run_on_ray(config, out.resolve(), rows, settings["encoder"])
    else:
        steps = _steps(config, out, rows, settings["encoder"])
        with scoped_torch_threads(config.threads):
            done = run_steps(steps, out / TIMINGS_FILE)
    record = write_results(out, config, rows, done.seconds)
    record["ran"], record["skipped"] = done.ran, done.skipped
    print(markdown(record["tables"], settings, len(record["runs"])))
    print(f"gags bench ablation: {out / RESULT_MD}, {out / RESULT_JSON}")
    return record
