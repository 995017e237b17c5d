"""A synthetic scene trains with `gags reconstruct`.

The fast check (slow-marked, ~1 min) trains briefly at 64x64 and must beat a flat image by 4 dB on the
held-out views. The full check of the issue (>= 25 dB on held-out views at 128x128 after 3,000 iterations, ~6-12 min on
a 2-core CPU) runs when GAGS_LONG_TESTS=1; ``gags bench synth --reconstruct 3000`` writes the same figure as JSON.
"""

import json
import os

import cv2
import numpy as np
import pytest

from gags.config import ReconstructConfig, SynthConfig
from gags.splat.reconstruct import run as reconstruct
from gags.synth.scenes import run as synth


def flat_psnr(scene):
    """PSNR on the held-out views of the mean colour of the training views: what learning nothing gives."""
    meta = json.loads((scene / "transforms.json").read_text())

    def read(name):
        return cv2.imread(str(scene / name))[..., ::-1].astype(np.float64)

    mean = np.mean([read(n).reshape(-1, 3).mean(0) for n in meta["train_filenames"]], axis=0)
    mse = np.mean([((read(n) - mean) ** 2).mean() for n in meta["test_filenames"]])
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.slow
def test_short_reconstruction_learns_the_scene(tmp_path):
    scene = synth(SynthConfig(out=tmp_path / "scene", preset="ramen", resolution=64, views=16, points=5000))
    metrics = reconstruct(ReconstructConfig(scene=scene, out=tmp_path / "out", iterations=800, threads=1))
    assert metrics["eval_split"] == "test" and metrics["num_test_views"] == 2
    baseline = flat_psnr(scene)
    assert metrics["psnr"] >= baseline + 4.0, (metrics["psnr"], baseline)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GAGS_LONG_TESTS") != "1", reason="~6-12 min; set GAGS_LONG_TESTS=1")
def test_reconstruction_reaches_25_db_at_128(tmp_path):
    scene = synth(SynthConfig(out=tmp_path / "scene", preset="ramen", resolution=128, views=40))
    metrics = reconstruct(ReconstructConfig(scene=scene, out=tmp_path / "out", iterations=3000, threads=1))
    assert metrics["eval_split"] == "test" and metrics["num_test_views"] == 5
    assert metrics["psnr"] >= 25.0
