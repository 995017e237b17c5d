"""The report: one self-contained page of whatever stages ran in a scene output folder.

Made from the files the stages write (nothing is trained or evaluated again):

- the scene: a few training views (OUT's scene record, or the synthetic scene ``gags demo`` writes in OUT);
- RGB reconstruction: ground truth next to the rendered held-out views, with PSNR (the reconstruct stage's metrics and
  renders);
- queries: per query of one labelled held-out view, the relevancy heatmap with the localization point and the predicted
  mask with the ground-truth outline (the figures ``gags eval`` writes beside its metrics);
- granularity: which level (sub-part, part, whole) each pixel of the gags field trusts, from its granularity decoder
  (the only part that renders: the gags field through ``gags.query.render``);
- metrics: mIoU and localization accuracy of every evaluated method on both splits;
- training curves: RGB loss and PSNR (the reconstruct metrics' ``curve``), distillation losses and granularity
  weights (each field's curves), drawn as inline SVG;
- time per stage (``gags demo``'s timings).

Paths are those of :class:`gags.workspace.Workspace`.

The page needs nothing but a browser: images are PNG data URIs, the style is inline, there is no script and no link
to fetch. A section whose stage did not run says so instead.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gags.errors import GagsError
from gags.io import atomic_path, read_json
from gags.levels import DISPLAY as LEVELS
from gags.methods import BASELINES
from gags.synth.scenes import queries_path, transforms_path, world_path
from gags.workspace import Workspace

SPLITS = ("train", "test")
SPLIT_NAMES = {"train": "training views", "test": "held-out views"}

SCENE_VIEWS = 6
"""Training views shown in the scene section."""
MAX_VIEWS = 3
"""Held-out views shown in the reconstruction and granularity sections."""
MAX_SIDE = 256
"""Embedded images are downscaled to at most this many pixels per side (keeps the page at a few MB)."""
SHOWN_SIDE = 200
"""Displayed width of a view, in CSS pixels."""
QUERY_SIDE = 150
"""Displayed width of a query figure, in CSS pixels."""

LEVEL_COLORS = ((213, 94, 0), (0, 114, 178), (0, 158, 115))
"""Vermillion, blue, bluish green: three of Okabe and Ito's colours, distinguishable with colour-blindness."""
LEVEL_BLEND = 0.6
"""Weight of the level colour over the (grey) image in the granularity map."""
COVERED_ALPHA = 0.5
"""Pixels whose rendered opacity is below this show no level (no Gaussian there to ask)."""
METHOD_COLORS = ("#1d2330", "#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f59f00", "#868e96")
"""Line colours of methods in the curve charts, gags first."""
SMOOTH_POINTS = 20
"""Noisy curves (one training view per iteration) are also drawn as a running mean over 1/20 of their points."""


@dataclass(frozen=True)
class Section:
    """One part of the page: anchor id, heading, one-line description, HTML body."""

    id: str
    title: str
    lead: str
    body: str


class Missing(Exception):
    """A section's inputs are not there (its stage did not run); the message says which and how to make them."""


# ----------------------------------------------------------------------------------------------------------------------
# the page


