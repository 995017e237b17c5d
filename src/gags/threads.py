"""PyTorch's intra-op thread count for the length of a block: the stages' ``--threads`` and the renderers that issue
many small tensor ops (where, on a shared CPU, waiting threads cost more than they give)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def scoped_torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` PyTorch intra-op threads, then restore the previous count (also on an error).

    ``threads`` <= 0 leaves PyTorch's setting as it is (a stage's ``--threads 0``: PyTorch's default).
    """
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
