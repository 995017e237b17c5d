"""What the two trainers share (``gags reconstruct`` and ``gags distill``): the checkpoint file, the resume check, the
view schedule, the training curve, the clocks and the progress bar.

Checkpoint: one safetensors file, written atomically (a kill during the write leaves the previous one intact).
Tensors are named ``GROUP.KEY`` (e.g. ``splats.means``, ``optim.features.0.exp_avg``) plus ``rng.torch``, the global
torch generator's state; metadata (strings) are ``format`` (``gags-KIND-checkpoint/2``), ``step`` and ``info``, a
JSON object the trainer chooses (the settings it was made with, seconds so far, curves). A trainer continues exactly
where it stopped: every random draw comes from the saved generator or from :func:`view_index`, which has no state.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from gags.errors import GagsError
from gags.io import atomic_path, read_safetensors

FORMAT_VERSION = 2
"""Version of the checkpoint layout; a checkpoint of another version is refused (delete it to start over)."""
RNG_KEY = "rng.torch"
CURVE_POINTS = 200
"""Training curves keep about this many points (one every ``iterations / 200`` iterations)."""


def checkpoint_format(kind: str) -> str:
    """The ``format`` metadata of a ``kind`` (``reconstruct``, ``distill``) checkpoint."""
    return f"gags-{kind}-checkpoint/{FORMAT_VERSION}"


def view_index(seed: int, step: int, n_views: int) -> int:
    """The training view of 0-based ``step``: a seeded random permutation of the views per epoch (stateless, so a
    resumed run draws the same views)."""
    epoch, pos = divmod(step, n_views)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(n_views, generator=g)[pos])


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints


@dataclass
class Checkpoint:
    """What a training run needs to continue exactly where it stopped.

    step: iterations done; tensors: ``GROUP.KEY`` -> tensor; info: JSON-serialisable facts; rng_state: the global torch
    generator's state (``torch.get_rng_state()``).
    """

    step: int
    tensors: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    rng_state: Tensor = field(default_factory=torch.get_rng_state)

    def group(self, name: str) -> dict[str, Tensor]:
        """The tensors ``name.KEY``, keyed by KEY."""
        prefix = f"{name}."
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def grouped(name: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` keyed ``name.KEY``, detached, contiguous, on the CPU (ready for :func:`save_checkpoint`)."""
    return {f"{name}.{k}": v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(path: Path, kind: str, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.tensors.items()}
    tensors[RNG_KEY] = ckpt.rng_state.contiguous().clone()
    metadata = {"format": checkpoint_format(kind), "step": str(ckpt.step), "info": json.dumps(ckpt.info, default=str)}
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: Path, kind: str) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; GagsError (saying to delete it) when it is damaged or of
    another kind or version."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, "checkpoint", "Delete it to start over.")
    if metadata.get("format") != checkpoint_format(kind):
        raise GagsError(f"{path} is not a gags {kind} checkpoint of this version (format {metadata.get('format')!r}, "
                        f"expected {checkpoint_format(kind)!r}). Delete it to start over.")
    try:
        step, info = int(metadata["step"]), json.loads(metadata.get("info", "{}"))
        rng_state = tensors.pop(RNG_KEY)
    except (KeyError, ValueError) as exc:
        raise GagsError(f"checkpoint {path} is incomplete ({exc}). Delete it to start over.") from exc
    return Checkpoint(step=step, tensors=tensors, info=info, rng_state=rng_state)


