"""``gags bench ladder OUT``: where the quality of text queries is lost, rung by rung.

Every rung turns the labelled views of a scene output folder into relevancy maps, and every map is scored by the one
implementation of the LERF-OVS protocol that ``gags eval`` uses (``gags.query.evaluate.score_frame``):

- R0 ``label``: the label's own mask as relevancy: the protocol's ceiling at this resolution.
- R1 ``exact`` (procedural scenes only): every entity of the synthetic scene's id maps, at each level, cropped and
  encoded as ``gags segment`` encodes its masks (``gags.models.crops.crop_masks``, the same encoder): what the encoder
  knows when the segmentation is perfect. These are the segments ``gags segment --segmenter exact`` writes
  (``gags.segment.exact``, features stored in float16 as the stage stores them); distilled, their fields show what the
  rest of the pipeline keeps of perfect segments.
- R2 ``segments``: the segment stage's features (LangSplat's ``_f`` / ``_s``): what distillation is asked to keep.
- R3 ``field METHOD``: every distilled field, rendered and decoded as ``gags eval`` does.

R1 and R2 have three levels, read several ways: ``level-s|m|l`` (one level for every query), ``own`` (the level of
what the query names, for scenes whose queries carry a level), ``best`` (per query, the level that scores best: an
oracle), ``pick`` (LangSplat's choice among the three maps, the protocol's rule for a three-level method) and ``avg``
(the normalised mean of the levels' features, per pixel). A pixel without a segment at a level has relevancy 0 there
(nothing says the query). Each field is compared with the reading of the target it was trained on (the registry's
``Method.target``): ``kept`` = R3 / R2 of that reading, for mIoU and localization. A field that stores codes of a
scene-specific autoencoder (LangSplat) is also compared with the segment features passed through its own autoencoder
(R2 ``METHOD codes``, the reading of its target): ``kept_codes`` = R3 / that reading, so that what the autoencoder loses
and what the distillation loses are told apart.

``coverage``: the share of labelled pixels that have a segment at 0, 1, 2 and 3 levels (R2).

Writes ``Workspace.bench_file("ladder")`` and prints a table; the report shows it.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from gags.bench.provenance import provenance
from gags.config import BenchLadderConfig
from gags.data.features import feature_stem, read_language_features
from gags.data.labels import FrameLabels
from gags.errors import GagsError
from gags.field import LangSplatAutoencoder
from gags.io import write_json
from gags.levels import LEVELS, NUM_LEVELS, ROWS
from gags.methods import METHODS
from gags.segment.exact import exact_language_features, read_ids
from gags.threads import scoped_torch_threads
from gags.workspace import Workspace

RESULT_NAME = "ladder"
"""The record's name in the scene output folder's benchmark records."""
SPLITS = ("train", "test")
LEVEL_READINGS = tuple(f"level-{lv.code}" for lv in LEVELS)
READINGS = (*LEVEL_READINGS, "own", "best", "pick", "avg")
"""The ways a three-level rung (R1, R2) is read."""

Maps = dict[str, dict[str, np.ndarray]]
"""frame -> label -> relevancy [H, W] or [L, H, W]."""


# ----------------------------------------------------------------------------------------------------------------------
# relevancy of three-level feature tables


def level_relevancy(table: Tensor, seg: Tensor, query: Tensor, canon: Tensor) -> Tensor:
    """Relevancy maps of per-level segments.

    Args:
        table: [M, D] the segments' features; seg: [3, H, W] int64 row of ``table`` per level (-1 = no segment);
        query: [Q, D]; canon: [C, D].
    Returns:
        [Q, 3, H, W] float32: the relevancy of each pixel's segment at each level, 0 where there is none.
    """
    from gags.query.relevancy import relevancy

    per_segment = relevancy(table.float(), query, canon)  # [Q, M]
    padded = torch.cat([per_segment, per_segment.new_zeros(per_segment.shape[0], 1)], dim=1)  # [Q, M + 1]
    index = torch.where(seg >= 0, seg, table.shape[0])  # [3, H, W]
    return padded[:, index]


def average_relevancy(table: Tensor, seg: Tensor, query: Tensor, canon: Tensor) -> Tensor:
    """Relevancy of the normalised mean of the levels' features at each pixel (levels without a segment left out):
    [Q, H, W], 0 where no level has a segment."""
    from gags.query.relevancy import relevancy

    covered = seg >= 0  # [3, H, W]
    feats = torch.nn.functional.normalize(table.float(), dim=-1)
    feats = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])  # row M: no segment (a view may have none)
    gathered = feats[torch.where(covered, seg, table.shape[0])]  # [3, H, W, D]
    mean = gathered.sum(0)  # [H, W, D]
    rel = relevancy(mean, query, canon)  # [Q, H, W]
    return torch.where(covered.any(0), rel, torch.zeros_like(rel))


# ----------------------------------------------------------------------------------------------------------------------
# scoring


def summarize(queries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """mIoU and localization accuracy (fractions) over scored queries."""
    if not queries:
        return {"miou": None, "loc_acc": None, "n_queries": 0}
    return {"miou": float(np.mean([q["iou"] for q in queries])), "loc_acc": float(np.mean([q["hit"] for q in queries])),
            "n_queries": len(queries)}


def score(maps: Maps, labels: Mapping[str, FrameLabels], protocol_min_side: int) -> list[dict[str, Any]]:
    """Every (frame, label) of ``maps`` scored by the protocol (``gags.query.evaluate.score_frame``)."""
    from gags.query.evaluate import score_frame

    queries: list[dict[str, Any]] = []
    for name, frame_maps in maps.items():
        queries += score_frame(name, labels[name], frame_maps, protocol_min_side)["queries"]
    return queries


def read_levels(per_level: Mapping[str, Maps], labels: Mapping[str, FrameLabels], query_level: Mapping[str, str],
                protocol_min_side: int) -> dict[str, dict[str, Any]]:
    """The readings of a three-level rung from its maps: ``per_level`` has ``levels`` ([3, H, W] per label) and
    ``avg`` ([H, W]). Returns reading -> summary."""
    stacked = per_level["levels"]
    scored = {reading: score({f: {c: m[k] for c, m in maps.items()} for f, maps in stacked.items()}, labels,
                             protocol_min_side)
              for k, reading in enumerate(LEVEL_READINGS)}
    out = {reading: summarize(q) for reading, q in scored.items()}
    by_pair = [{(q["frame"], q["label"]): q for q in scored[r]} for r in LEVEL_READINGS]
    pairs = list(by_pair[0])
    best = [{"iou": max(b[p]["iou"] for b in by_pair), "hit": max(b[p]["hit"] for b in by_pair)} for p in pairs]
    out["best"] = summarize(best)
    index = {lv.name: lv.index for lv in LEVELS}
    own = [by_pair[index[query_level[p[1]]]][p] for p in pairs if query_level.get(p[1]) in index]
    out["own"] = summarize(own) if query_level else {**summarize([]), "note": "the queries carry no level"}
    out["pick"] = summarize(score(stacked, labels, protocol_min_side))
    out["avg"] = summarize(score(per_level["avg"], labels, protocol_min_side))
    return out


def coverage_shares(seg: Tensor, labelled: np.ndarray) -> np.ndarray:
    """[4] counts of labelled pixels with a segment at 0, 1, 2, 3 levels. seg: [3, H, W]; labelled: bool [H, W]."""
    levels = (seg >= 0).sum(0).numpy()[labelled]
    return np.bincount(levels, minlength=NUM_LEVELS + 1).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------------------
# the benchmark


def _resized_levels(seg: Tensor, width: int, height: int) -> Tensor:
    """[3, h, w] segment rows resized (nearest) to [3, height, width]."""
    from gags.distill.losses import resize_segment_maps

    return resize_segment_maps(seg.long(), (height, width))


def run(config: BenchLadderConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes in OUT."""
    with scoped_torch_threads(config.threads):
        return _run(config)


