"""SAM and SAM 2 adapters with randomly initialised weights of the real architectures (no checkpoint can be
downloaded): build, save a state dict, reload it through the spec, run on a real photo."""

import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.models import MaskPrediction, load_segmenter
from gags.models.segmenters import COUNT_CHUNK, _pixel_count, _sorted_by_area

POINTS = np.array([[10.0, 10.0], [97.5, 65.0], [150.0, 120.0]], np.float32)


def _check_prediction(out: MaskPrediction, height: int, width: int) -> None:
    masks, scores, stability = out
    assert masks.shape == (len(POINTS), 3, height, width) and masks.dtype == torch.bool
    assert scores.shape == stability.shape == (len(POINTS), 3)
    area = masks.flatten(2).sum(-1)
    assert (area[:, 1:] >= area[:, :-1]).all()  # sub-part, part, whole
    assert ((stability >= 0) & (stability <= 1)).all()


def test_masks_are_sorted_by_area_with_their_scores():
    logits = torch.full((2, 3, 8, 8), -5.0)
    logits[:, 0, :6, :6] = 5.0  # 36 px
    logits[:, 1, :2, :2] = 0.5  # 4 px, unstable (within the offset of the threshold)
    logits[:, 2, :4, :4] = 5.0  # 16 px
    iou = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.2, 0.6]])
    masks, scores, stability = _sorted_by_area(logits, iou, threshold=0.0, offset=1.0)
    assert masks.flatten(2).sum(-1).tolist() == [[4, 16, 36]] * 2
    assert torch.allclose(scores, torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.6, 0.8]]))
    assert torch.allclose(stability, torch.tensor([[0.0, 1.0, 1.0]] * 2))


@pytest.mark.parametrize("shape", [(3, 3, 7, 9), (2, 3, 128, 128), (2, 3, 33, 300), (0, 3, 8, 8), (1, 3, 1, 1)])
def test_pixel_counts_are_exact_for_any_size(shape):
    """Counted in byte-sized runs of COUNT_CHUNK pixels plus the remainder: exact whether or not the run length divides
    the image, and for full masks (every run at its largest count)."""
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.3
    counts = _pixel_count(masks)
    assert counts.dtype == torch.int32 and torch.equal(counts.long(), masks.flatten(2).sum(-1))
    full = torch.ones(2, 3, COUNT_CHUNK * 3 + 5, 7, dtype=torch.bool)
    assert (_pixel_count(full) == full[0, 0].numel()).all()


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    pytest.importorskip("segment_anything")
    ckpt = tmp_path / "not_sam.pth"
    torch.save({"weight": torch.zeros(3)}, ckpt)
    with pytest.raises(GagsError, match="does not match SAM vit_b"):
        load_segmenter(f"sam:vit_b:{ckpt}")


def test_pickled_objects_are_not_loaded(tmp_path):
    pytest.importorskip("segment_anything")
    ckpt = tmp_path / "pickle.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": object()}, ckpt)
    with pytest.raises(GagsError, match="weights_only"):
        load_segmenter(f"sam:vit_b:{ckpt}")


@pytest.mark.slow
def test_sam_vit_b_from_a_saved_state_dict(tmp_path, kitchen_photo):
    from gags.models import SamSegmenter

    pytest.importorskip("segment_anything")
    torch.manual_seed(0)
    random_model = SamSegmenter("vit_b", device="cpu").model
    ckpt = tmp_path / "sam_vit_b.pth"
    torch.save(random_model.state_dict(), ckpt)
    seg = load_segmenter(f"sam:vit_b:{ckpt}", device="cpu")
    assert torch.equal(seg.model.mask_decoder.iou_prediction_head.layers[0].weight,
                       random_model.mask_decoder.iou_prediction_head.layers[0].weight)
    seg.set_image(kitchen_photo)
    _check_prediction(seg.predict(POINTS), *kitchen_photo.shape[:2])


@pytest.mark.slow
def test_sam2_tiny_from_a_saved_checkpoint(tmp_path, kitchen_photo):
    from gags.models import Sam2Segmenter

    pytest.importorskip("sam2")
    torch.manual_seed(0)
    random_model = Sam2Segmenter("sam2.1_hiera_tiny", device="cpu").model
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": random_model.state_dict()}, ckpt)  # the layout of the released SAM 2 checkpoints
    seg = load_segmenter(f"sam2:sam2.1_hiera_tiny:{ckpt}", device="cpu")
    name, param = next(iter(random_model.state_dict().items()))
    assert torch.equal(seg.model.state_dict()[name], param)
    seg.set_image(kitchen_photo)
    _check_prediction(seg.predict(POINTS), *kitchen_photo.shape[:2])


