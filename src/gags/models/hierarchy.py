"""The embedded point-promptable segmenter: superpixels merged hierarchically, cut at three thresholds.

No weights and no download: :class:`HierarchySegmenter` implements the ``gags.models.segmenters.Segmenter`` protocol
(three nested masks per point, sub-part, part, whole, with a predicted IoU and a stability score each) from the image's
colours and, when given, its rendered depth.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from gags.errors import GagsError
from gags.levels import NUM_LEVELS as N_LEVELS
from gags.models.segmenters import MaskPrediction, check_points, check_rgb

SUPERPIXEL_AREA = 100
"""Pixels per SLIC superpixel (about 10 x 10): 655 superpixels on a 256 x 256 image.

Kept at smaller image sizes too. Mean IoU over the three levels (gags bench hierarchy-segmenter quality --depth
points, worlds 100-101): at 128 px 0.507 with 100 and with 50 px, 0.480 with 25; at 64 px 0.441 (100), 0.445 (50),
0.426 (25), 0.380 (12). Smaller superpixels separate more small parts somewhere in the image, but fewer of their masks
pass the segment stage's score and stability filters (sub-part level at 128 px: 66% with 100 px, 49% with 50)."""
SLIC_COMPACTNESS = 10.0
"""SLIC colour/space trade-off in Lab units (skimage.segmentation.slic's documented typical value for Lab)."""
DEPTH_FEATURE_SCALE = 100.0
"""SLIC feature units per unit of log depth: a 10% depth change counts as ~10 Lab units when clustering pixels."""
LIGHTNESS_WEIGHT = 0.4
"""Scale of CIE L* against a* and b*: below 1, shading and light/dark texture count less than hue."""
BLUR_SIGMA = 1.0
"""Gaussian blur (pixels) of the Lab image before superpixels and statistics: averages out fine texture."""
STABILITY_DELTA = 0.2
"""Relative threshold perturbation of the stability score: the cuts at t (1 - delta) and t (1 + delta) are compared."""
STEP_SPAN = 1
"""The depth step across the boundary between pixels x and x + 1 is read between x - span and x + 1 + span. Rendered
expected depth (what the segment stage passes) blurs an occluding edge over a few pixels; read between the two
neighbours only (span 0), those edges mostly vanish: on depth rendered from untrained Gaussians the whole-level IoU
drops from 0.52 (span 1) to 0.30 (span 0), while exact depth gives 0.61 either way (worlds 100-103 of
gags bench hierarchy-segmenter quality --depth points / exact)."""
OCCLUSION_STEP = 0.1
"""Log-depth step (about a 10% depth ratio) from which a boundary pixel pair counts as a full occlusion; smaller steps
count in proportion. On renders of the procedural world (worlds 100-101, exact depth, log-depth range in a 3 x 3
window) the median across true object / background boundaries is 0.095, across part boundaries inside an object 0.034.
"""
DEPTH_WEIGHTS = (15.0, 60.0, 250.0)
"""Edge weight (Lab units) that a boundary occluding all along adds, per level (sub-part, part, whole). Depth counts
more at coarser levels: surfaces of one part often fold (a bowl's rim, a slanted lid), parts of an object often occlude
each other (42% of part-boundary pixels step by > 4%), while whole objects are mostly outlined by occlusion (66%)."""
LEVEL_THRESHOLDS = (10.0, 25.0, 60.0)
"""Cut heights (edge-weight units: CIE Lab distance + depth term) of the sub-part, part and whole levels.

SUPERPIXEL_AREA, LIGHTNESS_WEIGHT and BLUR_SIGMA were chosen by a grid search for the best mean IoU with the exact
entity masks of renders of the procedural world (gags bench hierarchy-segmenter quality); DEPTH_WEIGHTS,
OCCLUSION_STEP, STEP_SPAN and LEVEL_THRESHOLDS by the mean IoU over the three levels with exact and with rendered
("points") depth, on worlds 100-103 only; worlds from 200 on are held out for reporting."""


