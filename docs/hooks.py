"""MkDocs hooks: pages that are generated from the code and from benchmark records, never copied by hand.

Markers a page may hold (each on its own line):

- ``<!-- gags:methods -->``: the method registry (``gags.methods.METHODS``) as a table.
- ``<!-- gags:bench KIND PATH -->``: the table a benchmark writes, made from its JSON record at ``PATH`` (relative to
  the repository) by the benchmark's own formatter, followed by the record's provenance (commit, machine, date).
  KIND: ``demo`` | ``demo-seeds`` (PATH a glob of several demo records) | ``segment-scaling`` | ``ladder`` |
  ``kept`` (PATH a glob of several ladder records: what each field keeps) | ``segmenters`` (PATH a glob of ladder
  records of scenes segmented in different ways) | ``ablation`` |
  ``segmenter-area`` and ``segmenter-quality`` (PATH a glob of ``gags bench hierarchy-segmenter quality`` records, one
  per segmenter: by the true entity's area, and per level).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- gags:(\w+)(?: ([\w-]+) (\S+))? -->$", re.MULTILINE)


def _methods_table() -> str:
    from gags.methods import METHODS

    lines = ["| `--method` | table label | what it is | source |", "| --- | --- | --- | --- |"]
    for m in METHODS.values():
        lines.append(f"| `{m.name}` | {m.label} | {m.description} | {m.paper} |")
    return "\n".join(lines)


def _bench_table(kind: str, path: str) -> str:
    from gags.bench.provenance import describe

    if kind == "demo-seeds":
        from gags.demo import spread_markdown

        paths = sorted(ROOT.glob(path))
        if not paths:
            raise ValueError(f"no record matches {path}")
        records = [json.loads(p.read_text()) for p in paths]
        stamps = " ".join(f"Run {i}: {describe(r)}" for i, r in enumerate(records))
        return f"{spread_markdown(records)}\n\n*{stamps} Records: `{path}`.*"
    if kind in ("segmenter-area", "segmenter-quality"):
        from gags.bench.hierarchy_segmenter import by_area_markdown, quality_markdown

        paths = sorted(ROOT.glob(path), reverse=True)  # tinysam before the oracle, before hierarchy
        if not paths:
            raise ValueError(f"no record matches {path}")
        records = [json.loads(p.read_text()) for p in paths]
        stamps = " ".join(dict.fromkeys(describe(r) for r in records))
        table = (by_area_markdown if kind == "segmenter-area" else quality_markdown)(records)
        return f"{table}\n\n*{stamps} Records: `{path}`.*"
    if kind in ("kept", "segmenters"):  # several ladder records, named SCENE_ORDER-WHAT.json
        from gags.bench.ladder import kept_markdown, segments_markdown

        paths = sorted(ROOT.glob(path))
        if not paths:
            raise ValueError(f"no record matches {path}")
        records = [json.loads(p.read_text()) for p in paths]
        stamps = " ".join(dict.fromkeys(describe(r) for r in records))
        names = [p.stem.split("_")[0] for p in paths]
        table = (kept_markdown if kind == "kept" else segments_markdown)(records, names)
        return f"{table}\n\n*{stamps} Records: `{path}`.*"
    record: dict[str, Any] = json.loads((ROOT / path).read_text())
    if kind == "ladder":
        from gags.bench.ladder import markdown

        body = markdown(record)
    elif kind == "ablation":
        from gags.bench.ablation import markdown

        body = markdown(record["tables"], record["settings"], len(record["runs"]))
        body = "\n".join(line for line in body.splitlines() if not line.startswith("# "))
        body = body.replace("\n## ", "\n#### ")
    elif kind == "segment-scaling":
        from gags.bench.segment_scaling import markdown

        body = markdown(record)
    elif kind == "demo":
        from gags.demo import markdown

        body = markdown(record)
    else:
        raise ValueError(f"unknown benchmark kind {kind!r} in a gags:bench marker")
    return f"{body}\n\n*{describe(record)} Record: `{path}`.*"


def on_page_markdown(markdown: str, **_: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        what, kind, path = match.groups()
        if what == "methods":
            return _methods_table()
        if what == "bench" and kind and path:
            return _bench_table(kind, path)
        raise ValueError(f"unknown marker {match.group(0)}")

    return MARKER.sub(replace, markdown)