def write_report(out: Path) -> Path:
    """Write the report (``Workspace.report_html``) from whatever stages ran in ``out``; returns its path.

    A section whose inputs are missing (or unreadable) says so on the page; only a missing ``out`` folder is an error.
    """
    out = Path(out)
    if not out.is_dir():
        raise GagsError(f"{out} is not a folder. Pass the scene output folder (OUT) that the stages wrote into, e.g. "
                        "the folder of `gags demo --out`.")
    ctx = Context(out)
    builders: list[tuple[str, str, str, Callable[[Context], str]]] = [
        ("scene", "The scene", "A few of the posed training photos every stage starts from.", _scene_section),
        ("reconstruction", "RGB reconstruction",
         "Ground truth next to what the trained Gaussians render for views held out from training.",
         _reconstruction_section),
        ("queries", "Text queries", "What the language field answers to each label of a view it was not trained on.",
         _queries_section),
        ("granularity", "Granularity map",
         "Which level of segments each pixel trusts, as the gags field's granularity decoder weighs them.",
         _granularity_section),
        ("metrics", "Metrics",
         "LERF-OVS protocol, every evaluated method, on the labelled training and held-out views.", _metrics_section),
        ("ladder", "Where quality is lost",
         "How much of what the 2D features know the field keeps: the same protocol from the labels down to the field.",
         _ladder_section),
        ("curves", "Training curves", "Losses over the iterations of each training stage.", _curves_section),
        ("timing", "Time per stage", "Wall-clock seconds of each stage of this run.", _timing_section),
    ]
    sections = []
    for sid, title, lead, build in builders:
        try:
            body = build(ctx)
        except Missing as exc:
            body = _note(str(exc))
        except (GagsError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            body = _note(f"This section could not be made: {type(exc).__name__}: {exc}")
        sections.append(Section(sid, title, lead, body))
    path = ctx.ws.report_html
    try:
        headline = _headline(ctx)
    except (GagsError, OSError, ValueError, KeyError, TypeError) as exc:
        headline = _note(f"No headline figures: {exc}")
    page = _page(ctx, sections, headline)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def run(config: Any) -> Path:
    """``gags report OUT``: write the report and print its path."""
    path = write_report(Path(config.out))
    print(f"gags report: {path}")
    return path


class Context:
    """What the sections share: the output folder, and its files read at most once."""

    def __init__(self, out: Path):
        self.out = out
        self.ws = Workspace(out)
        self._json: dict[Path, Any] = {}
        self._scene: Any = None

    def json(self, path: Path) -> Any:
        """The JSON file at ``path`` (in OUT) parsed, or raise Missing naming it."""
        if path not in self._json:
            if not path.is_file():
                raise Missing(f"{path.relative_to(self.out)} is not there.")
            self._json[path] = read_json(path)
        return self._json[path]

    def maybe_json(self, path: Path) -> Any:
        """The JSON file at ``path`` parsed, or None when it is not there (GagsError when it is there but
        unreadable)."""
        return self.json(path) if path.is_file() else None

    def scene(self) -> Any:
        """The scene (OUT's scene record, else the synthetic scene of ``gags demo``); Missing when neither is there."""
        if self._scene is None:
            from gags.data import load_scene

            if self.ws.scene_json.is_file():
                self._scene = self.ws.load_scene()
            elif transforms_path(self.ws.synth_scene).is_file():
                self._scene = load_scene(self.ws.synth_scene)
            else:
                raise Missing("No scene here yet: no scene record (written by `gags reconstruct`) and no synthetic "
                              f"scene in {self.ws.synth_scene} (`gags synth`, as `gags demo` runs it).")
        return self._scene

    def eval_methods(self) -> list[str]:
        """Methods with at least one evaluated split, in registry order (gags first)."""
        return self.ws.eval_methods()

    def world(self) -> dict[str, Any]:
        return self.maybe_json(world_path(self.ws.synth_scene)) or {}

    def query_levels(self) -> dict[str, str]:
        """Query text -> level (whole, part, subpart) for synthetic scenes; empty otherwise."""
        queries = self.maybe_json(queries_path(self.ws.synth_scene)) or {}
        return {q["text"]: q.get("level", "") for q in queries.get("queries", []) if "text" in q}


def _page(ctx: Context, sections: list[Section], headline: str) -> str:
    world = ctx.world()
    scene_name = world.get("preset")
    title = f"gags report: {scene_name} scene" if scene_name else f"gags report: {ctx.out.name}"
    toc = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2><p class="lead">{html.escape(s.lead)}</p>{s.body}'
        "</section>" for s in sections)
    made = time.strftime("%Y-%m-%d %H:%M")
    folder = html.escape(str(ctx.out.resolve()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body><header><div class="wrap"><h1>{html.escape(title)}</h1>
<p class="sub">Open-vocabulary 3D scene understanding with Gaussian splatting (GAGS). Output folder
<code>{folder}</code>, report made {made}.</p>{headline}
<nav>{toc}</nav></div></header>
<main class="wrap">{body}
<footer>Made by gags from the files in <code>{folder}</code>. Every image is embedded in this file; run
<code>gags report {folder}</code> to make it again.</footer></main></body></html>
"""


def _headline(ctx: Context) -> str:
    """The figures a user looks at first, as large numbers."""
    stats = []
    rec = ctx.maybe_json(ctx.ws.reconstruct_metrics)
    if rec and rec.get("psnr") is not None:
        stats.append((f"{rec['psnr']:.1f} dB", f"held-out PSNR, {rec.get('num_gaussians', 0):,} Gaussians"))
    methods = ctx.eval_methods()
    if methods:
        method = methods[0]
        for split in ("test", "train"):
            m = ctx.maybe_json(ctx.ws.eval_metrics(method, split))
            if m:
                stats.append((_pct(m["miou"]), f"{method} mIoU, {SPLIT_NAMES[split]}"))
                stats.append((_pct(m["loc_acc"]), f"{method} localization, {SPLIT_NAMES[split]}"))
                break
    demo = ctx.maybe_json(ctx.ws.demo_json)
    if demo and demo.get("seconds"):
        total = demo.get("total_seconds") or sum(demo["seconds"].values())
        stats.append((_duration(total), "total time of the stages"))
    if not stats:
        return ""
    return '<div class="stats">' + "".join(
        f'<div class="stat"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>' for v, k in stats) + "</div>"


# ----------------------------------------------------------------------------------------------------------------------
# sections


def _scene_section(ctx: Context) -> str:
    scene = ctx.scene()
    ids = list(scene.train_ids) or list(range(len(scene.names)))
    shown = _spread(ids, SCENE_VIEWS)
    figures = [_figure(scene.load_image(i), scene.names[i], SHOWN_SIDE) for i in shown]
    w, h = scene.cameras[ids[0]].width, scene.cameras[ids[0]].height
    world = ctx.world()
    facts = [f"{len(scene.train_ids)} training views and {len(scene.test_ids)} held-out views, {w}x{h} pixels"]
    if world.get("objects"):
        facts.append(f"{len(world['objects'])} objects of the procedural world (preset {world.get('preset')}, seed "
                     f"{world.get('seed')})")
    queries = ctx.query_levels()
    if queries:
        facts.append(f"{len(queries)} labelled text queries")
    return (f'<p>{html.escape("; ".join(facts))}. Shown: {len(shown)} of the training views.</p>'
            f'<div class="grid">{"".join(figures)}</div>')


def _reconstruction_section(ctx: Context) -> str:
    if not ctx.ws.reconstruct_metrics.is_file():
        raise Missing(f"No RGB reconstruction yet: run `gags reconstruct` (it writes {ctx.ws.reconstruct_metrics} "
                      "and the held-out renders).")
    rec = ctx.json(ctx.ws.reconstruct_metrics)
    scene = ctx.scene()
    renders = ctx.ws.reconstruct_renders
    rows = []
    for view in rec.get("views", [])[:MAX_VIEWS]:
        name = view["name"]
        render_png = renders / f"{Path(name).stem}.png"
        gt = scene.load_image(scene.index(name))
        cells = [_figure(gt, f"{name}: ground truth", SHOWN_SIDE)]
        if render_png.is_file():
            cells.append(_figure(_read_png(render_png), f"rendered: PSNR {view['psnr']:.2f} dB, SSIM "
                                 f"{view['ssim']:.3f}", SHOWN_SIDE))
        else:
            cells.append(_note(f"no render of {name} in reconstruct/renders"))
        rows.append(f'<div class="pair">{"".join(cells)}</div>')
    split = SPLIT_NAMES.get(rec.get("eval_split", "test"), "views")
    n_views = len(rec.get("views", []))
    facts = (f"Mean over {n_views} {split}: PSNR <b>{rec['psnr']:.2f} dB</b>, SSIM <b>{rec['ssim']:.3f}</b>; "
             f"{rec.get('iterations', 0):,} iterations, {rec.get('num_gaussians', 0):,} Gaussians. ")
    if n_views > MAX_VIEWS:
        facts += f"Shown: the first {MAX_VIEWS}."
    return f'<p>{facts}</p><div class="grid">{"".join(rows)}</div>'


def _queries_section(ctx: Context) -> str:
    methods = ctx.eval_methods()
    if not methods:
        raise Missing(f"No evaluation yet: run `gags eval OUT --method all` to score the text queries (it writes "
                      f"into {ctx.ws.eval_root}).")
    method = methods[0]
    split = next(s for s in ("test", "train") if ctx.ws.eval_metrics(method, s).is_file())
    metrics = ctx.json(ctx.ws.eval_metrics(method, split))
    frames = list(dict.fromkeys(q["frame"] for q in metrics["queries"]))
    counts = [sum(q["frame"] == f for q in metrics["queries"]) for f in frames]
    frame = frames[counts.index(max(counts))]  # the view with the most labels (the first of them)
    queries = [q for q in metrics["queries"] if q["frame"] == frame]
    folder = ctx.ws.eval_dir(method, split)
    others = {m: {(q["frame"], q["label"]): q for q in ctx.json(ctx.ws.eval_metrics(m, split))["queries"]}
              for m in methods[1:] if ctx.ws.eval_metrics(m, split).is_file()}
    levels = ctx.query_levels()
    cards = []
    missing_figures = 0
    for q in queries:
        rel_png, mask_png = folder / q.get("relevancy_png", "-"), folder / q.get("mask_png", "-")
        if not (rel_png.is_file() and mask_png.is_file()):
            missing_figures += 1
            continue
        level = levels.get(q["label"], "")
        badge = f' <span class="badge">{html.escape(level)}</span>' if level else ""
        lines = [f'<b>{method}</b> IoU {_pct(q["iou"])} {_hit(q["hit"])}']
        for m, found in others.items():
            o = found.get((q["frame"], q["label"]))
            if o is not None:
                lines.append(f'{html.escape(m)} IoU {_pct(o["iou"])} {_hit(o["hit"])}')
        cards.append(
            f'<div class="card"><div class="qtitle">{html.escape(q["label"])}{badge}</div><div class="qimgs">'
            f'{_img(_read_png(rel_png), "relevancy of " + q["label"], QUERY_SIDE)}'
            f'{_img(_read_png(mask_png), "mask of " + q["label"], QUERY_SIDE)}</div>'
            f'<div class="qnums">{"<br>".join(lines)}</div></div>')
    image_name = queries[0].get("image", frame)
    intro = (f'<p>The <b>{html.escape(method)}</b> field on <b>{html.escape(str(image_name))}</b>, one of '
             f'{len(frames)} labelled {SPLIT_NAMES[split]}: {len(queries)} queries. In each pair, left: the relevancy '
             'of the text (min-max normalised; blue low, red high) over the image, the ground-truth boxes in green, '
             'the localization point as a white cross; right: the predicted mask (yellow; the rest dimmed) with the '
             'ground-truth outline in green. ✓ = the point falls in a ground-truth box. The figures of every query '
             f'and view are in <code>{html.escape(str(folder.relative_to(ctx.out)))}/</code>.</p>')
    if missing_figures:
        intro += _note(f"{missing_figures} queries have no figure in {folder.relative_to(ctx.out)} (was `gags eval` "
                       "run with --no-figures?); run `gags eval` again to draw them.")
    return intro + f'<div class="cards">{"".join(cards)}</div>' + _per_label_table(ctx, methods, split)


def _per_label_table(ctx: Context, methods: list[str], split: str) -> str:
    """Mean IoU and hits per label over every labelled view of ``split``, per method (folded)."""
    per: dict[str, dict[str, list[dict[str, Any]]]] = {}
    used = []
    for m in methods:
        data = ctx.maybe_json(ctx.ws.eval_metrics(m, split))
        if not data:
            continue
        used.append(m)
        for q in data["queries"]:
            per.setdefault(q["label"], {}).setdefault(m, []).append(q)
    levels = ctx.query_levels()
    head = "".join(f"<th>{html.escape(m)} IoU</th><th>{html.escape(m)} hits</th>" for m in used)
    rows = []
    for label, by_method in per.items():
        cells = []
        for m in used:
            qs = by_method.get(m, [])
            if qs:
                cells.append(f"<td>{_pct(float(np.mean([q['iou'] for q in qs])))}</td>"
                             f"<td>{sum(bool(q['hit']) for q in qs)}/{len(qs)}</td>")
            else:
                cells.append("<td>-</td><td>-</td>")
        rows.append(f'<tr><td class="l">{html.escape(label)}</td><td class="l">{html.escape(levels.get(label, ""))}'
                    f"</td>{''.join(cells)}</tr>")
    return (f"<details><summary>Per label, over all labelled {SPLIT_NAMES[split]}</summary>"
            f'<table><tr><th class="l">label</th><th class="l">level</th>{head}</tr>{"".join(rows)}</table>'
            "</details>")


def _granularity_section(ctx: Context) -> str:
    import torch

    from gags.query import render

    if not ctx.ws.field_file("gags").is_file():
        raise Missing(f"No gags field yet: run `gags distill OUT --method gags` ({ctx.ws.field_file('gags')}). "
                      "Only gags predicts a granularity per pixel; the baselines use fixed level weights.")
    field = render.load_field(ctx.out, "gags")
    geometry = render.load_geometry(ctx.out)
    if len(field.features) != len(geometry):
        raise Missing(f"The gags field has {len(field.features):,} Gaussians but {ctx.ws.gaussians_ply} has "
                      f"{len(geometry):,}: it was distilled on other Gaussians. Run `gags distill OUT --method gags "
                      "--no-resume` again.")
    scene = ctx.scene()
    ids = list(scene.test_ids)[:MAX_VIEWS] or _spread(list(scene.train_ids), MAX_VIEWS)
    ones = torch.ones(len(field.features), 1)
    rows = []
    counts = np.zeros(len(LEVELS))
    weight_sums = np.zeros(len(LEVELS))
    for i in ids:
        camera = scene.cameras[i]
        rendered = render.render_features(geometry, torch.cat([field.features, ones], dim=1), camera)  # [H, W, F+1]
        alpha = rendered[..., -1].numpy()
        weights = field.granularity(rendered[..., :-1]).numpy()  # [H, W, 3]
        covered = alpha >= COVERED_ALPHA
        level = weights.argmax(-1)
        counts += np.bincount(level[covered], minlength=len(LEVELS))
        weight_sums += weights[covered].sum(0)
        image = scene.load_image(i)
        rows.append(f'<div class="pair">{_figure(image, scene.names[i], SHOWN_SIDE)}'
                    f'{_figure(level_map(image, weights, covered), "level per pixel", SHOWN_SIDE)}</div>')
    share = counts / max(1.0, counts.sum())
    mean_w = weight_sums / max(1.0, counts.sum())
    legend = "".join(
        f'<span class="swatch"><i style="background:rgb{c}"></i>{name}: {_pct(s)} of the pixels '
        f"(mean weight {w:.2f})</span>" for name, c, s, w in zip(LEVELS, LEVEL_COLORS, share, mean_w, strict=True))
    which = "held-out" if scene.test_ids else "training"
    return (f"<p>Each Gaussian's feature, rendered into {which} views, goes through the granularity decoder: three "
            "weights (softmax) that say how much the sub-part, part and whole segments count in the distillation "
            "target at that pixel. Colour = the level with the largest weight, over the grey image; pixels no Gaussian "
            f"covers keep the grey image.</p><div class=\"legend\">{legend}</div>"
            f'<div class="grid">{"".join(rows)}</div>')


def level_map(image: np.ndarray, weights: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The level each pixel trusts, colour-coded over the grey image.

    Args:
        image: [H, W, 3] uint8 RGB; weights: [H, W, 3] granularity weights (s, m, l); covered: bool [H, W].
    Returns:
        [H, W, 3] uint8 RGB: ``LEVEL_COLORS[argmax]`` blended over the grey image where covered, grey elsewhere.
    """
    grey = image.astype(np.float32).mean(-1, keepdims=True).repeat(3, -1)
    colors = np.asarray(LEVEL_COLORS, np.float32)[weights.argmax(-1)]
    out = np.where(covered[..., None], LEVEL_BLEND * colors + (1 - LEVEL_BLEND) * grey, grey)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def _metrics_section(ctx: Context) -> str:
    methods = ctx.eval_methods()
    if not methods:
        raise Missing(f"No evaluation yet: run `gags eval OUT --method all` (it writes into {ctx.ws.eval_root}).")
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for m in methods:
        for split in SPLITS:
            data = ctx.maybe_json(ctx.ws.eval_metrics(m, split))
            if data:
                table.setdefault(m, {})[split] = data
    splits = [s for s in SPLITS if any(s in row for row in table.values())]
    best = {(s, k): max(row[s][k] for row in table.values() if s in row) for s in splits for k in ("miou", "loc_acc")}
    head = "".join(f'<th colspan="2">{SPLIT_NAMES[s]}</th>' for s in splits)
    sub = "<th>mIoU</th><th>localization</th>" * len(splits)
    rows = []
    for m, row in table.items():
        cells = []
        for s in splits:
            for k in ("miou", "loc_acc"):
                if s in row:
                    v = row[s][k]
                    text = _pct(v)
                    cells.append(f"<td><b>{text}</b></td>" if v == best[(s, k)] and len(table) > 1 else
                                 f"<td>{text}</td>")
                else:
                    cells.append("<td>-</td>")
        rows.append(f'<tr><td class="l">{html.escape(m)}{" (ours)" if m == "gags" else ""}</td>{"".join(cells)}'
                    "</tr>")
    counts = "; ".join(f"{SPLIT_NAMES[s]}: {next(r[s]['n_queries'] for r in table.values() if s in r)} queries in "
                       f"{next(r[s]['n_frames'] for r in table.values() if s in r)} views" for s in splits)
    baselines = [m for m in table if m != "gags"]
    missing = [m for m in BASELINES if m not in table]
    note = (f"Baselines run: {', '.join(baselines) if baselines else 'none'}." +
            (f" Not run: {', '.join(missing)} (add them with `gags demo --baselines ...`)." if missing else ""))
    return (f'<table class="metrics"><tr><th class="l" rowspan="2">method</th>{head}</tr><tr>{sub}</tr>'
            f'{"".join(rows)}</table>'
            f"<p class=\"small\">{counts}. mIoU: mean over (view, label) pairs of the IoU of the predicted mask with "
            "the label's polygons; localization: share of pairs whose most relevant point (30x30 box filter, argmax) "
            f"lies in one of the label's boxes. Best per column in bold. {html.escape(note)}</p>")


def _ladder_section(ctx: Context) -> str:
    from gags.bench.ladder import RESULT_NAME, table_rows

    record = ctx.maybe_json(ctx.ws.bench_file(RESULT_NAME))
    if record is None:
        raise Missing("No ladder yet: run `gags bench ladder OUT` to see where the quality of queries is lost, rung by "
                      "rung (labels, exact masks, the segments' features, the distilled fields).")
    splits = list(record["splits"])
    head = "".join(f'<th colspan="2">{SPLIT_NAMES[s]}</th>' for s in splits)
    sub = "<th>mIoU</th><th>localization</th>" * len(splits)
    rows = []
    for rung, label, per in table_rows(record):
        cells = []
        for s in splits:
            e = per[s]
            kept = e.get("kept")
            for k in ("miou", "loc_acc"):
                text = "-" if e.get(k) is None else _pct(e[k])
                if kept and kept.get(k) is not None:
                    text += f' <span class="small">({_pct(kept[k])} kept)</span>'
                cells.append(f"<td>{text}</td>")
        rows.append(f'<tr><td class="l">{rung}</td><td class="l">{html.escape(label)}</td>{"".join(cells)}</tr>')
    coverage = "; ".join(
        f"{SPLIT_NAMES[s]}: " + " / ".join(_pct(record["splits"][s]["coverage"][str(k)]) for k in range(4))
        for s in splits if record["splits"][s].get("coverage"))
    notes = " ".join(html.escape(n) for n in record.get("notes", []))
    return (f'<table class="metrics"><tr><th class="l" rowspan="2">rung</th><th class="l" rowspan="2">relevancy from'
            f'</th>{head}</tr><tr>{sub}</tr>{"".join(rows)}</table>'
            "<p class=\"small\">R0: the label's own mask (the protocol's ceiling); R1: exact entity masks encoded as "
            "the segment stage encodes its masks; R2: the segment stage's features; R3: the distilled fields, with the "
            "share they keep of the R2 reading they were trained on. Levels read one at a time, per query at the "
            "level of what it names (own), at the best level (an oracle), as LangSplat's protocol picks, or averaged. "
            + (f"Labelled pixels with a segment at 0 / 1 / 2 / 3 levels (%): {coverage}. " if coverage else "")
            + f"{notes}</p>")


def _curves_section(ctx: Context) -> str:
    charts = []
    notes = []
    rec = ctx.maybe_json(ctx.ws.reconstruct_metrics)
    if rec is None:
        notes.append("RGB reconstruction: not run yet (`gags reconstruct`).")
    else:
        curve = rec.get("curve") or []
        held_out = [(h["iterations"], h["psnr"]) for h in rec.get("history", []) if h.get("psnr") is not None]
        if rec.get("psnr") is not None:
            held_out.append((rec.get("iterations", 0), rec["psnr"]))
        if curve:
            charts.append(line_chart("RGB reconstruction: training loss", "iteration", "L1 + D-SSIM",
                                     [("training views", [(p["iteration"], p["loss"]) for p in curve],
                                       METHOD_COLORS[0])], log_y=True))
        psnr_series = []
        if curve:
            psnr_series.append(("training views", [(p["iteration"], p["psnr"]) for p in curve], METHOD_COLORS[0]))
        if held_out:
            psnr_series.append(("held-out views", held_out, METHOD_COLORS[1]))
        if psnr_series:
            charts.append(line_chart("RGB reconstruction: PSNR", "iteration", "dB", psnr_series))
        if not curve:
            notes.append("RGB reconstruction: this run recorded no training curve (made before `gags reconstruct` "
                         "kept one in reconstruct/metrics.json).")
    distilled = {}
    for m in ctx.ws.curve_methods():
        history = (ctx.maybe_json(ctx.ws.field_curves(m)) or {}).get("history") or []
        if history:
            distilled[m] = history
    if distilled:
        # an iteration whose view had no pixel to distil records a zero loss and zero weights: left out
        series = [(m, [(h["iteration"], h["distill"]) for h in hist if h.get("distill")],
                   METHOD_COLORS[k % len(METHOD_COLORS)]) for k, (m, hist) in enumerate(distilled.items())]
        charts.append(line_chart("Distillation loss per method", "iteration", "region-aware L1", series, log_y=True,
                                 smooth=True))
        gran = [(h["iteration"], h["granularity"]) for h in distilled.get("gags", [])
                if h.get("granularity") and sum(h["granularity"]) > 0.5]
        if gran:
            charts.append(line_chart(
                "gags: mean granularity weights", "iteration", "weight",
                [(name, [(it, g[k]) for it, g in gran], f"rgb{LEVEL_COLORS[k]}")
                 for k, name in enumerate(LEVELS)], y_range=(0.0, 1.0), smooth=True))
    else:
        notes.append("Distillation: no training curves of a field yet (`gags distill`).")
    if not charts:
        raise Missing(" ".join(notes))
    text = ("<p class=\"small\">Loss curves on a log scale. Reconstruction: mean over each stretch of iterations "
            "(one view per iteration). Distillation: the feature loss alone (without the entropy and consistency "
            "terms of gags); langsplat's is measured on its 3-d codes, so it is not on the same scale.</p>")
    return text + "".join(_note(n) for n in notes) + f'<div class="charts">{"".join(charts)}</div>'


def _timing_section(ctx: Context) -> str:
    demo = ctx.maybe_json(ctx.ws.demo_json)
    if not demo or not demo.get("seconds"):
        raise Missing(f"Time per stage is recorded by `gags demo` ({ctx.ws.demo_json}); this folder has none.")
    seconds: dict[str, float] = demo["seconds"]
    total = sum(seconds.values())
    longest = max(seconds.values()) or 1.0
    rows = "".join(
        f'<tr><td class="l">{html.escape(name)}</td><td>{_duration(s)}</td><td>{_pct(s / total if total else 0)}</td>'
        f'<td class="bar"><i style="width:{100 * s / longest:.1f}%"></i></td></tr>' for name, s in seconds.items())
    return (f'<table class="timing"><tr><th class="l">stage</th><th>time</th><th>share</th><th></th></tr>{rows}'
            f'<tr class="total"><td class="l">total</td><td>{_duration(total)}</td><td></td><td></td></tr></table>'
            "<p class=\"small\">Measured on this machine by `gags demo`; a stage that was already done when the demo "
            "was run again keeps the time of the run that made it.</p>")


# ----------------------------------------------------------------------------------------------------------------------
# charts (inline SVG)


CHART_W, CHART_H = 500, 260
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 16, 50, 42
LEGEND_CHAR_W = 6.6
"""Estimated width of a legend character (12 px sans-serif), to space the legend entries on their row."""


def line_chart(title: str, x_label: str, y_label: str, series: Sequence[tuple[str, Sequence[tuple[float, float]], str]],
               log_y: bool = False, y_range: tuple[float, float] | None = None, smooth: bool = False) -> str:
    """An inline SVG line chart.

    Args:
        series: (name, [(x, y), ...], CSS colour) per line; a series of one point is drawn as a dot, non-finite (and,
            with ``log_y``, non-positive) values are left out.
        log_y: logarithmic y axis; y_range: fixed (low, high) of a linear y axis.
        smooth: draw each line faint, and over it its running mean (window: 1/``SMOOTH_POINTS`` of its points).
    Returns:
        ``<svg>...</svg>`` (with a ``<title>``), CHART_W x CHART_H.
    """
    clean = []
    for name, points, color in series:
        pts = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y) and (y > 0 or
                                                                                                     not log_y)]
        if pts:
            clean.append((name, pts, color))
    head = (f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" '
            f'width="{CHART_W}" height="{CHART_H}" role="img"><title>{html.escape(title)}</title>'
            f'<text x="12" y="20" class="ct">{html.escape(title)}</text>')
    if not clean:
        return head + f'<text x="{CHART_W / 2}" y="{CHART_H / 2}" text-anchor="middle">no data</text></svg>'
    xs = [x for _, pts, _ in clean for x, _ in pts]
    ys = [y for _, pts, _ in clean for _, y in pts]
    x_lo, x_hi = 0.0, max(xs)
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    fy: Callable[[float], float]
    if log_y:
        ticks_y = _log_ticks(min(ys), max(ys))
        fy = math.log10
        y_lo, y_hi = fy(ticks_y[0]), fy(ticks_y[-1])
    else:
        lo, hi = y_range if y_range is not None else (min(ys), max(ys))
        if hi <= lo:  # one value: a band around it
            lo, hi = lo - 1.0, hi + 1.0
        ticks_y = _nice_ticks(lo, hi)
        if y_range is None:
            lo, hi = ticks_y[0], ticks_y[-1]
        fy = float
        y_lo, y_hi = lo, hi
    if y_hi <= y_lo:
        y_hi = y_lo + 1.0
    ticks_x = [t for t in _nice_ticks(x_lo, x_hi) if t <= x_hi * 1.0001]
    pw, ph = CHART_W - MARGIN_L - MARGIN_R, CHART_H - MARGIN_T - MARGIN_B

    def sx(x: float) -> float:
        return MARGIN_L + pw * (x - x_lo) / (x_hi - x_lo)

    def sy(y: float) -> float:
        return MARGIN_T + ph * (1 - (fy(y) - y_lo) / (y_hi - y_lo))

    parts = [head]
    for t in ticks_y:
        y = sy(t)
        parts.append(f'<line x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(t)}</text>')
    for t in ticks_x:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_T}" y2="{MARGIN_T + ph}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{MARGIN_T + ph + 16}" text-anchor="middle">{_tick(t)}</text>')
    parts.append(f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" class="frame"/>')
    parts.append(f'<text x="{MARGIN_L + pw / 2}" y="{CHART_H - 6}" text-anchor="middle" class="ax">'
                 f"{html.escape(x_label)}</text>")
    parts.append(f'<text transform="translate(14 {MARGIN_T + ph / 2}) rotate(-90)" text-anchor="middle" class="ax">'
                 f"{html.escape(y_label)}</text>")
    for _, pts, color in clean:
        color = html.escape(color)
        if len(pts) == 1 or len(pts) <= 4:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}"/>' for x, y in pts)
        if len(pts) > 1:
            lines = [(pts, 1.0, 1.8)]
            window = len(pts) // SMOOTH_POINTS
            if smooth and window > 1:
                lines = [(pts, 0.25, 1.0), (_running_mean(pts, window, log_y), 1.0, 2.0)]
            for line, opacity, width in lines:
                path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width}" '
                             f'stroke-opacity="{opacity}" stroke-linejoin="round"/>')
    x = MARGIN_L
    for name, _, color in clean:  # one row under the title
        parts.append(f'<rect x="{x}" y="31" width="10" height="10" rx="2" fill="{html.escape(color)}"/>'
                     f'<text x="{x + 15}" y="40" class="lg">{html.escape(name)}</text>')
        x += 15 + LEGEND_CHAR_W * len(name) + 16
    parts.append("</svg>")
    return "".join(parts)