def _run(config: BenchLadderConfig) -> dict[str, Any]:
    from gags.models import load_encoder
    from gags.query import render
    from gags.query.evaluate import labelled_views
    from gags.query.relevancy import CANONICAL_PHRASES
    from gags.synth.scenes import ids_dir, query_levels

    out = Path(config.out)
    ws = Workspace(out)
    ws.require_scene()
    scene, labels, by_split = labelled_views(out, config.labels)
    splits = [s for s in (SPLITS if config.split == "all" else (config.split,)) if by_split[s]]
    if not splits:
        raise GagsError(f"the labels of {out} cover no {config.split} view; choose another --split.")
    encoder_spec = config.encoder or ws.recorded_encoder()
    ws.check_encoder_weights(encoder_spec)
    encoder = load_encoder(encoder_spec, device="cpu")
    categories = list(dict.fromkeys(c for s in splits for n, _ in by_split[s] for c in labels[n].categories))
    embedded = encoder.encode_text(categories + list(CANONICAL_PHRASES)).float()
    query_of = dict(zip(categories, embedded[: len(categories)], strict=True))
    canon = embedded[len(categories):]
    has_features = ws.features_dir.is_dir()
    truth = ids_dir(scene.root)
    has_truth = truth.is_dir()
    query_level = query_levels(scene.root)
    methods = [m for m in ws.field_methods() if not config.methods or m in config.methods]
    notes = []
    if not has_truth:
        notes.append("R1 (exact masks) needs a procedural scene's id maps; this scene has none.")
    if not has_features:
        notes.append("R2 (segments) needs the segment stage's features; run `gags segment` first.")
    if not methods:
        notes.append("R3 needs a distilled field; run `gags distill` first.")
    geometry = render.load_geometry(out) if methods else None
    fields = {m: render.load_field(out, m) for m in methods}
    codecs = {m: f.autoencoder for m, f in fields.items() if f.autoencoder is not None and has_features}
    for m, f in fields.items():
        assert geometry is not None
        ws.check_field(m, len(f.features), len(geometry))
        if render.field_dim(f) != encoder.dim:
            raise GagsError(f"the {m} field decodes {render.field_dim(f)}-d features but the encoder {encoder_spec!r} "
                            f"embeds text in {encoder.dim}; pass the --encoder that made the features.")

    results: dict[str, Any] = {}
    for split in splits:
        frames = by_split[split]
        split_labels = {n: labels[n] for n, _ in frames}
        r0: Maps = {}
        r1: dict[str, Maps] = {"levels": {}, "avg": {}}
        r2: dict[str, Maps] = {"levels": {}, "avg": {}}
        r3: dict[str, Maps] = {m: {} for m in methods}
        r2_codes: dict[str, dict[str, Maps]] = {m: {"levels": {}, "avg": {}} for m in codecs}
        coverage = np.zeros(NUM_LEVELS + 1)
        for name, index in tqdm(frames, desc=f"ladder {split}", unit="view", leave=False):
            frame = labels[name]
            w, h = frame.width, frame.height
            cats = frame.categories
            query = torch.stack([query_of[c] for c in cats])
            r0[name] = {c: frame.masks[c].astype(np.float32) for c in cats}
            labelled = np.any(np.stack([frame.masks[c] for c in cats]), axis=0)
            if has_features:
                feats, seg_full = read_language_features(ws.features_dir, scene.names[index])
                seg = _resized_levels(torch.from_numpy(seg_full[list(ROWS)].astype(np.int64)), w, h)
                table = torch.from_numpy(feats.astype(np.float32))
                _add_levels(r2, name, cats, table, seg, query, canon)
                for m, autoencoder in codecs.items():
                    _add_levels(r2_codes[m], name, cats, through_autoencoder(autoencoder, table), seg, query, canon)
                coverage += coverage_shares(seg, labelled)
            if has_truth:
                rgb = scene.load_image(index)
                ids = read_ids(scene.root, feature_stem(scene.names[index]), *rgb.shape[:2])
                exact_feats, exact_full = exact_language_features(ids, rgb, encoder)  # as --segmenter exact stores
                seg_exact = _resized_levels(torch.from_numpy(exact_full[list(ROWS)].astype(np.int64)), w, h)
                _add_levels(r1, name, cats, torch.from_numpy(exact_feats.astype(np.float32)), seg_exact, query, canon)
            for m, field in fields.items():
                assert geometry is not None
                camera = render.camera_at(scene.cameras[index], w, h)
                rel = render.view_relevancy(geometry, field, camera, query, canon)  # [Q, L, H, W]
                r3[m][name] = {c: (rel[q, 0] if rel.shape[1] == 1 else rel[q]).numpy() for q, c in enumerate(cats)}
        entry: dict[str, Any] = {"n_frames": len(frames),
                                 "R0": summarize(score(r0, split_labels, config.protocol_min_side))}
        if has_truth:
            entry["R1"] = read_levels(r1, split_labels, query_level, config.protocol_min_side)
        if has_features:
            entry["R2"] = read_levels(r2, split_labels, query_level, config.protocol_min_side)
            total = coverage.sum()
            entry["coverage"] = {str(k): float(coverage[k] / total) if total else None for k in range(NUM_LEVELS + 1)}
            entry["R2 codes"] = {m: read_levels(r2_codes[m], split_labels, query_level, config.protocol_min_side)
                                 [METHODS[m].target] for m in codecs}
        entry["R3"] = {}
        for m in methods:
            summary = summarize(score(r3[m], split_labels, config.protocol_min_side))
            target = METHODS[m].target if m in METHODS else None
            if has_features and target is not None:
                base = entry["R2"][target]
                summary["target"] = target
                summary["kept"] = _kept(summary, base)
                if m in codecs:
                    summary["kept_codes"] = _kept(summary, entry["R2 codes"][m])
            entry["R3"][m] = summary
        results[split] = entry

    record = {"scene": str(out), "labels": str(config.labels) if config.labels else "the synthetic scene's own",
              "encoder": encoder_spec, "protocol_min_side": config.protocol_min_side, "methods": methods,
              "notes": notes, "splits": results, "fields": {m: how_made(m, f.config) for m, f in fields.items()},
              "segments": {k: v for k, v in ws.segment_settings().items() if k in SEGMENT_KEYS},
              "platform": platform.platform()}
    path = ws.bench_file(RESULT_NAME)
    record["provenance"] = provenance()
    write_json(path, record)
    print_table(record)
    print(f"gags bench ladder: {path}")
    return record


