import dataclasses

import numpy as np
import pytest
import torch

from gags.bench.mask_nms import sam_like_masks
from gags.config import SegmentConfig
from gags.errors import GagsError
from gags.segment import masks as M
from gags.segment import mindepth, prompts
from gags.segment._reference import filter_masks, literal_mask_nms
from gags.segment.masks import (
    granularity_levels,
    langsplat_segment_maps,
    mask_nms,
    masks_to_boxes,
    paint_segment_map,
    paint_segment_maps,
    pairwise_intersections,
    remove_small_regions,
)


def box(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------------------------------------------------
# boxes and small regions, against segment_anything's own functions


def random_blobs(seed, n=12, h=40, w=50):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(n, 1, h, w, generator=g), 5, 1, 2)[:, 0]
    masks = base > base.mean(dim=(1, 2), keepdim=True)
    masks[0] = False  # an empty mask
    masks[1] = False
    masks[1, 3:5, 3:6] = True  # one island, smaller than the threshold: SAM keeps it (the largest)
    masks[1, 20:22, 30:31] = True
    masks[2] = True
    masks[2, 0:2, 0:3] = False  # a small hole touching the border
    return masks


def test_masks_to_boxes_matches_segment_anything():
    amg = pytest.importorskip("segment_anything.utils.amg")
    masks = random_blobs(0)
    assert torch.equal(masks_to_boxes(masks), amg.batched_mask_to_box(masks).long())
    assert masks_to_boxes(masks)[0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_area", [30, 45])  # 45 > min(H, W): every window is the whole image
def test_remove_small_regions_matches_segment_anything(seed, min_area):
    amg = pytest.importorskip("segment_anything.utils.amg")
    masks = random_blobs(seed)
    ours, changed = remove_small_regions(masks, min_area)
    for k in range(len(masks)):
        mask, ch_holes = amg.remove_small_regions(masks[k].numpy(), min_area, mode="holes")
        mask, ch_islands = amg.remove_small_regions(mask, min_area, mode="islands")
        assert np.array_equal(ours[k].numpy(), mask), k
        assert changed[k].item() == (ch_holes or ch_islands), k
    assert changed[1] and changed[2] and not changed[0]
    assert ours[2].all()  # the border hole is filled


def test_remove_small_regions_on_sam_like_masks():
    amg = pytest.importorskip("segment_anything.utils.amg")
    masks, _ = sam_like_masks(96, 120, 30, 0)
    g = torch.Generator().manual_seed(0)
    masks = masks ^ (torch.rand(masks.shape, generator=g) < 0.002)  # pepper: small holes and islands everywhere
    ours, changed = remove_small_regions(masks, 20)
    for k in range(len(masks)):
        mask, ch_holes = amg.remove_small_regions(masks[k].numpy(), 20, mode="holes")
        mask, ch_islands = amg.remove_small_regions(mask, 20, mode="islands")
        assert np.array_equal(ours[k].numpy(), mask), k
        assert changed[k].item() == (ch_holes or ch_islands), k


def test_remove_small_regions_in_several_mosaic_calls(monkeypatch):
    masks = random_blobs(7, n=9)
    whole = remove_small_regions(masks, 30)
    monkeypatch.setattr(M, "_MOSAIC_PIXELS", 2 * 41 * 50)  # two masks per connected-components call
    parts = remove_small_regions(masks, 30)
    assert torch.equal(whole[0], parts[0]) and torch.equal(whole[1], parts[1])


def test_filter_masks_rules():
    h, w = 40, 40
    big = box(h, w, 0, 20, 0, 20)
    masks = torch.stack([
        big,                          # 0: kept
        big,                          # 1: same box, lower predicted IoU -> box NMS drops it
        box(h, w, 25, 35, 25, 35),    # 2: predicted IoU exactly 0.7 -> dropped (strict >)
        box(h, w, 25, 35, 0, 10),     # 3: stability exactly 0.85 -> kept (>=)
        box(h, w, 22, 38, 12, 22),    # 4: kept, with a 4-pixel island that the clean-up removes
    ])
    masks[4, 0:2, 36:38] = True
    iou = torch.tensor([0.95, 0.90, 0.70, 0.80, 0.75])
    stability = torch.tensor([0.95, 0.95, 0.95, 0.85, 0.90])
    out = filter_masks(masks, iou, stability, min_region_area=10)
    # unchanged masks first (by decreasing predicted IoU), then the changed one
    assert out.index.tolist() == [0, 3, 4]
    assert torch.equal(out.masks[2], box(h, w, 22, 38, 12, 22))
    assert out.boxes[2].tolist() == [12, 22, 21, 37]


def test_second_nms_prefers_unchanged_masks():
    h, w = 30, 30
    clean = box(h, w, 5, 25, 5, 25)
    dirty = clean.clone()
    dirty[0, 0] = True  # an island: after its removal both masks are equal
    masks = torch.stack([dirty, clean])
    boxes_differ = masks_to_boxes(masks)
    assert not torch.equal(boxes_differ[0], boxes_differ[1])  # so the first box NMS keeps both
    out = filter_masks(masks, torch.tensor([0.99, 0.8]), torch.tensor([0.9, 0.9]), min_region_area=10)
    assert out.index.tolist() == [1]  # the unchanged one survives although its predicted IoU is lower


# ----------------------------------------------------------------------------------------------------------------------
# mask NMS


def test_pairwise_intersections_exact(monkeypatch):
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(30, 37, 41, generator=g) < 0.3
    masks[3] = False
    flat = masks.reshape(30, -1).double()
    expected = (flat @ flat.T).long()
    assert torch.equal(pairwise_intersections(masks), expected)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")  # forces the float64 path
    assert torch.equal(pairwise_intersections(masks), expected)
    assert pairwise_intersections(torch.zeros(0, 5, 5, dtype=torch.bool)).shape == (0, 0)


def test_mask_nms_hand_cases():
    h, w = 20, 20
    big = box(h, w, 0, 20, 0, 20)        # 400 px
    small = box(h, w, 2, 8, 2, 8)        # 36 px, inside big
    other = box(h, w, 10, 20, 10, 20)    # 100 px, inside big too
    dup = other.clone()
    dup[10, 10] = False                  # IoU 99/100 with other
    # a small mask inside a bigger one is dropped whatever the scores (both inner rules)
    assert mask_nms(torch.stack([big, small]), torch.tensor([0.9, 0.8])).tolist() == [True, False]
    assert mask_nms(torch.stack([big, small]), torch.tensor([0.8, 0.9])).tolist() == [True, False]
    # a near-duplicate with the lower score goes
    keep = mask_nms(torch.stack([other, dup, small]), torch.tensor([0.8, 0.9, 0.75]))
    assert keep.tolist() == [False, True, True]
    # score must exceed 0.7
    assert mask_nms(torch.stack([other, small]), torch.tensor([0.7, 0.9])).tolist() == [False, True]
    # when no score passes, the 3 best pass that criterion
    four = torch.stack([box(h, w, 0, 5, 5 * k, 5 * k + 5) for k in range(4)])
    keep = mask_nms(four, torch.tensor([0.5, 0.6, 0.4, 0.65]))
    assert keep.tolist() == [True, True, False, True]


@pytest.mark.parametrize("seed", range(25))
def test_mask_nms_equals_the_literal_loop(seed):
    masks, scores = sam_like_masks(40, 52, 8, seed)
    if seed % 5 == 0:
        scores = scores * 0.7  # every score fails: the fallback path
    if seed % 5 == 1:
        scores = torch.round(scores * 4) / 4  # many ties
    assert torch.equal(mask_nms(masks, scores), literal_mask_nms(masks, scores))


# ----------------------------------------------------------------------------------------------------------------------
# painting and the _s layout


def test_painting_order():
    h, w = 6, 6
    big = box(h, w, 0, 6, 0, 6)
    mid = box(h, w, 0, 3, 0, 3)
    small = box(h, w, 0, 1, 0, 1)
    corner = box(h, w, 5, 6, 5, 6)
    masks = torch.stack([small, big, mid])
    seg = paint_segment_map(masks)  # larger first, smaller over them, whatever the input order
    assert seg[0, 0] == 0 and seg[2, 2] == 2 and seg[5, 5] == 1
    given = paint_segment_map(masks, order="given")  # list order, later over earlier: mid over big over small
    assert given[0, 0] == 2 and given[5, 5] == 1
    assert (paint_segment_map(torch.stack([corner])) == torch.where(corner, 0, -1)).all()
    assert (paint_segment_map(torch.zeros(0, h, w, dtype=torch.bool)) == -1).all()


def test_painting_matches_sequential_painting():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(40, 17, 23, generator=g) < 0.2
    ref = torch.full((17, 23), -1)
    area = masks.sum(dim=(1, 2))
    for k in torch.sort(area, descending=True, stable=True).indices:
        ref[masks[k]] = k
    assert torch.equal(paint_segment_map(masks), ref)


def test_langsplat_layout_offsets():
    h, w = 4, 4
    full = box(h, w, 0, 4, 0, 4)
    half = box(h, w, 0, 2, 0, 4)
    default = torch.stack([full, half])
    s = torch.stack([half])
    m = torch.zeros(0, h, w, dtype=torch.bool)
    lvl = torch.stack([half, full, box(h, w, 3, 4, 3, 4)])
    seg = langsplat_segment_maps([default, s, m, lvl])
    assert seg.shape == (4, h, w) and seg.dtype == torch.int64
    assert seg[0, 0, 0] == 1 and seg[0, 3, 0] == 0  # default: no offset
    assert seg[1, 0, 0] == 2 and seg[1, 3, 0] == -1  # s: after the 2 default masks
    assert (seg[2] == -1).all()  # m: no masks
    assert seg[3, 0, 0] == 3 + 0 and seg[3, 2, 0] == 3 + 1 and seg[3, 3, 3] == 3 + 2  # l: after 2 + 1 + 0
    assert paint_segment_maps([default, s]).shape == (2, h, w)
    with pytest.raises(GagsError):
        langsplat_segment_maps([default, s, m])


# ----------------------------------------------------------------------------------------------------------------------
# all four levels


def test_granularity_levels():
    h, w = 40, 40
    whole = box(h, w, 0, 30, 0, 30)
    part = box(h, w, 0, 30, 0, 12)  # 360 of 900 px: inside whole, less than half of it
    sub = box(h, w, 0, 6, 0, 6)
    other = box(h, w, 32, 40, 32, 40)
    # two points: (sub, part, whole) and (sub of the other object, other, other again)
    masks = torch.stack([sub, part, whole, other, other, other])
    iou = torch.tensor([0.9, 0.9, 0.95, 0.8, 0.85, 0.6])  # the last fails the quality filter
    stability = torch.full((6,), 0.95)
    granularity = torch.tensor([0, 1, 2, 0, 1, 2])
    levels = granularity_levels(masks, iou, stability, granularity, min_region_area=10)
    assert set(levels) == {"default", "s", "m", "l"}
    # default: box NMS keeps one of the two equal "other" masks (higher IoU: row 4); mask NMS drops sub and part,
    # which lie inside whole
    assert levels["default"].source.tolist() == [2, 4]
    assert levels["s"].source.tolist() == [0, 3]
    assert levels["m"].source.tolist() == [1, 4]
    assert levels["l"].source.tolist() == [2]
    assert torch.equal(levels["l"].masks[0], whole)
    assert levels["l"].boxes[0].tolist() == [0, 0, 29, 29]


def test_config_defaults_are_the_module_constants():
    cfg = {f.name: f.default for f in dataclasses.fields(SegmentConfig)}
    assert cfg["visibility_rel_tol"] == mindepth.VISIBILITY_REL_TOL
    assert cfg["patch_grid"] == prompts.PATCH_GRID
    assert cfg["points_per_ratio"] == prompts.POINTS_PER_RATIO
    assert cfg["max_points_per_side"] == prompts.MAX_POINTS_PER_SIDE
    assert cfg["sub_patch_grid"] == prompts.SUB_PATCH_GRID
    assert cfg["uniform_points_per_side"] == prompts.UNIFORM_POINTS_PER_SIDE
    assert cfg["seed"] == prompts.SEED
    assert cfg["pred_iou_thresh"] == M.PRED_IOU_THRESH
    assert cfg["stability_thresh"] == M.STABILITY_THRESH
    assert cfg["box_nms_thresh"] == M.BOX_NMS_THRESH
    assert cfg["min_region_area"] is None  # the release's 100 px at SAM's scale, scaled to the image:
    assert M.min_region_area_for(768, M.SAM_INPUT_SIDE) == M.MIN_REGION_AREA == 100
    assert M.min_region_area_for(128, 128) == 2 and M.min_region_area_for(256, 192) == 6
    assert M.min_region_area_for(48, 48) == 0
    assert cfg["mask_nms_iou"] == M.MASK_NMS_IOU
    assert cfg["mask_nms_score"] == M.MASK_NMS_SCORE
    assert cfg["mask_nms_inner"] == M.MASK_NMS_INNER


@pytest.mark.parametrize("min_area", [0, 20])
def test_granularity_levels_equal_filter_then_nms_per_level(min_area):
    base, _ = sam_like_masks(64, 80, 12, 1)
    g = torch.Generator().manual_seed(2)
    pick = torch.randint(0, len(base), (90,), generator=g)
    masks = base[pick] ^ (torch.rand(90, 64, 80, generator=g) < 0.001)  # repeats, with pepper to clean up
    iou = 0.6 + 0.4 * torch.rand(90, generator=g)
    stability = 0.8 + 0.2 * torch.rand(90, generator=g)
    granularity = torch.arange(90) % 3
    levels = granularity_levels(masks, iou, stability, granularity, min_region_area=min_area)
    for k, name in enumerate(M.LEVELS):
        rows = torch.arange(90) if name == "default" else torch.nonzero(granularity == k - 1)[:, 0]
        fm = filter_masks(masks[rows], iou[rows], stability[rows], min_region_area=min_area)
        keep = mask_nms(fm.masks, stability[rows][fm.index].double() * iou[rows][fm.index].double())
        assert torch.equal(levels[name].source, rows[fm.index[keep]]), name
        assert torch.equal(levels[name].masks, fm.masks[keep]), name
        assert torch.equal(levels[name].boxes, fm.boxes[keep]), name
    assert len(levels["default"].source) > 3
