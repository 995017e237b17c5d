import numpy as np
import torch

from gags.models import crop_masks
from gags.models.crops import mask_boxes


def _image(height: int = 40, width: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, size=(height, width, 3), dtype=np.uint8)  # no black pixel: black = background


def test_box_is_cropped_padded_to_a_square_and_kept_exact_at_its_own_size():
    rgb = _image()
    mask = np.zeros((1, 40, 60), bool)
    mask[0, 12:22, 30:50] = True  # 10 rows x 20 columns
    crop = crop_masks(rgb, mask, size=20)[0].numpy()
    assert crop.shape == (20, 20, 3) and crop.dtype == np.uint8
    assert (crop[:5] == 0).all() and (crop[15:] == 0).all()  # centred, black padding above and below
    assert np.array_equal(crop[5:15], rgb[12:22, 30:50])  # the box itself, pixel for pixel


def test_background_is_black_and_resizing_averages():
    rgb = _image()
    mask = np.zeros((1, 40, 60), bool)
    mask[0, 0:20, 0:20] = True
    mask[0, 10:20, 10:20] = False  # an L shape: its box holds background
    crop = crop_masks(rgb, mask, size=10)[0].numpy().astype(float)
    assert (crop[5:, 5:] == 0).all()
    # each output pixel averages a 2x2 block of the image
    assert np.allclose(crop[:5, :5], rgb[:10, :10].reshape(5, 2, 5, 2, 3).mean(axis=(1, 3)), atol=0.51)


def test_box_at_the_image_border_pads_with_black_not_with_border_pixels():
    rgb = _image()
    mask = np.zeros((1, 40, 60), bool)
    mask[0, 0:4, 0:40] = True  # wide and thin along the top edge: its square reaches above the image
    crop = crop_masks(rgb, mask, size=40)[0].numpy()
    assert (crop[:18] == 0).all() and (crop[22:] == 0).all()
    assert np.array_equal(crop[18:22], rgb[0:4, 0:40])


def test_batch_equals_one_by_one_and_empty_masks_are_black():
    rgb = _image()
    rng = np.random.default_rng(1)
    masks = rng.random((5, 40, 60)) > 0.7
    masks[2] = False
    together = crop_masks(rgb, masks, size=16)
    alone = torch.cat([crop_masks(rgb, masks[i : i + 1], size=16) for i in range(5)])
    assert torch.equal(together, alone)
    assert (together[2] == 0).all()
    assert crop_masks(rgb, np.zeros((0, 40, 60), bool), size=16).shape == (0, 16, 16, 3)


def test_mask_boxes():
    masks = torch.zeros(2, 5, 7, dtype=torch.bool)
    masks[0, 1:3, 2:6] = True
    assert mask_boxes(masks).tolist() == [[2.0, 1.0, 6.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
