"""OpenClipEncoder with randomly initialised open_clip models, offline: a tiny local-dir folder and a real
architecture (ViT-S-32-alt) from a checkpoint file."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from gags.errors import GagsError  # noqa: E402
from gags.models import Encoder, OpenClipEncoder, load_encoder  # noqa: E402
from tests.helpers import tiny_clip_cfg, write_random_clip  # noqa: E402

TINY_CFG = tiny_clip_cfg(preprocess={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic"})
"""The tiny CLIP with a preprocessing of its own (not OpenAI's mean and std), so that the encoder must read it."""


def _local_dir(path: Path, cfg: dict = TINY_CFG) -> tuple[Path, torch.nn.Module]:
    return path, write_random_clip(path, cfg)


def _crops(n: int, height: int = 40, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def test_local_dir_folder_round_trip(tmp_path):
    folder, model = _local_dir(tmp_path / "clip")
    enc = load_encoder(f"openclip:local-dir:{folder}", device="cpu")
    assert isinstance(enc, Encoder) and enc.input_size == 32 and enc.dim == 32
    crops = _crops(5)
    img = enc.encode_images(crops)
    txt = enc.encode_text(["red mug", "egg yolk", "things"])
    assert img.shape == (5, 32) and txt.shape == (3, 32) and img.dtype == torch.float32
    assert torch.allclose(img.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)
    with torch.no_grad():  # the very weights that were saved, through open_clip's own tokenizer
        ref_img = model.encode_image(enc.preprocess(crops), normalize=True)
        ref_txt = model.encode_text(open_clip.get_tokenizer(f"local-dir:{folder}")(["red mug", "egg yolk", "things"]),
                                    normalize=True)
    assert torch.allclose(img, ref_img, atol=1e-5) and torch.allclose(txt, ref_txt, atol=1e-5)


def test_batching_does_not_change_results(tmp_path):
    folder, _ = _local_dir(tmp_path / "clip")
    enc = OpenClipEncoder("local-dir", folder, device="cpu", batch_size=2)
    whole = OpenClipEncoder("local-dir", folder, device="cpu", batch_size=64)
    crops = _crops(5)
    assert torch.allclose(enc.encode_images(crops), whole.encode_images(crops), atol=1e-5)
    texts = [f"object {i}" for i in range(5)]
    assert torch.allclose(enc.encode_text(texts), whole.encode_text(texts), atol=1e-5)
    assert enc.encode_images(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, 32)


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_preprocessing_follows_open_clips_own_transform(tmp_path, mode):
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["preprocess_cfg"]["resize_mode"] = mode
    folder, model = _local_dir(tmp_path / "clip", cfg)
    enc = OpenClipEncoder("local-dir", folder, device="cpu")
    # smooth images (real crops are), so interpolation kernels differ little; 3:2 aspect tests the resize modes
    small = _crops(3, 6, 9)
    crops = np.stack([np.asarray(Image.fromarray(c).resize((96, 64), Image.BILINEAR)) for c in small])
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    ref = torch.stack([transform(Image.fromarray(c)) for c in crops])
    ours = enc.preprocess(crops)
    assert ours.shape == ref.shape == (3, 3, 32, 32)
    assert (ours - ref).abs().mean() < 0.05  # normalised units (std ~0.25): PIL and torch kernels differ slightly


def test_open_clip_architecture_from_checkpoint_files(tmp_path):
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32-alt", pretrained=None).eval()
    state = model.state_dict()
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    enc = load_encoder(f"openclip:ViT-S-32-alt:{tmp_path / 'open_clip_pytorch_model.bin'}", device="cpu")
    assert enc.input_size == 224 and enc.dim == 256
    assert torch.equal(enc.model.visual.conv1.weight, state["visual.conv1.weight"])
    crops = _crops(2, 50, 50)
    with torch.no_grad():
        ref = model.encode_image(enc.preprocess(crops), normalize=True)
    assert torch.allclose(enc.encode_images(crops), ref, atol=1e-4)


def test_checkpoint_of_another_architecture_is_a_gags_error(tmp_path):
    folder, _ = _local_dir(tmp_path / "clip")
    with pytest.raises(GagsError, match="ViT-S-32-alt"):
        load_encoder(f"openclip:ViT-S-32-alt:{folder / 'open_clip_model.safetensors'}", device="cpu")


def test_pickled_objects_are_not_loaded(tmp_path):
    folder, model = _local_dir(tmp_path / "clip")
    (folder / "open_clip_model.safetensors").unlink()
    torch.save({"state_dict": model.state_dict(), "extra": object()}, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(GagsError, match="weights_only"):
        load_encoder(f"openclip:local-dir:{folder}", device="cpu")


def test_bad_crops_are_refused(tmp_path):
    folder, _ = _local_dir(tmp_path / "clip")
    enc = load_encoder(f"openclip:local-dir:{folder}", device="cpu")
    with pytest.raises(GagsError, match="uint8"):
        enc.encode_images(np.zeros((2, 8, 8, 3), np.float32))
