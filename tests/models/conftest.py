from pathlib import Path

import numpy as np
import pytest

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "mipnerf360_kitchen_small"
if not KITCHEN.is_dir():  # this checkout sits elsewhere: the shared data is beside the main clone
    KITCHEN = Path("/work/shared/data/mipnerf360_kitchen_small")


@pytest.fixture(scope="session")
def kitchen_photo() -> np.ndarray:
    """A real photo, [130, 195, 3] uint8 (images_8/00.png of the shared kitchen scene)."""
    from PIL import Image

    path = KITCHEN / "images_8" / "00.png"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    return np.asarray(Image.open(path).convert("RGB"))
