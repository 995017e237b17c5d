"""The ``gags`` command: one verb per stage. Thin: parse the stage's config, call the stage, print user errors."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import tyro

from gags.config import STAGES
from gags.errors import GagsError

EXIT_USER_ERROR = 1
EXIT_NOT_AVAILABLE = 2


def _runner(verb: str) -> Callable[[object], object] | None:
    """The function that runs ``verb``, or None when that stage is not part of this build yet."""
    module_name, func_name = STAGES[verb][1].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, func_name, None)


def _one_line_warning(verb: str) -> Callable[..., None]:
    """``warnings.showwarning`` that prints ``gags VERB: warning: MESSAGE`` (no source path, no code line)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = " ".join(str(message).split())
        print(f"gags {verb}: warning: {text}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gags`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[..., object]] = {verb: cls for verb, (cls, _) in STAGES.items()}
    config = tyro.extras.subcommand_cli_from_dict(commands, args=args, prog="gags")
    verb = next(v for v, (cls, _) in STAGES.items() if type(config) is cls)
    run = _runner(verb)
    if run is None:
        print(f"gags {verb}: this stage is not available in this version yet.", file=sys.stderr)
        return EXIT_NOT_AVAILABLE
    try:
        stop_on_sigterm()
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(verb)
            run(config)
    except GagsError as exc:
        print(f"gags {verb}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"gags {verb}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


# OpenMP threads that spin while waiting make small PyTorch operations many times slower whenever another process
# uses the CPU (measured: 0.56 s vs 7.9 s per reconstruction iteration on a busy 2-core machine). The command sets the
# passive policy unless the user chose one; it must be set before torch is imported.
OMP_WAIT_POLICY_DEFAULT = "PASSIVE"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a job scheduler's stop) ends a stage as Ctrl-C does: the same resumable state, one line, no
    native stack dump. pycolmap's logging library installs a handler of its own when it is loaded (it prints a stack
    trace and kills the process), so it is loaded first and this handler set after it."""
    import threading

    import gags.data.colmap  # noqa: F401 (loads pycolmap and its handlers)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def entry() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY_DEFAULT)
    sys.exit(main())
