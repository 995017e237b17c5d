"""``gags bench``: benchmarks that write JSON.

- ``gags bench ablation`` (:mod:`gags.bench.ablation`): the ablation tables over presets and seeds.
- ``gags bench query OUT`` (:mod:`gags.bench.query`): query speed, GAGS vs LangSplat.
- ``rasterize``, ``reconstruct``, ``mask-nms``: the scripts in the repository's ``benchmarks/`` folder.
"""

from __future__ import annotations

from typing import Any

from gags.config import BenchConfig
from gags.errors import GagsError

SCRIPTS = {"rasterize": "benchmarks/rasterize.py", "reconstruct": "benchmarks/reconstruct.py",
           "mask-nms": "benchmarks/mask_nms.py"}
"""Benchmarks that are scripts of the source repository (not installed with the package)."""


def run(config: BenchConfig) -> Any:
    """Run the benchmark named by ``config.which``."""
    if config.which == "ablation":
        from gags.bench.ablation import run as ablation

        return ablation(config)
    if config.which == "query":
        from gags.bench.query import run as query

        return query(config)
    script = SCRIPTS[config.which]
    raise GagsError(f"`gags bench {config.which}` is a script of the source repository: run `python {script} --help` "
                    "from a checkout of gags (it writes its figures as JSON).")
