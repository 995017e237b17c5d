import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.models import HierarchySegmenter, MaskPrediction, Segmenter, load_segmenter


def _random_points(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([0, 0], [width, height], size=(n, 2)).astype(np.float32)


def test_masks_on_a_real_photo_are_nested_and_scored(kitchen_photo):
    seg = load_segmenter("hierarchy")
    assert isinstance(seg, HierarchySegmenter) and isinstance(seg, Segmenter)
    height, width = kitchen_photo.shape[:2]
    seg.set_image(kitchen_photo)
    points = _random_points(64, height, width)
    out = seg.predict(points)
    assert isinstance(out, MaskPrediction)
    masks, scores, stability = out
    assert masks.shape == (64, 3, height, width) and masks.dtype == torch.bool
    assert scores.shape == stability.shape == (64, 3)
    # every point lies inside its own three masks
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    assert masks[torch.arange(64), :, ys, xs].all()
    # sub-part inside part inside whole, hence non-decreasing areas
    assert not (masks[:, 0] & ~masks[:, 1]).any()
    assert not (masks[:, 1] & ~masks[:, 2]).any()
    area = masks.flatten(2).sum(-1)
    assert (area[:, 1:] >= area[:, :-1]).all()
    # the levels differ: coarser levels have fewer regions on a real photo
    regions = [len(np.unique(seg._level_maps[k])) for k in range(3)]
    assert regions[0] > regions[1] > regions[2] >= 1
    assert ((scores >= 0) & (scores <= 1)).all() and ((stability > 0) & (stability <= 1)).all()


def test_same_point_same_masks_and_deterministic(kitchen_photo):
    a, b = HierarchySegmenter(), HierarchySegmenter()
    a.set_image(kitchen_photo)
    b.set_image(kitchen_photo)
    pts = np.array([[10.0, 20.0], [10.4, 20.6], [150.0, 100.0]], np.float32)
    ma, sa, ta = a.predict(pts)
    mb, sb, tb = b.predict(torch.from_numpy(pts))
    assert torch.equal(ma, mb) and torch.equal(sa, sb) and torch.equal(ta, tb)
    assert torch.equal(ma[0], ma[1])  # same pixel


def test_each_mask_is_the_region_under_its_point(kitchen_photo):
    """Masks are built once per distinct region and gathered: the result must equal the direct definition."""
    seg = HierarchySegmenter()
    seg.set_image(kitchen_photo)
    height, width = kitchen_photo.shape[:2]
    points = np.concatenate([_random_points(150, height, width), np.full((5, 2), 20.5, np.float32)])  # repeats too
    masks = seg.predict(points).masks.numpy()
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    maps = seg._level_maps  # [3, H, W] region id per pixel and level
    expected = maps[None] == maps[:, ys, xs].T[:, :, None, None]  # [P, 3, H, W]
    assert np.array_equal(masks, expected)


def _two_depth_scene():
    """A grey plane with a grey square (same colour) in front of it: only depth tells them apart. [96, 96]."""
    rgb = np.full((96, 96, 3), 128, np.uint8)
    rgb += np.random.default_rng(0).integers(0, 3, size=rgb.shape, dtype=np.uint8)  # faint sensor noise
    depth = np.full((96, 96), 4.0, np.float32)
    depth[32:64, 32:64] = 2.0
    return rgb, depth


def test_depth_separates_an_object_that_colour_cannot():
    rgb, depth = _two_depth_scene()
    seg = HierarchySegmenter()
    point = np.array([[48.0, 48.0]], np.float32)
    seg.set_image(rgb)
    whole_without = seg.predict(point).masks[0, 2]
    seg.set_image(rgb, depth=depth)
    whole_with = seg.predict(point).masks[0, 2]
    square = torch.zeros(96, 96, dtype=torch.bool)
    square[32:64, 32:64] = True
    iou = lambda m: float((m & square).sum() / (m | square).sum())  # noqa: E731
    assert iou(whole_without) < 0.3  # colour alone: the square melts into the plane
    assert iou(whole_with) > 0.8  # with depth it is its own object


def _bowl_scene(contents_depth: float):
    """A grey table (depth 4) with a red ring (a bowl's rim, depth 2) holding an orange disk (its contents) at
    ``contents_depth``; rim and contents differ by ~30 Lab units, less than the whole level's cut. [128, 128]."""
    yy, xx = np.mgrid[:128, :128] + 0.5
    r = np.hypot(xx - 64, yy - 64)
    rim, contents = (r >= 18) & (r < 30), r < 18
    rgb = np.full((128, 128, 3), 128, np.uint8)
    rgb[rim] = (190, 60, 50)
    rgb[contents] = (215, 105, 40)
    rgb += np.random.default_rng(0).integers(0, 3, size=rgb.shape, dtype=np.uint8)
    depth = np.full((128, 128), 4.0, np.float32)
    depth[rim] = 2.0
    depth[contents] = contents_depth
    return rgb, depth, rim, contents


def test_contents_seen_through_a_rim_belong_to_its_object():
    """At the whole level, a region hidden all around by one neighbour (the contents inside a bowl's rim) joins it;
    a region in front of its neighbour (a ball resting in a ring) does not; the table behind stays apart."""
    def iou(m, t):
        return float((m & t).sum() / (m | t).sum())

    seg = HierarchySegmenter()
    rgb, depth, rim, contents = _bowl_scene(contents_depth=2.6)  # behind the rim: seen through it
    seg.set_image(rgb, depth)
    masks = seg.predict(np.array([[64.5, 64.5]], np.float32)).masks[0].numpy()  # a point on the contents
    assert iou(masks[1], contents) > 0.8  # part: the contents alone
    assert iou(masks[2], rim | contents) > 0.8  # whole: the bowl
    rgb, depth, rim, contents = _bowl_scene(contents_depth=1.5)  # in front of the ring
    seg.set_image(rgb, depth)
    masks = seg.predict(np.array([[64.5, 64.5]], np.float32)).masks[0].numpy()
    assert iou(masks[2], contents) > 0.8


def test_a_blurred_depth_edge_keeps_its_height():
    """Rendered expected depth smears an occluding edge over a few pixels; the step read across a pixel pair at
    STEP_SPAN pixels on either side still sees most of it, the two neighbours alone do not."""
    from gags.models.hierarchy import _depth_steps

    log_depth = np.log(np.interp(np.arange(16), [6, 9], [2.0, 4.0]))[None].astype(np.float32)  # ramp over 3 pixels
    valid = np.ones_like(log_depth, bool)
    full = np.log(2.0)
    assert _depth_steps(log_depth, valid, 1).max() > 0.75 * full
    assert _depth_steps(log_depth, valid, 0).max() < 0.45 * full
    assert (_depth_steps(log_depth, ~valid, 1) == 0).all()  # unknown depth: no step


def test_unknown_depth_is_ignored():
    rgb, depth = _two_depth_scene()
    depth[:] = np.nan
    seg = HierarchySegmenter()
    seg.set_image(rgb, depth=depth)
    assert seg.predict(np.array([[48.0, 48.0]])).masks.shape == (1, 3, 96, 96)


def test_user_mistakes_are_gags_errors(kitchen_photo):
    seg = HierarchySegmenter()
    with pytest.raises(GagsError, match="set_image"):
        seg.predict(np.zeros((1, 2)))
    with pytest.raises(GagsError, match="uint8"):
        seg.set_image(kitchen_photo.astype(np.float32))
    with pytest.raises(GagsError, match="depth"):
        seg.set_image(kitchen_photo, depth=np.ones((5, 5)))
    seg.set_image(kitchen_photo)
    with pytest.raises(GagsError, match="outside"):
        seg.predict(np.array([[-5.0, 3.0]]))
    with pytest.raises(GagsError, match="NaN"):
        seg.predict(np.array([[np.nan, 3.0]]))
    with pytest.raises(GagsError, match="increasing"):
        HierarchySegmenter(thresholds=(20.0, 10.0, 40.0))


def test_no_points_gives_empty_outputs(kitchen_photo):
    seg = HierarchySegmenter()
    seg.set_image(kitchen_photo)
    masks, scores, stability = seg.predict(np.zeros((0, 2), np.float32))
    assert masks.shape == (0, 3, *kitchen_photo.shape[:2]) and scores.shape == (0, 3)
