"""Chains of stages that resume: a step whose final artifact exists is skipped.

Shared by ``gags demo`` and ``gags bench ablation``. A :class:`Step` names the file whose presence means it is done
(every stage writes its final artifact atomically and last, so a present file is a finished step); :func:`run_steps`
runs the steps that are not done, in order, and records the seconds of each in a JSON file (``{"seconds": {name: s}}``)
after every step, so an interrupted chain keeps the timings of what it finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gags.io import read_json, write_json


@dataclass(frozen=True)
class Step:
    """One stage of a chain: its name, the file whose presence means it is done, and how to run it."""

    name: str
    done_marker: Path
    run: Callable[[], Any]


@dataclass
class StepsResult:
    """What :func:`run_steps` did: seconds per step (this run's and earlier runs' from the timings file), the names of
    the steps it ran and of those it found done."""

    seconds: dict[str, float] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_timings(path: Path | None) -> dict[str, float]:
    """The ``seconds`` of a timings file written by :func:`run_steps` ({} when there is none)."""
    if path is None or not Path(path).is_file():
        return {}
    return dict(read_json(Path(path)).get("seconds", {}))


def _print(line: str) -> None:
    print(line, flush=True)


def run_steps(steps: Sequence[Step], timings_path: Path | None = None,
              log: Callable[[str], None] = _print) -> StepsResult:
    """Run every step whose ``done_marker`` does not exist, in order; skip the others.

    Prints ``[i/n] NAME ...`` before a step and ``[i/n] NAME: S s`` after it (``done already (MARKER)`` when skipped).
    With ``timings_path``, the seconds of every step run so far are written there after each step, merged with the
    ones already in the file.
    """
    result = StepsResult(seconds=read_timings(timings_path))
    for i, step in enumerate(steps, start=1):
        if step.done_marker.is_file():
            log(f"[{i}/{len(steps)}] {step.name}: done already ({step.done_marker})")
            result.skipped.append(step.name)
            continue
        log(f"[{i}/{len(steps)}] {step.name} ...")
        start = time.perf_counter()
        step.run()
        result.seconds[step.name] = round(time.perf_counter() - start, 2)
        result.ran.append(step.name)
        if timings_path is not None:
            write_json(Path(timings_path), {"seconds": result.seconds})
        log(f"[{i}/{len(steps)}] {step.name}: {result.seconds[step.name]:.1f} s")
    return result


__all__ = ["Step", "StepsResult", "read_timings", "run_steps"]
