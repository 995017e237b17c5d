"""Fixtures shared by tests of several folders: one PyTorch thread, a random-weights CLIP of open_clip's architecture
(so that tests do not depend on the shipped tiny CLIP), a miniature ``gags demo`` run once per session, and a real local
Ray cluster."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gags.config import DemoConfig
from gags.threads import scoped_torch_threads
from tests.helpers import write_random_clip


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One PyTorch intra-op thread during the test, the previous count after it. Tests of many small tensor ops use it
    (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on a shared 2-core machine, intra-op threads only
    add waiting."""
    with scoped_torch_threads(1):
        yield


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    """An open_clip ``local-dir:`` folder with a tiny randomly initialised CLIP (seed 0, 32-d); read-only for tests."""
    pytest.importorskip("open_clip")
    path = tmp_path_factory.mktemp("clip") / "clip"
    write_random_clip(path)
    return path


@pytest.fixture(scope="session")
def small_demo(encoder_dir) -> Callable[[Path], DemoConfig]:
    """out -> the configuration of a miniature demo (48x48 images, 6 views, a few iterations: about half a minute).
    Its fields start from zeros: the CPU default's start from the lifted features (``--init lift``) fits a decoder
    for half a minute per field, and ``tests/distill/test_init.py`` tests it on a copy of this demo."""

    def make(out: Path) -> DemoConfig:
        return DemoConfig(out=out, resolution=48, views=6, reconstruct_iterations=30, max_gaussians=3000,
                          distill_iterations=10, distill_init="zero", encoder=f"openclip:local-dir:{encoder_dir}")

    return make


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, small_demo) -> tuple[Path, dict[str, Any]]:
    """A miniature demo run once for the session: its OUT and the summary ``gags.demo.run`` returned. The folder is
    shared: copy it before changing anything in it."""
    from gags.demo import run

    out = tmp_path_factory.mktemp("demo") / "demo"
    summary = run(small_demo(out))
    return out, summary


RAY_START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> Iterator[str]:
    """The address (HOST:PORT) of a real Ray cluster started for the session: a head on 127.0.0.1 with 2 CPUs, run by
    ``ray start --block`` in its own process group (stopped with it at the end; other Ray instances on the machine are
    left alone). Token authentication is off: the cluster is private to the test run."""
    pytest.importorskip("ray")
    port = _free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp_path_factory.mktemp("ray") / "head.log"
    with open(log, "w") as fh:
        head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                 "--num-gpus=0", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                                 "--disable-usage-stats"], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + RAY_START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head, its raylet, GCS and workers: nothing of it is kept
        head.wait()
