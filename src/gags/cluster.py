"""Ray, the optional scale-out backend of ``gags segment --ray`` and ``gags bench ablation --ray``.

One owner of what every Ray run needs: importing Ray (a clear GagsError when the extra is missing), connecting to a
cluster (:func:`connect`), the resources a worker asks for (:class:`RaySlot`), and checking that every node sees the
output folder (:func:`check_shared_storage`), since workers read and write it directly.

Addresses: ``local`` starts a Ray instance on this machine for the length of the run (every core); ``auto`` joins the
cluster Ray finds (``RAY_ADDRESS``, or the one ``ray start`` started on this node); anything else is a head's
``HOST:PORT`` (or ``ray://HOST:PORT`` for Ray Client). Relative paths (the output folder, model checkpoints) are taken
relative to the driver's working directory, which workers enter too: on a cluster, give paths that exist on every node.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from gags.errors import GagsError, one_line

INSTALL_HINT = 'pip install "gags[ray]"'
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment of every worker: OpenMP threads that spin while waiting make a shared CPU 10x slower for small ops."""
PROBE_PREFIX = ".ray-probe-"
"""A file the driver writes in the output folder and every node must read back (removed after the check)."""
AUTH_HINT = ("The cluster asks for its token (Ray's token authentication): run with RAY_AUTH_MODE=token and the "
             "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN.")
MAX_RESTARTS = 3
"""How often a dead worker is restarted (and its unfinished work redone) before the run stops with an error."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or a GagsError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise GagsError(f"--ray needs Ray, which is not installed ({exc}); install it with `{INSTALL_HINT}`.") from None
    return ray


@dataclass(frozen=True)
class RaySlot:
    """What one Ray worker (an actor or a task) reserves: CPU cores and GPUs (fractions allowed, as Ray allows)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def check(self, cpus_option: str, gpus_option: str) -> None:
        """GagsError for a negative amount or a slot that asks for nothing (the options' names as the CLI spells
        them)."""
        if not (self.cpus >= 0 and self.gpus >= 0):  # also refuses NaN
            raise GagsError(f"{cpus_option} / {gpus_option} must be >= 0, got {self.cpus} / {self.gpus}.")
        if self.cpus == 0 and self.gpus == 0:
            raise GagsError(f"{cpus_option} and {gpus_option} are both 0; a worker must reserve a CPU or a GPU.")

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``.options()`` for an actor or a task."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    def fits(self, resources: dict[str, float]) -> int:
        """How many such slots ``resources`` (``ray.cluster_resources()``) holds at once."""
        counts = []
        if self.cpus > 0:
            counts.append(int(resources.get("CPU", 0) // self.cpus))
        if self.gpus > 0:
            counts.append(int(resources.get("GPU", 0) // self.gpus))
        return min(counts)

    def fits_in_cluster(self, ray: ModuleType, what: str, option: str) -> int:
        """How many such slots the connected cluster holds; GagsError when not one (``what``: the worker's name in
        the message, ``option``: the options' prefix, e.g. ``--ray-cpus-per-worker`` / ``--ray-gpus-per-worker``)."""
        resources = ray.cluster_resources()
        count = self.fits(resources)
        if count < 1:
            raise GagsError(f"the Ray cluster has no room for one {what} of {self.cpus} CPU(s) and {self.gpus} GPU(s) "
                            f"({resources}); lower {option}-cpus-per-{what} / {option}-gpus-per-{what}.")
        return count


@contextlib.contextmanager
def connect(address: str) -> Iterator[ModuleType]:
    """Connected to the Ray cluster at ``address`` for the block (see the module docstring); yields ``ray``.

    A driver already connected (``ray.is_initialized()``) is used as it is and left connected; otherwise the
    connection made here is closed after the block (a ``local`` instance is stopped with it).
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": dict(WORKER_ENV)}, "log_to_driver": True}
    if address == "local":
        kwargs.update(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False)
    else:
        kwargs.update(address=address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        cause = f"{exc} {exc.__cause__ or ''}"
        hint = (AUTH_HINT if "auth" in cause.lower() else
                "Start one with `ray start --head`, pass its HOST:PORT, or use --ray local.")
        message = f"cannot connect to the Ray cluster at --ray {address} ({one_line(str(exc))})."
        raise GagsError(f"{message} {hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _probe_reader(path: str) -> tuple[str, str | None]:
    """Run on a node: its IP address and the probe file's text as that node reads it (None when it cannot)."""
    import ray

    try:
        text: str | None = Path(path).read_text()
    except OSError:
        text = None
    return ray.util.get_node_ip_address(), text


def check_shared_storage(ray: ModuleType, folder: Path,
                         reader: Callable[[str], tuple[str, str | None]] = _probe_reader) -> int:
    """Check that every alive node of the cluster reads what the driver writes in ``folder``; returns the number of
    nodes checked. GagsError naming the nodes that do not (the folder must be on storage every node mounts at the
    same path, e.g. NFS). ``reader``: what runs on each node (tests give one that sees nothing)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = folder / f"{PROBE_PREFIX}{token}"
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        remote = ray.remote(num_cpus=0)(reader)
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe)) for n in nodes]
        answers = ray.get(refs)
    finally:
        probe.unlink(missing_ok=True)
    blind = sorted(ip for ip, text in answers if text != token)
    if blind:
        raise GagsError(storage_message(folder, blind, len(answers)))
    return len(answers)


def storage_message(folder: Path, blind: list[str], nodes: int) -> str:
    """The one-line error of :func:`check_shared_storage` for the nodes (IP addresses) that do not see ``folder``."""
    return (f"{len(blind)} of {nodes} Ray nodes ({', '.join(blind)}) do not see {folder}, where the workers read and "
            "write; put the output folder on storage every node mounts at the same path (e.g. NFS) and pass that "
            "path.")


def worker_setup(cwd: str, threads: int) -> None:
    """Run first in every worker: enter the driver's working directory (relative paths mean the same there) and set
    PyTorch's thread count (``threads`` <= 0: leave PyTorch's default)."""
    import torch

    if not Path(cwd).is_dir():
        raise GagsError(f"the driver's working directory {cwd} does not exist on this Ray node; run from a folder "
                        "every node mounts, or give absolute paths.")
    os.chdir(cwd)
    if threads > 0:
        torch.set_num_threads(threads)


__all__ = ["INSTALL_HINT", "MAX_RESTARTS", "RaySlot", "check_shared_storage", "connect", "require_ray",
           "storage_message", "worker_setup"]
