import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests issue many small tensor ops; on a shared 2-core machine intra-op threads only add waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