class HierarchySegmenter:
    """The embedded point-promptable segmenter: superpixels merged hierarchically, cut at three thresholds.

    ``set_image`` does all the work, ``predict`` is a lookup:

    1. The image in CIE Lab, blurred by ``blur_sigma`` pixels (fine texture averages out) with L* scaled by
       ``lightness_weight`` (shading and light/dark texture count less than hue); SLIC superpixels
       (``superpixel_area`` pixels each) on it, plus scaled log depth when depth is given.
    2. Depth steps: for every pair of 4-neighbour pixels, the signed log-depth step across it, read ``step_span``
       pixels away on either side (so that a blurred edge of rendered depth keeps its height). The nearer pixel of the
       pair is in front by ``min(1, |step| / occlusion_step)`` (0 for the farther one, 0 where depth is unknown).
    3. A region adjacency graph: regions sharing a pixel boundary are neighbours. At level k, the weight of the edge
       between regions A and B is ``|mean_Lab(A) - mean_Lab(B)| + depth_weights[k] * E(A, B)``, where E is the
       occlusion evidence, in [0, 1]: the sum over the boundary's pixel pairs of how much A is in front plus how much
       B is in front, divided by the number of pairs. Touching objects of one colour are told apart by depth, parts of
       one object (little occlusion between them) by colour. At the whole level, A being in front of B counts in
       proportion to ``1 - |boundary(A, B)| / perimeter(B)``: a region that A encloses and hides the border of (the
       contents of a bowl, the inside of a cup) is seen through A, part of the same object, while an object standing
       in front of the table keeps its full evidence (the table's outline is much longer than the object's).
    4. Hierarchical merging through an increasing list of thresholds: in rounds, every region finds its cheapest
       edge; pairs of regions that are each other's cheapest, with a weight below the threshold, merge; region means
       and boundary statistics are recomputed (vectorised over all regions and edges); when no edge is below the
       threshold, the partition at that threshold is recorded and the next threshold continues from it. Every
       partition is therefore a coarsening of the previous one, and the three levels (cut at ``thresholds``) are
       nested by construction: sub-part inside part inside whole.
    5. A point's masks are the regions containing its pixel at the three levels.

    Scores, from region statistics (with the weights of the level):

    - ``scores`` (stands for SAM's predicted IoU): ``w_out / (w_out + w_in)`` where ``w_out`` is the weight of the
      region's cheapest external edge at that level (how strongly it is separated; at least the threshold) and
      ``w_in`` the mean weight of the merges that built it (how heterogeneous it is inside; 0 for one superpixel).
      1 for a single superpixel or the whole image, 0.5 when the boundary is no stronger than the inside.
    - ``stability`` (as SAM's stability score, the IoU of the mask under a perturbed threshold): the area of the
      point's region in the cut at ``t (1 - delta)`` divided by its area in the cut at ``t (1 + delta)``; nesting
      makes this ratio the IoU of the two masks.

    Runs on the CPU; masks follow superpixel boundaries.
    """

    def __init__(
        self,
        thresholds: tuple[float, float, float] = LEVEL_THRESHOLDS,
        superpixel_area: int = SUPERPIXEL_AREA,
        compactness: float = SLIC_COMPACTNESS,
        depth_weights: tuple[float, float, float] = DEPTH_WEIGHTS,
        occlusion_step: float = OCCLUSION_STEP,
        step_span: int = STEP_SPAN,
        stability_delta: float = STABILITY_DELTA,
        lightness_weight: float = LIGHTNESS_WEIGHT,
        blur_sigma: float = BLUR_SIGMA,
    ) -> None:
        if len(thresholds) != N_LEVELS or not all(0 < a < b for a, b in itertools.pairwise(thresholds)):
            raise GagsError(f"thresholds must be 3 increasing positive numbers; got {thresholds}.")
        if len(depth_weights) != N_LEVELS or min(depth_weights) < 0:
            raise GagsError(
                f"depth_weights must be 3 non-negative numbers (sub-part, part, whole); got {depth_weights}."
            )
        if not 0 < stability_delta < 1:
            raise GagsError(f"stability_delta must lie in (0, 1); got {stability_delta}.")
        if occlusion_step <= 0 or int(step_span) < 0:
            raise GagsError(f"occlusion_step must be > 0 and step_span >= 0; got {occlusion_step}, {step_span}.")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.superpixel_area = int(superpixel_area)
        self.compactness = float(compactness)
        self.depth_weights = tuple(float(w) for w in depth_weights)
        self.occlusion_step = float(occlusion_step)
        self.step_span = int(step_span)
        self.lightness_weight = float(lightness_weight)
        self.blur_sigma = float(blur_sigma)
        self.stability_delta = float(stability_delta)
        self.device = torch.device("cpu")
        self.superpixels: np.ndarray | None = None  # [H, W] int32
        self._level_labels: np.ndarray | None = None  # [3, S] int32 region id of every superpixel per level
        self._level_maps: np.ndarray | None = None  # [3, H, W] int32
        self._scores: np.ndarray | None = None  # [S, 3]
        self._stability: np.ndarray | None = None  # [S, 3]

    # -- set_image ------------------------------------------------------------------------------------------------

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        """rgb: [H, W, 3] uint8; depth: [H, W] float or None (0 or non-finite = unknown)."""
        from scipy.ndimage import gaussian_filter
        from skimage.color import rgb2lab
        from skimage.segmentation import slic

        rgb = check_rgb(rgb)
        height, width = rgb.shape[:2]
        lab = rgb2lab(rgb).astype(np.float32)  # [H, W, 3]
        if self.blur_sigma > 0:
            lab = gaussian_filter(lab, sigma=(self.blur_sigma, self.blur_sigma, 0))
        lab[..., 0] *= self.lightness_weight
        features = lab
        step_x = np.zeros((height, max(width - 1, 0)), np.float32)  # [H, W-1] signed log-depth steps, 0 = none
        step_y = np.zeros((max(height - 1, 0), width), np.float32)  # [H-1, W]
        if depth is not None:
            depth = np.asarray(depth, np.float32)
            if depth.ndim == 3 and depth.shape[-1] == 1:
                depth = depth[..., 0]
            if depth.shape != (height, width):
                raise GagsError(f"depth has shape {list(depth.shape)}, the image {height}x{width}; pass [H, W] depth.")
            valid = np.isfinite(depth) & (depth > 0)
            if valid.any():
                log_depth = np.log(np.where(valid, depth, 1.0))
                log_depth = np.where(valid, log_depth, np.median(log_depth[valid])).astype(np.float32)
                features = np.concatenate([lab, DEPTH_FEATURE_SCALE * log_depth[..., None]], axis=-1)
                step_x = _depth_steps(log_depth, valid, self.step_span)
                step_y = _depth_steps(log_depth.T, valid.T, self.step_span).T
        n_segments = max(1, (height * width) // self.superpixel_area)
        # slic rescales its input to [0, 1] with one global min/max; scaling the compactness by the same factor keeps
        # the colour/space trade-off in Lab units, whatever the features' range.
        value_range = max(float(features.max() - features.min()), 1e-6)
        superpixels = slic(
            features, n_segments=n_segments, compactness=self.compactness / value_range, convert2lab=False,
            channel_axis=-1, start_label=0, enforce_connectivity=True,
        )
        _, superpixels = np.unique(superpixels, return_inverse=True)
        superpixels = superpixels.reshape(height, width).astype(np.int32)
        self.superpixels = superpixels
        graph = _SuperpixelGraph.build(superpixels, lab, step_x, step_y, self.occlusion_step)

        cuts = []  # (threshold, level) in increasing order: t(1-d), t, t(1+d) for each level
        for level, t in enumerate(self.thresholds):
            cuts += [(t * (1 - self.stability_delta), level), (t, level), (t * (1 + self.stability_delta), level)]
        if not all(a[0] < b[0] for a, b in itertools.pairwise(cuts)):
            raise GagsError(f"thresholds {self.thresholds} are too close for stability_delta {self.stability_delta}.")
        labels = np.arange(graph.n, dtype=np.int64)
        partitions, merge_counts = [], []
        merge_rep: list[np.ndarray] = []  # a superpixel inside each merge
        merge_w: list[np.ndarray] = []  # the weight of each merge
        for t, level in cuts:
            labels = graph.merge_below(labels, t, self._edge_rule(level), merge_rep, merge_w)
            partitions.append(labels)
            merge_counts.append(sum(len(r) for r in merge_rep))
        reps = np.concatenate(merge_rep) if merge_rep else np.zeros(0, np.int64)
        weights = np.concatenate(merge_w) if merge_w else np.zeros(0, np.float64)

        level_labels = np.stack([partitions[3 * k + 1] for k in range(N_LEVELS)]).astype(np.int32)  # [3, S]
        scores = np.empty((graph.n, N_LEVELS), np.float32)
        stability = np.empty((graph.n, N_LEVELS), np.float32)
        for k in range(N_LEVELS):
            lower, mid, upper = partitions[3 * k : 3 * k + 3]
            n_regions = int(mid.max()) + 1
            n_merges = merge_counts[3 * k + 1]
            region_of_merge = mid[reps[:n_merges]]
            merged = np.bincount(region_of_merge, minlength=n_regions)
            w_in = np.bincount(region_of_merge, weights[:n_merges], minlength=n_regions) / np.maximum(merged, 1)
            ua, ub, w = graph.region_edges(mid, n_regions, *self._edge_rule(k))
            w_out = np.full(n_regions, np.inf)
            np.minimum.at(w_out, ua, w)
            np.minimum.at(w_out, ub, w)
            separated = np.isfinite(w_out)  # the whole image has no outside: score 1
            region_score = np.ones(n_regions)
            region_score[separated] = w_out[separated] / np.maximum(w_out[separated] + w_in[separated], 1e-12)
            scores[:, k] = region_score[mid]
            area_lower = np.bincount(lower, graph.count, minlength=int(lower.max()) + 1)
            area_upper = np.bincount(upper, graph.count, minlength=int(upper.max()) + 1)
            stability[:, k] = area_lower[lower] / area_upper[upper]
        self._level_labels = level_labels
        self._level_maps = level_labels[:, superpixels].astype(np.int32)  # [3, H, W]
        self._scores = scores
        self._stability = stability

    def _edge_rule(self, level: int) -> tuple[float, bool]:
        """(depth weight, whether enclosure discounts occlusion) of the edge weights at ``level``."""
        return self.depth_weights[level], level == N_LEVELS - 1

    # -- predict --------------------------------------------------------------------------------------------------

    def predict(self, points: np.ndarray | torch.Tensor) -> MaskPrediction:
        """points: [P, 2] pixel xy -> masks [P, 3, H, W] bool (nested), scores [P, 3], stability [P, 3] (CPU)."""
        if (self.superpixels is None or self._level_maps is None or self._level_labels is None
                or self._scores is None or self._stability is None):
            raise GagsError("call set_image before predict.")
        height, width = self.superpixels.shape
        pts = check_points(points, height, width)
        xs = np.clip(np.floor(pts[:, 0]).astype(np.int64), 0, width - 1)
        ys = np.clip(np.floor(pts[:, 1]).astype(np.int64), 0, height - 1)
        sp = self.superpixels[ys, xs]  # [P]
        masks = _region_masks(self._level_maps, self._level_labels[:, sp].T)
        return MaskPrediction(
            torch.from_numpy(masks), torch.from_numpy(self._scores[sp]), torch.from_numpy(self._stability[sp])
        )


def _depth_steps(log_depth: np.ndarray, valid: np.ndarray, span: int) -> np.ndarray:
    """Signed log-depth step across every horizontal pixel pair (x, x + 1), read at x - span and x + 1 + span.

    log_depth, valid: [H, W] -> [H, W - 1]; > 0 where the right pixel is farther; 0 where either sample is unknown.
    Samples beyond the image are clamped to its edge.
    """
    width = log_depth.shape[1]
    x = np.arange(width - 1)
    left, right = np.clip(x - span, 0, width - 1), np.clip(x + 1 + span, 0, width - 1)
    step = log_depth[:, right] - log_depth[:, left]
    return np.where(valid[:, left] & valid[:, right], step, 0.0).astype(np.float32)


def _region_masks(level_maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """level_maps: [L, H, W] region id per pixel and level; regions: [P, L] region of each point per level.

    Returns [P, L, H, W] bool, the mask of each point's region at each level. Many points fall in the same region, so
    each distinct (level, region) mask is painted once, by one scatter over the pixels of each level (O(L H W), not
    one comparison of the whole image per mask), then gathered for the points (a copy per point and level).
    """
    n_points, n_levels = regions.shape
    height, width = level_maps.shape[1:]
    offsets = np.concatenate([[0], np.cumsum(level_maps.reshape(n_levels, -1).max(1) + 1)])  # [L + 1]
    keys = (regions + offsets[:-1]).ravel()  # [P L] region ids, distinct across levels
    unique, inverse = np.unique(keys, return_inverse=True)  # [U], [P L]
    row = np.full(offsets[-1], -1, np.int64)  # row of each (level, region) in the distinct masks, -1 = not asked
    row[unique] = np.arange(len(unique))
    distinct = np.zeros((len(unique), height * width), bool)  # [U, H W]
    pixel = np.arange(height * width)
    for level in range(n_levels):  # three scatters, each over all pixels of one level
        rows = row[level_maps[level].ravel() + offsets[level]]
        asked = rows >= 0
        distinct[rows[asked], pixel[asked]] = True
    return distinct[inverse].reshape(n_points, n_levels, height, width)


class _SuperpixelGraph:
    """Superpixel statistics and pixel-boundary edges, from which region graphs of any partition are computed.

    n: superpixels; count [n] pixels; lab_sum [n, 3]; border [n] pixel sides on the image border; edge_a < edge_b [E]
    superpixel ids; edge_len [E] pixel pairs on the boundary; near_a, near_b [E] sums over those pairs of how much the
    pixel of edge_a (edge_b) is in front of the other one (each pair's term in [0, 1], at most one of them non-zero).
    """

    def __init__(self, n, count, lab_sum, border, edge_a, edge_b, edge_len, near_a, near_b):
        self.n, self.count, self.lab_sum, self.border = n, count, lab_sum, border
        self.edge_a, self.edge_b, self.edge_len, self.near_a, self.near_b = edge_a, edge_b, edge_len, near_a, near_b

    @classmethod
    def build(cls, superpixels: np.ndarray, lab: np.ndarray, step_x: np.ndarray, step_y: np.ndarray,
              occlusion_step: float) -> _SuperpixelGraph:
        """superpixels: [H, W] ids 0..S-1; lab: [H, W, 3]; step_x [H, W-1], step_y [H-1, W]: signed log-depth steps
        (> 0: the second pixel of the pair is farther)."""
        n = int(superpixels.max()) + 1
        flat = superpixels.ravel()
        count = np.bincount(flat, minlength=n).astype(np.float64)
        lab_flat = lab.reshape(-1, 3).astype(np.float64)
        lab_sum = np.stack([np.bincount(flat, lab_flat[:, c], minlength=n) for c in range(3)], axis=1)
        rim = np.concatenate([superpixels[0], superpixels[-1], superpixels[:, 0], superpixels[:, -1]])
        border = np.bincount(rim, minlength=n).astype(np.float64)
        a = np.concatenate([superpixels[:, :-1].ravel(), superpixels[:-1, :].ravel()]).astype(np.int64)
        b = np.concatenate([superpixels[:, 1:].ravel(), superpixels[1:, :].ravel()]).astype(np.int64)
        step = np.concatenate([step_x.ravel(), step_y.ravel()]).astype(np.float64)
        cross = a != b
        a, b, step = a[cross], b[cross], step[cross]
        first_near = np.clip(step / occlusion_step, 0.0, 1.0)  # the pair's first pixel (in a) is in front
        second_near = np.clip(-step / occlusion_step, 0.0, 1.0)
        a_low = a < b
        keys, inverse = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_inverse=True)
        edge_len = np.bincount(inverse, minlength=len(keys)).astype(np.float64)
        near_a = np.bincount(inverse, np.where(a_low, first_near, second_near), minlength=len(keys))
        near_b = np.bincount(inverse, np.where(a_low, second_near, first_near), minlength=len(keys))
        return cls(n, count, lab_sum, border, keys // n, keys % n, edge_len, near_a, near_b)

    def region_edges(
        self, labels: np.ndarray, n_regions: int, depth_weight: float, enclosure: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """labels: [S] region of each superpixel -> region edges ua, ub [E'] (ua < ub) and their weights [E'].

        Weight = Lab distance of the region means + depth_weight * occlusion evidence (see HierarchySegmenter);
        ``enclosure``: A in front of B counts in proportion to the share of B's perimeter that is not their boundary.
        """
        size = np.bincount(labels, self.count, minlength=n_regions)
        mean = np.stack(
            [np.bincount(labels, self.lab_sum[:, c], minlength=n_regions) for c in range(3)], axis=1
        ) / size[:, None]
        ra, rb = labels[self.edge_a], labels[self.edge_b]
        cross = ra != rb
        ra, rb = ra[cross], rb[cross]
        a_low = ra < rb
        keys, inverse = np.unique(np.minimum(ra, rb) * n_regions + np.maximum(ra, rb), return_inverse=True)
        length = np.bincount(inverse, self.edge_len[cross], minlength=len(keys))
        near_a, near_b = self.near_a[cross], self.near_b[cross]
        low_near = np.bincount(inverse, np.where(a_low, near_a, near_b), minlength=len(keys))  # ua in front
        high_near = np.bincount(inverse, np.where(a_low, near_b, near_a), minlength=len(keys))  # ub in front
        ua, ub = keys // n_regions, keys % n_regions
        if enclosure:
            perimeter = (np.bincount(labels, self.border, minlength=n_regions)
                         + np.bincount(ua, length, minlength=n_regions) + np.bincount(ub, length, minlength=n_regions))
            evidence = low_near * (1 - length / perimeter[ub]) + high_near * (1 - length / perimeter[ua])
        else:
            evidence = low_near + high_near
        weight = np.linalg.norm(mean[ua] - mean[ub], axis=1) + depth_weight * evidence / np.maximum(length, 1.0)
        return ua, ub, weight

    def merge_below(
        self, labels: np.ndarray, threshold: float, rule: tuple[float, bool], merge_rep: list[np.ndarray],
        merge_w: list[np.ndarray],
    ) -> np.ndarray:
        """Merge mutually-cheapest region pairs (rounds) until no edge weighs less than ``threshold``.

        labels: [S] compact region ids -> new compact region ids [S]; rule: ``region_edges``' (depth_weight,
        enclosure); appends each merge's superpixel and weight.
        """
        while True:
            n_regions = int(labels.max()) + 1
            ua, ub, w = self.region_edges(labels, n_regions, *rule)
            below = w < threshold
            if not below.any():
                return labels
            ua, ub, w = ua[below], ub[below], w[below]
            src, dst, ww = np.concatenate([ua, ub]), np.concatenate([ub, ua]), np.concatenate([w, w])
            order = np.lexsort((dst, ww, src))  # by source, then weight, then neighbour (deterministic ties)
            src, dst, ww = src[order], dst[order], ww[order]
            first = np.r_[True, src[1:] != src[:-1]]
            best = np.full(n_regions, -1, np.int64)
            best_w = np.full(n_regions, np.inf)
            best[src[first]], best_w[src[first]] = dst[first], ww[first]
            ids = np.arange(n_regions)
            mutual = (best > ids) & (best[np.maximum(best, 0)] == ids)
            if mutual.any():
                keep, gone, weight = ids[mutual], best[mutual], best_w[mutual]
            else:  # only possible with exactly tied weights around a cycle: merge the single cheapest edge
                i = int(np.argmin(w))
                keep, gone, weight = ua[i : i + 1], ub[i : i + 1], w[i : i + 1]
            parent = np.arange(n_regions)
            parent[gone] = keep
            first_sp = np.full(n_regions, -1, np.int64)
            first_sp[labels[::-1]] = np.arange(len(labels))[::-1]
            merge_rep.append(first_sp[keep])
            merge_w.append(weight.astype(np.float64))
            _, labels = np.unique(parent[labels], return_inverse=True)
