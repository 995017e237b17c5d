"""Resumable training checkpoints: one safetensors file, written atomically.

Tensors: ``splats.KEY`` (parameters), ``optim.KEY.STATE`` (Adam moments and step count per parameter),
``strategy.NAME`` (densification statistics), ``rng.torch`` (the global torch generator, which densification's splits
draw from). Metadata (strings): ``format``, ``step``, and ``info`` (a JSON object the caller chooses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gags.errors import GagsError
from gags.io import atomic_path

FORMAT = "gags-reconstruct-checkpoint/1"


@dataclass
class Checkpoint:
    """What a training run needs to continue exactly where it stopped."""

    step: int
    """Iterations already done."""
    splats: dict[str, torch.Tensor]
    """Raw parameters, keys of ``gags.splat.gaussians.SPLAT_KEYS``."""
    optimizer_states: dict[str, dict[str, torch.Tensor]]
    """Per parameter name: Adam state (``step``, ``exp_avg``, ``exp_avg_sq``); empty before the first step."""
    strategy_state: dict[str, Any]
    """Densification state (tensors or None, plus ``scene_scale``)."""
    rng_state: torch.Tensor
    """``torch.get_rng_state()``."""
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts (settings it was made with, seconds so far)."""


def optimizer_states(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, dict[str, torch.Tensor]]:
    """The per-parameter state of one-parameter optimizers (as gsplat's strategies keep them), keyed by name."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, opt in optimizers.items():
        param = opt.param_groups[0]["params"][0]
        out[name] = {k: v.detach().clone() for k, v in opt.state.get(param, {}).items() if torch.is_tensor(v)}
    return out


def load_optimizer_states(optimizers: dict[str, torch.optim.Optimizer],
                          states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put saved per-parameter states back into freshly made one-parameter optimizers."""
    for name, opt in optimizers.items():
        state = states.get(name, {})
        if not state:
            continue
        param = opt.param_groups[0]["params"][0]
        for key, value in state.items():
            if key != "step" and value.shape != param.shape:
                raise GagsError(f"checkpoint: optimizer state {name}.{key} has shape {tuple(value.shape)}, parameter "
                                f"{tuple(param.shape)}. The checkpoint is inconsistent; delete it to start over.")
        # Adam keeps its step count on the CPU unless it runs fused/capturable; moments live beside the parameter
        opt.state[param] = {k: v.clone() if k == "step" else v.to(param.device, copy=True) for k, v in state.items()}


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (a kill during the write leaves the previous checkpoint intact)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in ckpt.splats.items():
        tensors[f"splats.{key}"] = value.detach().cpu().contiguous().clone()
    for name, state in ckpt.optimizer_states.items():
        for key, value in state.items():
            tensors[f"optim.{name}.{key}"] = value.detach().cpu().contiguous().clone()
    scalars = {}
    for key, value in ckpt.strategy_state.items():
        if torch.is_tensor(value):
            tensors[f"strategy.{key}"] = value.detach().cpu().contiguous().clone()
        else:
            scalars[key] = value
    tensors["rng.torch"] = ckpt.rng_state.contiguous().clone()
    metadata = {"format": FORMAT, "step": str(ckpt.step), "info": json.dumps(ckpt.info),
                "strategy_scalars": json.dumps(scalars)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; a damaged file raises GagsError saying what to do."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except (SafetensorError, OSError, ValueError) as exc:
        raise GagsError(f"checkpoint {path} cannot be read ({exc}). Delete it to start training over.") from exc
    if metadata.get("format") != FORMAT:
        raise GagsError(f"{path} is not a gags reconstruct checkpoint (format {metadata.get('format')!r}). Delete it "
                        "to start training over.")
    splats, optim, strategy = {}, {}, {}
    for key, value in tensors.items():
        group, _, rest = key.partition(".")
        if group == "splats":
            splats[rest] = value
        elif group == "optim":
            name, _, state_key = rest.partition(".")
            optim.setdefault(name, {})[state_key] = value
        elif group == "strategy":
            strategy[rest] = value
    strategy.update(json.loads(metadata.get("strategy_scalars", "{}")))
    return Checkpoint(step=int(metadata["step"]), splats=splats, optimizer_states=optim, strategy_state=strategy,
                      rng_state=tensors["rng.torch"], info=json.loads(metadata.get("info", "{}")))
