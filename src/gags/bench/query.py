"""``gags bench query OUT``: time to answer every (frame, query) pair of a scene's evaluation set, GAGS vs LangSplat,
and every other field of OUT (e.g. the lifted fields) beside them (``others``, with their ratio to GAGS).

The evaluation set is what ``gags eval`` evaluates (``gags.query.evaluate.labelled_views``): every labelled frame of
both splits, each with the categories of its labels as text queries, rendered at the label resolution. Per frame, each
method does what a query needs (``gags.query.render``, ``gags.query.metrics``; the same path as ``gags query`` and
``gags eval``):

- render: GAGS renders its one 16-d field; LangSplat renders each of its three 3-d level fields separately, as its
  three models are rendered (one rasterization per level);
- decode: every pixel through the field's decoder once (GAGS: the 16 -> 512 feature decoder; LangSplat: the
  autoencoder's 3 -> 512 decoder for each level);
- relevancy: every query of the frame against the canonical phrases, per level;
- post-processing: per query, the 30x30 box filter, the localization point and the segmentation mask (with several
  levels, the level choice of ``gags.query.metrics.choose_level``), on the maps as ``gags eval`` sees them: labels
  smaller than ``gags.query.evaluate.PROTOCOL_MIN_SIDE`` (720 px) are evaluated on maps upsampled to it. Since that
  makes post-processing the larger share on small synthetic labels, the same passes are also timed with localization
  and mask at the render resolution (``*_render_resolution``, ``ratio_render_resolution``), as ``gags query`` does.

Protocol: text embeddings are computed once before timing (they are shared; their time is reported apart). One
warm-up pass over the whole set per variant, then ``repeats`` passes, the variants alternating within each (so that a
change of machine load hits all of them); each variant's figure is its fastest pass (the least disturbed by other
processes), with that pass's breakdown. The 3D query (``gags.query.select3d.select_gaussians``: decode every Gaussian
once and score one text, as ``gags query --ply`` does per text) is timed once per distinct query text after one
warm-up query, the two methods alternating text by text; its figure is the median over the texts (each one decodes
every Gaussian, so one pass over many texts is already long). For reference, LangSplat is also timed with its three
levels rendered together as one 9-channel field (``langsplat_one_render``), which this rasterizer allows.

Writes ``Workspace.bench_file("query")`` (atomically) and prints a summary.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gags.bench.provenance import provenance
from gags.config import BenchQueryConfig
from gags.errors import GagsError
from gags.io import write_json
from gags.query.evaluate import PROTOCOL_MIN_SIDE
from gags.threads import scoped_torch_threads
from gags.workspace import Workspace

RESULT_NAME = "query"
"""The record's name in the scene output folder's benchmark records."""
METHODS = ("gags", "langsplat")
PARTS = ("render", "decode", "relevancy", "post")
"""The breakdown of a method's time (seconds): rasterization, decoders, relevancy, localization + mask."""
TARGET_RATIO = 3.0
"""Issue 7's target for langsplat_s / gags_s (the GAGS paper reports about 2x on a GPU)."""


@dataclass(frozen=True)
class Frame:
    """One labelled view of the evaluation set: its camera at the label resolution and its queries.

    query: [Q, D] text embeddings of ``labels`` (the frame's categories, in label-file order).
    """

    name: str
    camera: Any
    labels: tuple[str, ...]
    query: Tensor


def render_slices(field: Any, separate_levels: bool) -> list[slice]:
    """Channel slices of the per-Gaussian features rendered one rasterization each: the three level fields of a
    LangSplat field separately (``separate_levels``), otherwise every channel at once."""
    channels = int(field.features.shape[1])
    if field.autoencoder is None or not separate_levels:
        return [slice(0, channels)]
    code = field.autoencoder.code_dim
    return [slice(start, start + code) for start in range(0, channels, code)]


