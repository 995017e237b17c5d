from pathlib import Path

import pytest

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "mipnerf360_kitchen_small"
if not KITCHEN.is_dir():  # this checkout sits elsewhere: the shared data is beside the main clone
    KITCHEN = Path("/work/shared/data/mipnerf360_kitchen_small")


@pytest.fixture(scope="session")
def kitchen() -> Path:
    if not KITCHEN.is_dir():
        pytest.skip(f"shared test data not found at {KITCHEN}")
    return KITCHEN