def check_settings(path: Path, then: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """GagsError when the settings a checkpoint was made with (``then``) differ from this run's (``now``)."""
    changed = {k: (then.get(k), v) for k, v in now.items() if then.get(k) != v}
    if changed:
        raise GagsError(f"{path} was made with other settings ({changed}, as (then, now)). Run with the same "
                        "settings, pass --no-resume, or delete the checkpoint to start over.")


def optimizer_tensors(optimizers: Mapping[str, torch.optim.Optimizer]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state of named optimizers as checkpoint tensors (``optim.NAME.PARAM.KEY``) and their parameter groups
    (JSON-serialisable, for ``info``)."""
    tensors: dict[str, Tensor] = {}
    groups: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for idx, param_state in sd["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{name}.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    return tensors, groups


def load_optimizers(optimizers: Mapping[str, torch.optim.Optimizer], ckpt: Checkpoint, groups: Mapping[str, Any]
                    ) -> None:
    """Put the saved state of :func:`optimizer_tensors` back into freshly made optimizers over parameters of the same
    shapes (ValueError / KeyError when they do not fit)."""
    saved = ckpt.group("optim")
    for name, opt in optimizers.items():
        per_param: dict[int, dict[str, Tensor]] = {}
        prefix = f"{name}."
        for key, value in saved.items():
            if key.startswith(prefix):
                idx, _, state_key = key[len(prefix):].partition(".")
                per_param.setdefault(int(idx), {})[state_key] = value
        params = [p for g in opt.param_groups for p in g["params"]]
        for index, state in per_param.items():
            for state_key, tensor in state.items():
                if state_key != "step" and tensor.shape != params[index].shape:
                    raise ValueError(f"optimizer state {name}.{index}.{state_key} has shape {tuple(tensor.shape)}, the "
                                     f"parameter {tuple(params[index].shape)}")
        opt.load_state_dict({"state": per_param, "param_groups": groups[name]})


# ----------------------------------------------------------------------------------------------------------------------
# clocks, curves, progress


class Clock:
    """Wall and process CPU seconds of training over every session of a run (those before this one included), with
    pauses (evaluations) left out."""

    def __init__(self, seconds_before: float = 0.0, cpu_seconds_before: float = 0.0) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._seconds_before, self._cpu_before = float(seconds_before), float(cpu_seconds_before)
        self._paused_wall = self._paused_cpu = 0.0

    @property
    def seconds(self) -> float:
        return self._seconds_before + time.perf_counter() - self._wall0 - self._paused_wall

    @property
    def cpu_seconds(self) -> float:
        return self._cpu_before + time.process_time() - self._cpu0 - self._paused_cpu

    def pause(self) -> _Pause:
        """``with clock.pause():`` leaves the block's time out of the training time."""
        return _Pause(self)


class _Pause:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.clock._paused_wall += time.perf_counter() - self.wall
        self.clock._paused_cpu += time.process_time() - self.cpu


Value = float | list[float]


class Curve:
    """A training curve of about ``CURVE_POINTS`` points: the values added at every iteration are averaged over the
    stretch since the previous point (lists element-wise), and a point is made every ``iterations / CURVE_POINTS``
    iterations and at the last one.

    ``points`` and the running sums (``state()``) go into a checkpoint, so a resumed run continues the same curve.
    """

    def __init__(self, iterations: int, state: Mapping[str, Any] | None = None) -> None:
        self.every = max(1, iterations // CURVE_POINTS)
        self.iterations = iterations
        state = state or {}
        self.points: list[dict[str, Any]] = list(state.get("points", []))
        self._sums: dict[str, Any] = dict(state.get("sums", {}))
        self._counts: dict[str, int] = dict(state.get("counts", {}))

    def add(self, values: Mapping[str, Value]) -> None:
        """Values of one iteration (a key may be missing in some iterations: it is averaged where present)."""
        for key, value in values.items():
            if isinstance(value, list):
                prev = self._sums.get(key) or [0.0] * len(value)
                self._sums[key] = [a + float(b) for a, b in zip(prev, value, strict=True)]
            else:
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def due(self, iteration: int) -> bool:
        """Whether ``iteration`` (1-based) closes a stretch."""
        return iteration % self.every == 0 or iteration == self.iterations

    def close(self, iteration: int, **extra: Any) -> dict[str, Any]:
        """Make the point of ``iteration``: the stretch's means and ``extra`` (e.g. seconds); start a new stretch."""
        point: dict[str, Any] = {"iteration": iteration}
        for key, total in self._sums.items():
            n = self._counts[key]
            point[key] = [v / n for v in total] if isinstance(total, list) else total / n
        point.update(extra)
        self.points.append(point)
        self._sums, self._counts = {}, {}
        return point

    def state(self) -> dict[str, Any]:
        """JSON-serialisable: the points and the current stretch's sums."""
        return {"points": self.points, "sums": self._sums, "counts": self._counts}


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm:
    """The trainers' progress bar (iterations)."""
    return tqdm(total=total, initial=initial, desc=desc, unit="it", disable=not enabled, dynamic_ncols=True)


def finite_or_raise(value: float, iteration: int, checkpoint: Path | None) -> float:
    """``value`` (a loss) when it is finite, else a GagsError naming the iteration and the checkpoint to delete."""
    if not math.isfinite(value):
        raise GagsError(f"the loss became {value} at iteration {iteration}. Check the inputs and settings"
                        + (f"; delete {checkpoint} to start over." if checkpoint else "."))
    return value


__all__ = ["CURVE_POINTS", "Checkpoint", "Clock", "Curve", "check_settings", "checkpoint_format", "finite_or_raise",
           "grouped", "load_checkpoint", "load_optimizers", "optimizer_tensors", "progress_bar", "save_checkpoint",
           "view_index"]
