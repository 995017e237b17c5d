"""Where and when a benchmark's figures were measured: stamped into every record a benchmark writes, and shown beside
its tables in the documentation (``docs/hooks.py``)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any


def _git(*args: str) -> str | None:
    """git's output in the source checkout ("" when it prints nothing), or None when there is no checkout or git."""
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance() -> dict[str, Any]:
    """{"commit", "dirty", "date", "machine": {...}}: the source checkout (None when gags is not run from one), whether
    it had uncommitted changes, the UTC time, and the machine (cores, platform, Python, PyTorch, load average)."""
    import torch

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD") or None,
        "dirty": None if status is None else bool(status),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_average_5min": round(os.getloadavg()[1], 2)},
    }


def describe(record: dict[str, Any]) -> str:
    """One line saying where a record was measured, for the documentation."""
    stamp = record.get("provenance")
    if not stamp:
        return "Provenance: not recorded (this record predates the stamp)."
    machine = stamp["machine"]
    commit = (stamp["commit"] or "unknown")[:10] + (" with local changes" if stamp.get("dirty") else "")
    device = machine["cuda"] or f"{machine['cores']}-core CPU"
    threads = machine["torch_threads"]
    return (f"Measured {stamp['date']} at commit {commit}, on a {device} ({machine['platform']}, Python "
            f"{machine['python']}, PyTorch {machine['torch']} with {threads} thread{'' if threads == 1 else 's'}, "
            f"5-minute load average {machine['load_average_5min']} at the end).")