def _running_mean(pts: list[tuple[float, float]], window: int, geometric: bool) -> list[tuple[float, float]]:
    """Centred running mean of the y values over ``window`` points (shrinking at the ends); geometric on a log axis."""
    ys = np.log([y for _, y in pts]) if geometric else np.asarray([y for _, y in pts])
    sums = np.concatenate([[0.0], np.cumsum(ys)])
    idx = np.arange(len(ys))
    lo = np.clip(idx - window // 2, 0, len(ys))
    hi = np.clip(idx + window - window // 2, 0, len(ys))
    means = (sums[hi] - sums[lo]) / (hi - lo)
    means = np.exp(means) if geometric else means
    return [(x, float(m)) for (x, _), m in zip(pts, means, strict=True)]


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v < hi + step * 0.999:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values of a log axis covering [lo, hi]: powers of ten, with 2 and 5 between when it spans few decades."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if b <= a:
        b = a + 1
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in mults]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    low, high = (below[-1] if below else ticks[0]), (above[0] if above else ticks[-1])
    return [t for t in ticks if low <= t <= high]


def _tick(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-4):
        return f"{v:.0e}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:g}"


# ----------------------------------------------------------------------------------------------------------------------
# small helpers


def png_data_uri(image: np.ndarray, max_side: int = MAX_SIDE) -> str:
    """[H, W, 3] (or [H, W]) uint8 -> ``data:image/png;base64,...``, downscaled to at most ``max_side`` per side."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _img(image: np.ndarray, alt: str, width: int) -> str:
    h, w = image.shape[:2]
    height = round(width * h / w)
    return (f'<img src="{png_data_uri(image)}" alt="{html.escape(alt)}" width="{width}" height="{height}">')


def _figure(image: np.ndarray, caption: str, width: int) -> str:
    return f"<figure>{_img(image, caption, width)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _note(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _spread(ids: list[int], n: int) -> list[int]:
    """``n`` items of ``ids`` spread evenly over it (all of them if there are at most ``n``)."""
    if len(ids) <= n:
        return ids
    return [ids[round(k * (len(ids) - 1) / (n - 1))] for k in range(n)] if n > 1 else ids[:1]


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _hit(hit: bool) -> str:
    return '<span class="hit">✓</span>' if hit else '<span class="miss">✗</span>'


def _duration(seconds: float) -> str:
    if seconds >= 60:
        m, s = divmod(round(seconds), 60)
        return f"{m} min {s:02d} s"
    return f"{seconds:.1f} s"


CSS = """
:root{--fg:#1d2330;--muted:#5b6576;--line:#e3e7ee;--bg:#f4f6f9;--accent:#1c7ed6}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:var(--fg);
background:var(--bg)}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
header{background:linear-gradient(135deg,#1d2330,#2b3a55);color:#fff;padding:26px 0 14px}
header h1{margin:0;font-size:28px;letter-spacing:-.3px}
header .sub{margin:6px 0 16px;color:#c9d2e3;font-size:14px}
header code{color:#fff;background:rgba(255,255,255,.12);padding:1px 5px;border-radius:4px}
.stats{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.stat{background:rgba(255,255,255,.09);border:1px solid rgba(255,255,255,.14);border-radius:10px;padding:10px 16px;
min-width:160px}
.stat b{display:block;font-size:26px;line-height:1.2}
.stat span{font-size:13px;color:#c9d2e3}
nav{display:flex;flex-wrap:wrap;gap:6px}
nav a{color:#fff;text-decoration:none;font-size:13px;padding:4px 10px;border-radius:999px;
background:rgba(255,255,255,.1)}
section{background:#fff;border:1px solid var(--line);border-radius:12px;padding:20px 24px;margin:22px 0;
box-shadow:0 1px 2px rgba(20,30,50,.04)}
h2{margin:0;font-size:21px}
p.lead{margin:2px 0 14px;color:var(--muted)}
p.small{font-size:13px;color:var(--muted)}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.pair{display:flex;gap:8px;padding:8px;border:1px solid var(--line);border-radius:10px;background:#fafbfc}
figure{margin:0}
figure img,.qimgs img{display:block;border-radius:6px;background:#000}
figcaption{font-size:12.5px;color:var(--muted);margin-top:4px;max-width:200px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(318px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:10px;padding:10px;background:#fafbfc}
.qtitle{font-weight:600;margin-bottom:6px}
.qimgs{display:flex;gap:6px}
.qnums{font-size:13px;margin-top:6px;color:var(--muted)}
.qnums b{color:var(--fg)}
.badge{font-size:11px;font-weight:500;color:var(--muted);border:1px solid var(--line);border-radius:999px;
padding:0 7px;margin-left:4px;background:#fff}
.hit{color:#2f9e44;font-weight:700}.miss{color:#c92a2a;font-weight:700}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0}
th,td{padding:6px 12px;border-bottom:1px solid var(--line);text-align:right}
th{font-weight:600;background:#f6f8fa}
.l{text-align:left}
table.metrics td,table.metrics th{min-width:96px}
table.metrics th{background:none}
table.metrics th[colspan]{text-align:center;border-bottom:2px solid #c8cfd9}
table.metrics th[rowspan]{vertical-align:bottom}
.timing td.bar{width:360px}
.timing td.bar i{display:block;height:12px;border-radius:3px;background:var(--accent)}
.timing tr.total td{font-weight:600;border-bottom:none}
details{margin-top:14px}
summary{cursor:pointer;color:var(--accent)}
.legend{display:flex;flex-wrap:wrap;gap:18px;margin:0 0 12px;font-size:14px}
.swatch i{display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:-2px;margin-right:6px}
.charts{display:flex;flex-wrap:wrap;gap:14px}
svg.chart{background:#fff;border:1px solid var(--line);border-radius:10px;font-size:11.5px;fill:#4a5568;
max-width:100%;height:auto}
svg .ct{font-size:13.5px;font-weight:600;fill:var(--fg)}
svg .ax{font-size:12px;fill:var(--muted)}
svg .lg{font-size:12px;fill:var(--fg)}
svg .grid{stroke:#edf0f4;stroke-width:1}
svg .frame{fill:none;stroke:#c8cfd9}
.missing{color:#7a5200;background:#fff8e6;border:1px solid #f3dfa8;padding:10px 14px;border-radius:8px}
footer{color:var(--muted);font-size:13px;margin:10px 0 40px}
code{background:#eef1f5;padding:1px 5px;border-radius:4px;font-size:13px}
"""