# ----------------------------------------------------------------------------------------------------------------------
# point convention: the project's points are continuous (pixel (i, j) has its centre at (j + 0.5, i + 0.5)); SAM and
# SAM 2 take pixel indices and add the half pixel in their prompt encoders, so what they embed must be our point.

CENTRES = np.array([[100.5, 40.5], [0.5, 0.5], [1023.5, 511.5]], np.float32)
"""Centres of pixel (x=100, y=40), and of the first and the last pixel of a 1024 x 512 image."""


def _spy_embedded_points(monkeypatch, prompt_encoder) -> list[torch.Tensor]:
    """Record the points handed to ``prompt_encoder._embed_points`` (which adds 0.5 to them before embedding)."""
    seen: list[torch.Tensor] = []
    original = prompt_encoder._embed_points

    def spy(points, labels, pad):
        seen.append(points.detach().float().clone())
        return original(points, labels, pad)

    monkeypatch.setattr(prompt_encoder, "_embed_points", spy)
    return seen


def test_sam_embeds_the_pixel_centre_the_point_names(monkeypatch):
    """A 1024-wide image is SAM's input size (no rescaling): SAM must embed exactly our continuous point."""
    segment_anything = pytest.importorskip("segment_anything")
    from segment_anything.build_sam import _build_sam

    from gags.models import SamSegmenter

    # vit_b's prompt encoder and mask decoder with a one-block, 16-wide image encoder: the point path is the real one
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b",
                        lambda checkpoint=None: _build_sam(16, 1, 1, [], checkpoint=checkpoint))
    torch.manual_seed(0)
    seg = SamSegmenter("vit_b", device="cpu")
    seen = _spy_embedded_points(monkeypatch, seg.model.prompt_encoder)
    seg.set_image(np.zeros((512, 1024, 3), np.uint8))
    seg.predict(CENTRES)
    given = torch.cat(seen)[:, 0]  # [P, 2], the first point of each prompt (SAM pads a dummy second one)
    assert torch.allclose(given + 0.5, torch.from_numpy(CENTRES))  # what SAM embeds, after its own + 0.5
    assert torch.allclose(given, torch.tensor([[100.0, 40.0], [0.0, 0.0], [1023.0, 511.0]]))  # the pixel indices

    seen.clear()  # a 512 x 256 image is upscaled 2x: pixel (100, 40) becomes SAM's pixel index (200, 80)
    seg.set_image(np.zeros((256, 512, 3), np.uint8))
    seg.predict(np.array([[100.5, 40.5]], np.float32))
    assert torch.allclose(torch.cat(seen)[:, 0], torch.tensor([[200.0, 80.0]]))


class _ZeroTrunk(torch.nn.Module):
    """Stands for SAM 2's Hiera trunk: zero features at strides 4, 8, 16, 32 (fine to coarse), in a blink."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.new_zeros(x.shape[0], c, x.shape[-2] // s, x.shape[-1] // s)
                for c, s in zip(self.channels, (4, 8, 16, 32))]


def test_sam2_embeds_the_pixel_centre_the_point_names(monkeypatch):
    """SAM 2 stretches the image to 1024 x 1024; at that size it must embed exactly our continuous point."""
    pytest.importorskip("sam2")
    from gags.models import Sam2Segmenter

    torch.manual_seed(0)
    seg = Sam2Segmenter("sam2.1_hiera_tiny", device="cpu")
    encoder = seg.model.image_encoder  # the real FPN neck and mask decoder on zero trunk features
    encoder.trunk = _ZeroTrunk(list(reversed(encoder.neck.backbone_channel_list)))
    seen = _spy_embedded_points(monkeypatch, seg.model.sam_prompt_encoder)
    seg.set_image(np.zeros((1024, 1024, 3), np.uint8))
    seg.predict(CENTRES)
    given = torch.cat(seen)[:, 0]
    assert torch.allclose(given + 0.5, torch.from_numpy(CENTRES), atol=1e-3)

    seen.clear()  # a 512 x 512 image is stretched 2x: pixel (100, 40) becomes SAM 2's pixel index (200, 80)
    seg.set_image(np.zeros((512, 512, 3), np.uint8))
    seg.predict(np.array([[100.5, 40.5]], np.float32))
    assert torch.allclose(torch.cat(seen)[:, 0], torch.tensor([[200.0, 80.0]]), atol=1e-3)