def answer_frames(geometry: Any, field: Any, frames: Sequence[Frame], canon: Tensor, separate_levels: bool = True,
                  protocol_min_side: int = PROTOCOL_MIN_SIDE) -> dict[str, float]:
    """Answer every query of every frame once; returns the wall seconds per part (``PARTS``) and ``total``.

    separate_levels: render a LangSplat field's levels one rasterization each; protocol_min_side: the relevancy maps
    of labels smaller than this are upsampled to it before localization and mask, as ``gags eval`` does (0: never).
    """
    from gags.query import render
    from gags.query.evaluate import protocol_size, upsample_maps
    from gags.query.metrics import MASK_THRESHOLD, box_filter, localize, segment

    seconds = dict.fromkeys(PARTS, 0.0)
    slices = render_slices(field, separate_levels)
    start_all = time.perf_counter()
    for frame in frames:
        t0 = time.perf_counter()
        parts = [render.render_features(geometry, field.features[:, s], frame.camera) for s in slices]
        rendered = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # [H, W, F]
        seconds["render"] += time.perf_counter() - t0
        rel = render.decoded_relevancy(field, rendered, frame.query, canon, seconds=seconds)  # [Q, L, H, W]
        t0 = time.perf_counter()
        size = protocol_size(frame.camera.width, frame.camera.height, protocol_min_side)
        for q in range(rel.shape[0]):
            maps = upsample_maps(rel[q].numpy(), *size)  # [L, H', W']
            filtered = box_filter(maps)
            localize(maps, filtered)
            segment(maps, MASK_THRESHOLD, filtered)
        seconds["post"] += time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start_all
    return seconds


def select_each(field: Any, queries: Tensor, canon: Tensor) -> list[float]:
    """Wall seconds of the 3D selection of each query (one ``select_gaussians`` per row of ``queries`` [Q, D])."""
    from gags.query.select3d import select_gaussians

    seconds = []
    for q in queries:
        start = time.perf_counter()
        select_gaussians(field, q, canon)
        seconds.append(time.perf_counter() - start)
    return seconds


def _fastest(passes: list[dict[str, float]]) -> dict[str, float]:
    return min(passes, key=lambda p: p["total"])


def _load(out: Path, method: str) -> Any:
    from gags.query import render

    path = Workspace(out).field_file(method)
    if not path.is_file():
        raise GagsError(f"{path} does not exist: `gags bench query` compares the gags and langsplat fields of one "
                        f"scene. Make it with `gags distill {out} --method {method}`, then run the benchmark again.")
    return render.load_field(out, method)


