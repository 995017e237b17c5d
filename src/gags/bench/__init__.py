"""``gags bench NAME``: benchmarks that measure, print and write their figures as JSON; one module each.

=======================  ============================================================================================
``ablation``             the ablation tables over presets and seeds (:mod:`gags.bench.ablation`)
``query``                query speed, GAGS vs LangSplat, on one scene output folder (:mod:`gags.bench.query`)
``ladder``               where query quality is lost: labels, exact masks, segments, fields (:mod:`gags.bench.ladder`)
``rasterize``            the PyTorch rasterizer's forward and backward time (:mod:`gags.bench.rasterize`)
``reconstruct``          ``gags reconstruct`` on real photos: PSNR along the run (:mod:`gags.bench.reconstruct`)
``mask-nms``             vectorised mask NMS against LangSplat's per-pair rules (:mod:`gags.bench.mask_nms`)
``hierarchy-segmenter``  the embedded segmenter's speed and quality (:mod:`gags.bench.hierarchy_segmenter`)
``segment-consistency``  multi-view consistency of the segments (:mod:`gags.bench.segment_consistency`)
``synth``                the procedural renderer's speed (:mod:`gags.bench.synth`)
``segment-scaling``      ``gags segment`` in threads and on Ray; a model of N GPUs (:mod:`gags.bench.segment_scaling`)
``granularity``          which level a field answers with, and GaD's weights (:mod:`gags.bench.granularity`)
=======================  ============================================================================================
"""

from __future__ import annotations

import importlib
from typing import Any

from gags import config as cfg

BENCHMARKS: dict[type, str] = {
    cfg.BenchAblationConfig: "gags.bench.ablation",
    cfg.BenchQueryConfig: "gags.bench.query",
    cfg.BenchLadderConfig: "gags.bench.ladder",
    cfg.BenchRasterizeConfig: "gags.bench.rasterize",
    cfg.BenchReconstructConfig: "gags.bench.reconstruct",
    cfg.BenchMaskNmsConfig: "gags.bench.mask_nms",
    cfg.BenchSegmenterConfig: "gags.bench.hierarchy_segmenter",
    cfg.BenchConsistencyConfig: "gags.bench.segment_consistency",
    cfg.BenchSynthConfig: "gags.bench.synth",
    cfg.BenchSegmentScalingConfig: "gags.bench.segment_scaling",
    cfg.BenchGranularityConfig: "gags.bench.granularity",
}
"""The module whose ``run(config)`` runs each benchmark's config."""


def run(config: cfg.BenchConfig) -> Any:
    """Run the benchmark ``config.benchmark`` names; returns its record."""
    module = importlib.import_module(BENCHMARKS[type(config.benchmark)])
    return module.run(config.benchmark)
