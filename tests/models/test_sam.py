"""SAM and SAM 2 adapters with randomly initialised weights of the real architectures (no checkpoint can be
downloaded): build, save a state dict, reload it through the spec, run on a real photo."""

import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.models import MaskPrediction, load_segmenter
from gags.models.segmenters import _sorted_by_area

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
