import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread) -> None:
    """Every synth test runs with one PyTorch thread (tests/conftest.py): they issue many small tensor ops."""
