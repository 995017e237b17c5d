"""The LERF-OVS protocol against values computed by hand and a literal re-implementation of LangSplat's steps."""

import cv2
import numpy as np
import pytest
import torch

from gags.query.metrics import (
    box_filter,
    choose_level,
    evaluate_query,
    localization_peaks,
    localize,
    majority_filter,
    mask_from_smoothed,
    mask_iou,
    normalize_relevancy,
    points_in_boxes,
    segment,
    smooth_relevancy,
)

# ---------------------------------------------------------------------------------------------------------------------
# Literal re-implementation of LangSplat's eval steps (eval/evaluate_iou_loc.py, eval/utils.py), loops and all.


def _literal_box(rel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(rel, -1, np.ones((30, 30)) / (30**2))


def _literal_majority(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape[:2]
    out = mask.copy()
    for i in range(h):
        for j in range(w):
            square = mask[max(0, i - 3) : min(i + 3 + 1, h - 1), max(0, j - 3) : min(j + 3 + 1, w - 1)]
            out[i, j] = np.argmax(np.bincount(square.reshape(-1)))
    return out


def _literal_segmentation(levels: torch.Tensor, gt: np.ndarray, thresh: float = 0.4):
    """levels: [L, H, W] float32 tensor. Returns (chosen level, its mask, its IoU)."""
    levels = levels.clone()
    ious, masks = [], []
    for i in range(levels.shape[0]):
        avg = torch.from_numpy(_literal_box(levels[i].numpy()))
        levels[i] = 0.5 * (avg + levels[i])
        out = levels[i]
        out = out - torch.min(out)
        out = out / (torch.max(out) + 1e-9)
        out = out * (1.0 - (-1.0)) + (-1.0)
        out = torch.clip(out, 0, 1)
        pred = _literal_majority((out.numpy() > thresh).astype(np.uint8))
        masks.append(pred)
        inter = np.sum(np.logical_and(gt.astype(np.uint8), pred))
        union = np.sum(np.logical_or(gt.astype(np.uint8), pred))
        ious.append(inter / union)
    scores = torch.stack([levels[i].max() for i in range(levels.shape[0])])
    chosen = int(torch.argmax(scores))
    return chosen, masks[chosen], ious[chosen]


def _literal_localization(levels: torch.Tensor, boxes: np.ndarray):
    """levels: [L, H, W] float32 tensor. Returns (chosen level, peaks (x, y), hit)."""
    filtered = _literal_box(np.ascontiguousarray(levels.numpy().transpose(1, 2, 0)))
    if filtered.ndim == 2:
        filtered = filtered[..., None]
    scores, coords = np.zeros(levels.shape[0]), []
    for i in range(levels.shape[0]):
        scores[i] = filtered[..., i].max()
        coords.append(np.asarray(np.nonzero(filtered[..., i] == scores[i])).transpose(1, 0)[..., ::-1])
    chosen = int(np.argmax(scores))
    hit = False
    for x1, y1, x2, y2 in boxes.reshape(-1, 4):
        for x, y in coords[chosen]:
            if min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
                hit = True
                break
        if hit:
            break
    return chosen, coords[chosen], hit


def _random_relevancy(rng: np.random.Generator, levels: int, h: int, w: int) -> np.ndarray:
    """Smooth blobs plus noise, squashed into (0, 1) like a relevancy map: [L, H, W] float32."""
    coarse = rng.normal(size=(levels, h // 8 + 2, w // 8 + 2)).astype(np.float32)
    up = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse])
    up += 0.3 * rng.normal(size=up.shape).astype(np.float32)
    return (1 / (1 + np.exp(-2 * up))).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Box filter


def test_box_filter_window_and_border_by_hand():
    x = np.zeros((70, 80), np.float32)
    x[35, 40] = 1.0
    f = box_filter(x)
    # Window offsets -15..+14 (anchor at the kernel centre, 15): the impulse spreads to rows 21..50, columns 26..55.
    expected = np.zeros_like(f)
    expected[35 - 14 : 35 + 16, 40 - 14 : 40 + 16] = 1 / 900
    np.testing.assert_allclose(f, expected, atol=1e-7)
    # Reflect-101 border: an impulse on row 0 is counted once, one on row 1 twice near the top edge (row 1 mirrors).
    y = np.zeros((70, 80), np.float32)
    y[1, 40] = 1.0
    assert box_filter(y)[0, 40] == pytest.approx(2 / 900, abs=1e-7)
    z = np.full((40, 50), 0.7, np.float32)
    np.testing.assert_allclose(box_filter(z), z, atol=1e-6)


def test_box_filter_equals_padded_mean_and_is_batched():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 3, 45, 61)).astype(np.float32)
    f = box_filter(maps)
    assert f.shape == maps.shape and f.dtype == np.float32
    padded = np.pad(maps.astype(np.float64), ((0, 0), (0, 0), (15, 14), (15, 14)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (30, 30), axis=(-2, -1))
    np.testing.assert_allclose(f, windows.mean(axis=(-2, -1)), atol=1e-6)
    np.testing.assert_array_equal(f[1, 2], box_filter(maps[1, 2]))
    np.testing.assert_array_equal(box_filter(torch.from_numpy(maps[0, 0])), f[0, 0])


# ---------------------------------------------------------------------------------------------------------------------
# Localization


def test_localization_block_argmax_and_boxes():
    rel = np.full((64, 80), 0.2, np.float32)
    rel[10:40, 20:50] = 0.9  # a 30x30 block: the filtered map peaks where the window covers it exactly
    loc = localize(rel)
    # The window of (y, x) spans rows y-15..y+14: it equals rows 10..39 for y = 25, columns 20..49 for x = 35.
    assert loc.level == 0 and loc.point == (35, 25)
    np.testing.assert_array_equal(loc.peaks, [[35, 25]])
    assert loc.score == pytest.approx(0.9, abs=1e-6)
    assert points_in_boxes(loc.peaks, np.array([[20.0, 10.0, 49.0, 39.0]]))
    assert points_in_boxes(loc.peaks, np.array([[49.0, 39.0, 20.0, 10.0]]))  # corners in either order
    assert points_in_boxes(loc.peaks, np.array([[0, 0, 5, 5], [35.0, 25.0, 60.0, 60.0]]))  # bounds included
    assert not points_in_boxes(loc.peaks, np.array([[35.5, 0.0, 60.0, 60.0]]))
    assert not points_in_boxes(loc.peaks, np.array([[0.0, 0.0, 34.9, 60.0], [0, 26, 80, 64]]))


def test_localization_peaks_keeps_every_tie():
    filtered = np.zeros((5, 6), np.float32)
    filtered[1, 4] = filtered[3, 0] = 2.0
    filtered[2, 2] = 1.9
    peaks = localization_peaks(filtered)
    np.testing.assert_array_equal(peaks, [[4, 1], [0, 3]])  # (x, y), row-major
    # Hit if ANY peak lies in ANY box (LangSplat's loops).
    assert points_in_boxes(peaks, np.array([[0, 3, 0, 3]]))
    assert not points_in_boxes(peaks, np.array([[2, 2, 2, 2]]))


def test_a_constant_map_localizes_nothing():
    """A map that says nothing (a view without any segment: relevancy 0 everywhere) is a miss, not a hit in every
    box (LangSplat's loop over the pixels at the maximum would take all of them)."""
    loc = localize(np.zeros((20, 30), np.float32))
    assert len(loc.peaks) == 0 and loc.point is None
    assert not points_in_boxes(loc.peaks, np.array([[0, 0, 29, 19]]))


def test_choose_level_first_maximum_and_multilevel_localization():
    maps = np.zeros((3, 2, 8, 8), np.float32)
    maps[0, 0, 1, 1] = 0.5
    maps[1, 0, 4, 4] = 0.7
    maps[2, 0, 0, 0] = 0.7  # tie with level 1 -> the first one
    maps[2, 1, 3, 3] = 0.1
    np.testing.assert_array_equal(choose_level(maps), [1, 2])
    rel = np.full((3, 60, 70), 0.3, np.float32)
    rel[0, 5:8, 5:8] = 1.0  # a sharp but tiny peak: weak once box-filtered
    rel[2, 20:50, 30:60] = 0.8  # a broad block wins the box-filtered comparison
    loc = localize(rel)
    assert loc.level == 2 and loc.point == (45, 35)


# ---------------------------------------------------------------------------------------------------------------------
# Segmentation


def test_normalize_by_hand():
    smoothed = np.array([[[0.0, 3.0], [3.5, 4.0]], [[2.0, 2.0], [2.0, 2.0]]], np.float32)
    out = normalize_relevancy(smoothed)
    # (x - 0) / 4 = 0, .75, .875, 1 -> 2v - 1 = -1, .5, .75, 1 -> clip: 0, .5, .75, 1.  A constant map -> all 0.
    np.testing.assert_allclose(out[0], [[0.0, 0.5], [0.75, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(out[1], np.zeros((2, 2)))
    assert out.dtype == np.float32


def test_smooth_relevancy_blend():
    rng = np.random.default_rng(1)
    rel = rng.random((33, 41)).astype(np.float32)
    np.testing.assert_array_equal(smooth_relevancy(rel), np.float32(0.5) * (box_filter(rel) + rel))


def test_majority_filter_by_hand():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    # Window of (i, j): rows max(0, i-3) .. min(i+4, 7)-1, same for columns. E.g. (0, 3): 4x7 = 28 pixels, 16 ones -> 1;
    # (0, 4): 4x6 = 24 pixels, 12 ones -> tie -> 0; (2, 2): 6x6 = 36, 16 -> 0; (1, 2): 5x6 = 30, 16 -> 1.
    expected = np.add.outer(np.arange(8), np.arange(8)) <= 3
    expected[4:, :] = expected[:, 4:] = False
    np.testing.assert_array_equal(majority_filter(mask), expected)
    # The last row and column never count (the H-1 / W-1 upper bounds): a frame along them disappears.
    edge = np.zeros((8, 8), bool)
    edge[7, :] = edge[:, 7] = True
    assert not majority_filter(edge).any()
    # All ones stays all ones; batched.
    ones = np.ones((2, 6, 9), bool)
    assert majority_filter(ones).all()


@pytest.mark.parametrize("shape", [(2, 2), (2, 9), (5, 3), (17, 23), (30, 41)])
def test_majority_filter_matches_literal_loop(shape):
    rng = np.random.default_rng(sum(shape))
    for p in (0.3, 0.5, 0.7):
        mask = (rng.random(shape) < p).astype(np.uint8)
        np.testing.assert_array_equal(majority_filter(mask), _literal_majority(mask).astype(bool))


def test_mask_iou_by_hand():
    pred = np.zeros((2, 10, 10), bool)
    gt = np.zeros((2, 10, 10), bool)
    pred[0, 0:4], gt[0, 2:6] = True, True  # 40 and 40 pixels, 20 shared -> 20 / 60
    pred[1, :, :5], gt[1, :, :] = True, True  # 50 of 100
    np.testing.assert_allclose(mask_iou(pred, gt), [1 / 3, 0.5])
    assert np.isnan(mask_iou(np.zeros((3, 3)), np.zeros((3, 3))))
    with pytest.raises(ValueError):
        mask_iou(np.zeros((3, 3)), np.zeros((3, 4)))


def test_mask_threshold_is_strict():
    # Normalised then mapped: 0 -> 0, 0.69 -> 0.38, 0.71 -> 0.42, 1 -> 1; only values > 0.4 are kept.
    smoothed = np.array([[0.0, 0.69, 0.71, 1.0]], np.float32).repeat(3, axis=0)
    v = normalize_relevancy(smoothed)
    np.testing.assert_allclose(v[0], [0.0, 0.38, 0.42, 1.0], atol=1e-6)
    np.testing.assert_array_equal(v > np.float32(0.4), [[False, False, True, True]] * 3)
    np.testing.assert_array_equal(mask_from_smoothed(smoothed), majority_filter(v > np.float32(0.4)))
    np.testing.assert_array_equal(mask_from_smoothed(smoothed, threshold=0.3), majority_filter(v > np.float32(0.3)))


# ---------------------------------------------------------------------------------------------------------------------
# The whole protocol against the literal re-implementation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_protocol_matches_literal_langsplat(seed):
    rng = np.random.default_rng(seed)
    h, w = 44, 58
    rel = _random_relevancy(rng, 3, h, w)
    gt = np.zeros((h, w), bool)
    gt[10:30, 15:40] = True
    gt[35:, :10] = True
    boxes = np.array([[15.0, 10.0, 39.0, 29.0], [9.0, 43.0, 0.0, 35.0]])

    result = evaluate_query(rel, gt, boxes)
    lvl_seg, mask_ref, iou_ref = _literal_segmentation(torch.from_numpy(rel), gt)
    lvl_loc, peaks_ref, hit_ref = _literal_localization(torch.from_numpy(rel), boxes)

    assert result.segmentation.level == lvl_seg
    np.testing.assert_array_equal(result.segmentation.mask, mask_ref.astype(bool))
    assert result.iou == iou_ref
    assert result.localization.level == lvl_loc
    np.testing.assert_array_equal(result.localization.peaks, peaks_ref)
    assert result.hit == hit_ref

    # One level (GAGS) as well: the same functions on [H, W].
    single = evaluate_query(rel[1], gt, boxes)
    _, mask1, iou1 = _literal_segmentation(torch.from_numpy(rel[1:2]), gt)
    _, peaks1, hit1 = _literal_localization(torch.from_numpy(rel[1:2]), boxes)
    np.testing.assert_array_equal(single.segmentation.mask, mask1.astype(bool))
    assert single.iou == iou1 and single.hit == hit1
    np.testing.assert_array_equal(single.localization.peaks, peaks1)


def test_segment_perfect_block():
    rel = np.full((60, 60), 0.1, np.float32)
    rel[15:45, 15:45] = 0.95
    seg = segment(rel)
    gt = np.zeros((60, 60), bool)
    gt[15:45, 15:45] = True
    iou = float(mask_iou(seg.mask, gt))
    assert seg.level == 0 and iou > 0.7  # the blend with the box filter rounds the corners
    res = evaluate_query(rel, gt, np.array([[15, 15, 44, 44]]))
    assert res.hit and res.iou == pytest.approx(iou)


def test_shape_errors():
    with pytest.raises(ValueError):
        evaluate_query(np.zeros((10, 10)), np.zeros((10, 11), bool), np.zeros((1, 4)))
    with pytest.raises(ValueError):
        localize(np.zeros((2, 3, 10, 10)))
    with pytest.raises(ValueError):
        choose_level(np.zeros((10, 10)))
