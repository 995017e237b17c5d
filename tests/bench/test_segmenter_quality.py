"""gags bench hierarchy-segmenter quality: its IoU, best-of-three and by-area figures against segmenters whose answers
are known (the exact entities, and the whole image)."""

import numpy as np
import pytest
import torch

from gags.bench import hierarchy_segmenter as hs
from gags.config import BenchSegmenterConfig
from gags.errors import GagsError
from gags.models import MaskPrediction

CONFIG = BenchSegmenterConfig(what="quality", seeds=1, seed_base=200, views=1, size=48)


class _Exact:
    """Answers every point with the exact entities under it, reading the ids of the render it is given."""

    def __init__(self, order: tuple[int, int, int] = (0, 1, 2)) -> None:
        from gags.synth.raycast import compile_world, render
        from gags.synth.rig import sample_cameras
        from gags.synth.world import build_world

        self.order = order
        self.ids_of: dict[bytes, np.ndarray] = {}
        for preset in hs.PRESETS:
            world = build_world(preset, CONFIG.seed_base)
            compiled = compile_world(world)
            for camera in sample_cameras(world, CONFIG.views, CONFIG.size, seed=CONFIG.seed_base):
                r = render(world, camera, supersample=2, compiled=compiled)
                self.ids_of[r.rgb.tobytes()] = r.ids

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        self.ids = self.ids_of[rgb.tobytes()]

    def predict(self, points: np.ndarray) -> MaskPrediction:
        xy = np.floor(points).astype(int)
        masks = np.stack([self.ids[k][None] == self.ids[k][xy[:, 1], xy[:, 0]][:, None, None] for k in self.order], 1)
        ones = torch.ones(len(points), 3)
        return MaskPrediction(torch.from_numpy(masks), ones, ones)


class _Everything:
    """Answers every point with the whole image at all three levels."""

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        self.shape = rgb.shape[:2]

    def predict(self, points: np.ndarray) -> MaskPrediction:
        masks = torch.ones(len(points), 3, *self.shape, dtype=torch.bool)
        return MaskPrediction(masks, torch.zeros(len(points), 3), torch.zeros(len(points), 3))


def test_exact_masks_score_one_everywhere_and_best_of_three_finds_them_in_any_order():
    exact = hs.quality(CONFIG, 20, _Exact())
    assert exact["iou"] == exact["best"] == [1.0, 1.0, 1.0]
    assert exact["by_area"]["best"] == exact["by_area"]["precision"] == exact["by_area"]["recall"] == [
        1.0 if n else None for n in exact["by_area"]["points"]]
    assert sum(exact["by_area"]["points"]) == 3 * exact["points"]
    reversed_levels = hs.quality(CONFIG, 20, _Exact((2, 1, 0)))
    assert reversed_levels["best"] == [1.0, 1.0, 1.0]
    assert reversed_levels["iou"][1] == 1.0 and reversed_levels["iou"][0] < 1.0  # the part level stays in place


def test_whole_image_masks_cover_everything_with_the_entity_share_as_precision():
    result = hs.quality(CONFIG, 20, _Everything())
    area = result["by_area"]
    assert all(r == 1.0 for r, n in zip(area["recall"], area["points"], strict=True) if n)
    edges = [0.0, *area["edges"], 1.0]
    for b, n in enumerate(area["points"]):
        if n:  # precision of the whole image = the entity's share of it, which lies in the bin
            assert edges[b] <= area["precision"][b] < edges[b + 1]
            assert area["best"][b] == pytest.approx(area["precision"][b])
    assert result["over_2x"] == [1.0, 1.0, 1.0] and result["pass_filters"] == [0.0, 0.0, 0.0]


def test_by_area_table_has_a_row_per_bin_and_a_column_per_segmenter():
    record = {"segmenter": "exact", "quality": hs.quality(CONFIG, 20, _Exact())}
    other = {"segmenter": "everything", "quality": hs.quality(CONFIG, 20, _Everything())}
    table = hs.by_area_markdown([record, other]).splitlines()
    assert len(table) == 2 + len(hs.AREA_BINS) + 1
    assert "exact: best IoU" in table[0] and "everything: best IoU" in table[0]
    filled = [line for line, n in zip(table[2:], record["quality"]["by_area"]["points"], strict=True) if n]
    assert filled and all("| 1.00 / 1.00 / 1.00 |" in line for line in filled)


def test_mask_grid_keeps_masks_as_fine_as_the_grid_and_the_oracle_sees_each_views_ids():
    masks = np.zeros((1, 2, 16, 16), bool)
    masks[0, 0, 4:12, :] = True  # whole rows of cells of a 4 x 4 grid (bilinear upsampling rounds corners)
    masks[0, 1, 5:7, 5:7] = True  # a quarter of one cell
    coarse = hs.through_grid(masks, 4)
    assert (coarse[0, 0] == masks[0, 0]).all() and not coarse[0, 1].any()
    assert (hs.through_grid(masks, 16) == masks).all()

    from gags.models import load_segmenter

    oracle = load_segmenter("oracle")
    exact = hs.quality(CONFIG, 20, oracle)
    assert exact["best"] == exact["iou"] == [1.0, 1.0, 1.0] and exact["mask_grid"] is None
    coarse_config = BenchSegmenterConfig(what="quality", seeds=1, seed_base=200, views=1, size=48, mask_grid=12)
    coarse = hs.quality(coarse_config, 20, oracle)
    assert coarse["mask_grid"] == 12 and all(c < 1.0 for c in coarse["best"])
    area = coarse["by_area"]["best"]  # small entities lose the most
    filled = [b for b in area if b is not None]
    assert filled[0] < filled[-1]
    with pytest.raises(GagsError, match="--mask-grid 7: give it with quality, as a divisor of --size 48"):
        hs.run(BenchSegmenterConfig(what="quality", segmenter="oracle", size=48, mask_grid=7))