def run(config: BenchQueryConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes in OUT."""
    from gags.query import render
    from gags.query.evaluate import labelled_views, protocol_size

    if config.repeats < 1:
        raise GagsError(f"--repeats must be at least 1, got {config.repeats}.")
    out = Path(config.out)
    ws = Workspace(out)
    ws.require_scene()
    fields = {m: _load(out, m) for m in METHODS}
    others = [m for m in ws.field_methods() if m not in METHODS]  # every other field of OUT is timed too
    fields.update({m: render.load_field(out, m) for m in others})
    geometry = render.load_geometry(out)
    for method, field in fields.items():
        ws.check_field(method, len(field.features), len(geometry))
    dims = {render.field_dim(f) for f in fields.values()}
    if len(dims) != 1:
        raise GagsError(f"the fields of {out} decode to different sizes ({sorted(dims)}): they were distilled from "
                        "different features. Re-run `gags distill` for each.")
    scene, labels, by_split = labelled_views(out, config.labels)
    views = [v for split in ("train", "test") for v in by_split[split]]
    if not views:
        raise GagsError(f"no labelled view of {out} matches an image of the scene; nothing to time.")
    encoder = config.encoder or ws.recorded_encoder()
    ws.check_encoder_weights(encoder)
    texts = list(dict.fromkeys(c for name, _ in views for c in labels[name].categories))

    with scoped_torch_threads(config.threads):
        start = time.perf_counter()
        embedded, canon = render.text_embeddings(encoder, texts, dims.pop())
        text_s = time.perf_counter() - start
        by_text = dict(zip(texts, embedded, strict=True))
        frames = [Frame(name, render.camera_at(scene.cameras[index], labels[name].width, labels[name].height),
                        tuple(labels[name].categories),
                        torch.stack([by_text[c] for c in labels[name].categories]))
                  for name, index in views]
        load_before = os.getloadavg()
        variants = {  # name: (field, one rasterization per level, protocol_min_side)
            "gags": (fields["gags"], True, PROTOCOL_MIN_SIDE),
            "langsplat": (fields["langsplat"], True, PROTOCOL_MIN_SIDE),
            "langsplat_one_render": (fields["langsplat"], False, PROTOCOL_MIN_SIDE),
            "gags_render_resolution": (fields["gags"], True, 0),
            "langsplat_render_resolution": (fields["langsplat"], True, 0),
            **{m: (fields[m], True, PROTOCOL_MIN_SIDE) for m in others},
        }
        passes: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        for args in variants.values():  # warm-up
            answer_frames(geometry, args[0], frames, canon, *args[1:])
        for _ in range(config.repeats):
            for name, args in variants.items():
                passes[name].append(answer_frames(geometry, args[0], frames, canon, *args[1:]))
        timed = [*METHODS, *others]
        per_text: dict[str, list[float]] = {m: [] for m in timed}
        for method in timed:
            select_each(fields[method], embedded[:1], canon)  # warm-up
        for q in range(len(texts)):  # alternating, so that a change of load hits every method
            for method in timed:
                per_text[method] += select_each(fields[method], embedded[q:q + 1], canon)
        load_after = os.getloadavg()
        threads = torch.get_num_threads()

    best = {name: _fastest(p) for name, p in passes.items()}
    gags_s, langsplat_s = best["gags"]["total"], best["langsplat"]["total"]
    median_3d = {m: statistics.median(v) for m, v in per_text.items()}
    sizes = sorted({(f.camera.width, f.camera.height) for f in frames})
    protocol_sizes = sorted({protocol_size(f.camera.width, f.camera.height) for f in frames})
    record = {
        "gags_s": gags_s,
        "langsplat_s": langsplat_s,
        "ratio": langsplat_s / gags_s,
        "target_ratio": TARGET_RATIO,
        "breakdown": {name: {**{f"{k}_s": b[k] for k in PARTS}, "total_s": b["total"],
                             "renders_per_frame": len(render_slices(variants[name][0], variants[name][1])),
                             "protocol_min_side": variants[name][2],
                             "levels": variants[name][0].levels}
                      for name, b in best.items()},
        "langsplat_one_render_s": best["langsplat_one_render"]["total"],
        "ratio_render_resolution": (best["langsplat_render_resolution"]["total"]
                                    / best["gags_render_resolution"]["total"]),
        "query_3d": {"gags_s": median_3d["gags"], "langsplat_s": median_3d["langsplat"],
                     "ratio": median_3d["langsplat"] / median_3d["gags"],
                     "gags_total_s": sum(per_text["gags"]), "langsplat_total_s": sum(per_text["langsplat"]),
                     "n_queries": len(texts), "num_gaussians": len(geometry), "per_query_s": per_text},
        "others": {m: {"total_s": best[m]["total"], "ratio_to_gags": best[m]["total"] / gags_s,
                       "query_3d_s": median_3d[m], "levels": fields[m].levels} for m in others},
        "text_encode_s": text_s,
        "n_frames": len(frames),
        "n_queries": sum(len(f.labels) for f in frames),
        "n_texts": len(texts),
        "resolution": [list(s) for s in sizes],
        "protocol_resolution": [list(s) for s in protocol_sizes],
        "num_gaussians": len(geometry),
        "encoder": encoder,
        "repeats": config.repeats,
        "passes_total_s": {name: [p["total"] for p in ps] for name, ps in passes.items()},
        "torch_threads": threads,
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch_version": torch.__version__,
        "platform": platform.platform(),
        "out": str(out),
    }
    path = ws.bench_file(RESULT_NAME)
    record["provenance"] = provenance()
    write_json(path, record)
    print_summary(record)
    print(f"gags bench query: {path}")
    return record


def print_summary(record: dict[str, Any]) -> None:
    """Print the headline (seconds, ratio) and the breakdown table."""
    print(f"{record['n_queries']} (frame, query) pairs on {record['n_frames']} frames at "
          f"{', '.join('x'.join(map(str, s)) for s in record['resolution'])} (maps evaluated at "
          f"{', '.join('x'.join(map(str, s)) for s in record['protocol_resolution'])}), {record['num_gaussians']} "
          "Gaussians, "
          f"{record['torch_threads']} torch thread(s) on {record['cpu_count']} CPU(s), load "
          f"{record['load_average_before'][0]:.1f}")
    print(f"{'method':<28} {'render':>8} {'decode':>8} {'relev.':>8} {'post':>8} {'total s':>8}")
    for name, b in record["breakdown"].items():
        print(f"{name:<28} {b['render_s']:>8.3f} {b['decode_s']:>8.3f} {b['relevancy_s']:>8.3f} {b['post_s']:>8.3f} "
              f"{b['total_s']:>8.3f}")
    q3 = record["query_3d"]
    print(f"gags_s {record['gags_s']:.3f}, langsplat_s {record['langsplat_s']:.3f}, ratio {record['ratio']:.2f} "
          f"(target >= {record['target_ratio']:.0f}); with localization and mask at the render resolution: ratio "
          f"{record['ratio_render_resolution']:.2f}")
    print(f"3D query (median of {q3['n_queries']} texts, one each): gags {q3['gags_s']:.3f} s, langsplat "
          f"{q3['langsplat_s']:.3f} s, ratio {q3['ratio']:.2f}")
    for name, o in record.get("others", {}).items():
        print(f"{name}: {o['total_s']:.3f} s ({o['ratio_to_gags']:.2f} x gags), 3D query {o['query_3d_s']:.3f} s")
