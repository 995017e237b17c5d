"""Atomic file writes: every artifact is written to a temporary file in the same folder, then renamed."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gags.errors import GagsError


@functools.cache
def _process_umask() -> int:
    """The process umask, read once (reading it means setting it, which is not safe while other threads write)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise a GagsError saying why it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GagsError(f"cannot create output folder {path}: {exc.strerror}. Choose a writable location.") from exc
    if not os.access(path, os.W_OK):
        raise GagsError(f"output folder {path} is not writable. Choose a writable location or fix its permissions.")
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on failure remove it.

    The temporary name keeps the suffix of ``path`` so that libraries choosing a format by suffix still work.
    """
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise GagsError(f"could not write in {path.parent}: {exc.strerror or exc}. Nothing was changed; free space "
                        "or fix the folder's permissions.") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file private (0600); the artifact gets the permissions a plain open() would give it
    os.chmod(tmp_path, 0o666 & ~_process_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:  # disk full, quota, permissions: the previous file is untouched
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise GagsError(f"could not write {path}: {exc.strerror or exc}. Nothing already written was lost (the "
                        "previous file, if any, is unchanged); free space or fix the folder's permissions and run "
                        "the same command again.") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, user_input: bool = False) -> Any:
    """Read a JSON file or raise a GagsError naming the file (``user_input``: a file the user gave, to be fixed, not
    an artifact of a stage to be made again)."""
    path = Path(path)
    if not path.is_file():
        raise GagsError(f"{path} does not exist." + ("" if user_input else " Run the stage that writes it first."))
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        remedy = "Fix the file." if user_input else "Delete it and re-run the stage that writes it."
        raise GagsError(f"{path} is not valid JSON ({exc}). {remedy}") from exc


def read_safetensors(path: Path, what: str, remedy: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors and metadata of a safetensors file; GagsError naming ``what`` it is and saying ``remedy`` when it
    cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open has no items())
    except Exception as exc:  # safetensors raises its own error types, and OSError / ValueError on bad headers
        raise GagsError(f"{what} {path} cannot be read ({exc}). {remedy}") from exc
    return tensors, metadata
