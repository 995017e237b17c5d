"""gags.threads.scoped_torch_threads: the thread count inside the block, and the previous one after it."""

import pytest
import torch

from gags.threads import scoped_torch_threads


def test_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with scoped_torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before


def test_zero_keeps_the_count_and_an_error_still_restores_it():
    before = torch.get_num_threads()
    with scoped_torch_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), scoped_torch_threads(1 if before != 1 else 2):
        raise RuntimeError("inside the block")
    assert torch.get_num_threads() == before