def through_autoencoder(autoencoder: LangSplatAutoencoder, table: Tensor) -> Tensor:
    """Segment features [M, D] encoded and decoded by a LangSplat autoencoder: [M, D] unit features, what a field of
    its codes is trained to reproduce."""
    with torch.no_grad():
        return autoencoder.decode(autoencoder.encode(table))


def _kept(summary: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float | None]:
    """R3 / R2 for mIoU and localization (None where the reading is 0)."""
    return {k: (summary[k] / base[k] if base[k] else None) for k in ("miou", "loc_acc")}


def how_made(method: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """How a field was made, from its resolved ``gags distill`` config: init (fields written before ``--init`` existed
    started from zeros), iterations, downscale, whether the loss was averaged per region (fields written before
    ``--region-aware`` had a CPU default of its own always were) and the decoders' precision (float32 before
    ``--precision`` existed); None for the training-free methods."""
    if method in METHODS and METHODS[method].build != "distill":
        return {"init": None, "iterations": None, "downscale": None, "region_aware": None, "precision": None}
    return {"init": config.get("init") or "zero", "iterations": config.get("iterations"),
            "downscale": config.get("downscale"), "region_aware": config.get("region_aware", True),
            "precision": config.get("precision", "float32")}


LOSS_MEANS = {True: "regions", False: "pixels"}
"""How the distillation loss is averaged (``--region-aware True|False``), as the kept table names it."""


def kept_markdown(records: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> str:
    """Several ladder records as one table: per record and field, how the field was made and its mIoU / localization
    with the share of its target's reading it keeps, on training and held-out views. names: one per record (default:
    the scene folder's name)."""
    lines = ["| scene | field | start, iterations, downscale, loss mean (precision if not float32) | training views "
             "| held-out views |",
             "| --- | --- | --- | ---: | ---: |"]
    for n, record in enumerate(records):
        scene = names[n] if names is not None else Path(record["scene"]).name
        for m in record["methods"]:
            made = record.get("fields", {}).get(m, {})
            iterations = made.get("iterations")
            how = ("training-free" if iterations is None else f"{made.get('init')}, 0" if iterations == 0
                   else f"{made.get('init')}, {iterations}, {made.get('downscale'):g}, "
                   f"{LOSS_MEANS[made.get('region_aware', True)]}"
                   + ("" if made.get("precision", "float32") == "float32" else f", {made['precision']}"))
            cells = [_cell(record["splits"][s]["R3"][m], kept_word="") for s in ("train", "test")]
            lines.append(f"| {scene} | {m} | {how} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SEGMENT_KEYS = ("segmenter", "prompts", "pred_iou_thresh", "stability_thresh", "mask_nms_score", "min_region_area")
"""What the ladder records of how the segments were made (``gags segment``'s settings)."""
RECORDED_BEFORE_SCALING = 100
"""``min_region_area`` of ladder records that do not hold it: ``gags segment``'s default was then the release's 100 px
whatever the image size (it is now scaled to the image: ``gags.segment.masks.min_region_area_for``)."""


def segments_markdown(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """Ladder records of one scene segmented in different ways, side by side: per record (names: the scene of each),
    the segmenter and its filters, the segments' readings R2 (own level, the protocol's pick, best level), the gags and
    avg fields (R3) and the labelled pixels with a segment at all three levels, held-out views (mIoU / localization)."""
    lines = ["| scene | segments | R2 own level | R2 pick | R2 best level | R3 gags | R3 avg | labelled pixels at 3 "
             "levels (training / held out) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, record in zip(names, records, strict=True):
        test = record["splits"]["test"]
        cells = [_score(test["R2"][r]) for r in ("own", "pick", "best")]
        cells += [_score(test["R3"][m]) if m in test["R3"] else "-" for m in ("gags", "avg")]
        cover = " / ".join(f"{_pct(record['splits'][s]['coverage']['3'])}%" for s in ("train", "test"))
        lines.append(f"| {name} | {segments_made(record.get('segments') or {})} | " + " | ".join(cells) +
                     f" | {cover} |")
    return "\n".join(lines)


def segments_made(made: Mapping[str, Any]) -> str:
    """How a ladder record's segments were made, in words: the segmenter, its quality filters (on: the release's;
    off: predicted IoU, stability and mask-NMS score at 0) and the small-region clean-up (``scaled``: the release's
    100 px scaled to the image)."""
    from gags.segment.exact import EXACT

    segmenter = made.get("segmenter", "?")
    if segmenter == EXACT:
        return f"{EXACT} (every entity, no prompts, no filters)"
    filters = "filters off" if made.get("pred_iou_thresh", 1) <= 0 and made.get("stability_thresh", 1) <= 0 else \
        "filters on"
    area = made.get("min_region_area", RECORDED_BEFORE_SCALING)
    return f"{segmenter}, {filters}, small regions: {'scaled' if area is None else f'{area} px'}"


def _add_levels(rung: dict[str, Maps], name: str, cats: Sequence[str], table: Tensor, seg: Tensor, query: Tensor,
                canon: Tensor) -> None:
    levels = level_relevancy(table, seg, query, canon).numpy()  # [Q, 3, H, W]
    avg = average_relevancy(table, seg, query, canon).numpy()  # [Q, H, W]
    rung["levels"][name] = {c: levels[q] for q, c in enumerate(cats)}
    rung["avg"][name] = {c: avg[q] for q, c in enumerate(cats)}


# ----------------------------------------------------------------------------------------------------------------------
# the table


def table_rows(record: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(rung, reading, per-split summaries) in ladder order, for the terminal and the report."""
    splits = record["splits"]
    rows: list[tuple[str, str, dict[str, Any]]] = [("R0", "label", {s: e["R0"] for s, e in splits.items()})]
    for rung, what in (("R1", "exact masks"), ("R2", "segments")):
        if all(rung in e for e in splits.values()):
            for reading in READINGS:
                rows.append((rung, f"{what}, {reading}", {s: e[rung][reading] for s, e in splits.items()}))
    first = next(iter(splits.values()))
    for m in first.get("R2 codes", {}):
        rows.append(("R2", f"{m} codes, {METHODS[m].target}", {s: e["R2 codes"][m] for s, e in splits.items()}))
    for m in record["methods"]:
        rows.append(("R3", f"field {m}", {s: e["R3"][m] for s, e in splits.items()}))
    return rows


SPLIT_NAMES = {"train": "training views", "test": "held-out views"}


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _score(summary: Mapping[str, Any]) -> str:
    """"mIoU / loc." of one split's summary, in %."""
    return f"{_pct(summary['miou'])} / {_pct(summary['loc_acc'])}"


def _cell(summary: Mapping[str, Any], kept_word: str = " kept") -> str:
    """"mIoU / loc." of one split's summary, with what a field keeps of its target when the summary says."""
    cell = _score(summary)
    if "kept" in summary:
        cell += f" ({_pct(summary['kept']['miou'])}% / {_pct(summary['kept']['loc_acc'])}%{kept_word})"
    return cell


def _cells(record: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(rung, reading, one "mIoU / loc." cell per split, with what a field keeps of its target) in ladder order."""
    return [(rung, label, [_cell(per[s]) for s in record["splits"]]) for rung, label, per in table_rows(record)]


def _coverage_lines(record: Mapping[str, Any]) -> list[str]:
    """One line per split: the share of labelled pixels with a segment at 0 to 3 levels."""
    lines = []
    for s, entry in record["splits"].items():
        cov = entry.get("coverage")
        if cov:
            lines.append(f"{SPLIT_NAMES[s].capitalize()}: labelled pixels with a segment at 0 / 1 / 2 / 3 levels: "
                         + " / ".join(f"{_pct(cov[str(k)])}%" for k in range(NUM_LEVELS + 1)))
    return lines


def markdown(record: Mapping[str, Any]) -> str:
    """The ladder as a Markdown table (mIoU / localization in %, and what each field keeps of its target)."""
    splits = list(record["splits"])
    lines = ["| rung | relevancy from | " + " | ".join(SPLIT_NAMES[s] for s in splits) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in splits) + " |"]
    lines += [f"| {rung} | {label} | " + " | ".join(cells) + " |" for rung, label, cells in _cells(record)]
    lines += [f"\n{line}." for line in _coverage_lines(record)]
    return "\n".join(lines)


def print_table(record: Mapping[str, Any]) -> None:
    """The ladder as a table: mIoU / localization (%) per split, and what each field keeps of its target."""
    splits = list(record["splits"])
    print(f"{'rung':<5} {'relevancy from':<28} "
          + " ".join(f"{SPLIT_NAMES[s] + ' mIoU / loc.':>28}" for s in splits))
    for rung, label, cells in _cells(record):
        print(f"{rung:<5} {label:<28} " + " ".join(f"{cell:>28}" for cell in cells))
    for line in _coverage_lines(record):
        print(line)
    for note in record["notes"]:
        print(f"note: {note}")


__all__ = ["READINGS", "average_relevancy", "how_made", "kept_markdown", "level_relevancy",
           "markdown", "print_table", "run", "table_rows"]
