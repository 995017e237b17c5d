"""3D selection: which Gaussians a text query is about.

Every Gaussian's feature is decoded once (in chunks, no rendering) and scored against the text with the same relevancy
as pixels (``gags.query.relevancy``: the minimum over the canonical phrases of ``softmax(10 [f.q, f.c])[0]``).

Selection rule: a Gaussian is selected when its relevancy is above ``SELECT_THRESHOLD`` = 0.5, i.e. when the query is
more similar to its feature than every canonical phrase ("object", "things", "stuff", "texture") is. This is the
boundary the relevancy itself defines; it needs no normalisation, so a query that matches nothing selects nothing
(a min-max normalised threshold, as the 2D masks use, would always select the least irrelevant Gaussians).
For a field with several levels (langsplat), the level whose highest Gaussian relevancy is the largest is used, as
LangSplat chooses among its three levels per image.

Outputs (``write_selection_plys``): a PLY of all Gaussians whose colour is the relevancy on the ``COLORMAP`` scale
(min-max normalised over the Gaussians, written into the SH DC term with the higher SH terms zeroed, so any 3DGS viewer
shows it), and a PLY of the selected Gaussians only, with their original colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gags.field import LanguageField
from gags.query.figures import colormap, normalized
from gags.query.render import DECODE_CHUNK, decoded_relevancy

SELECT_THRESHOLD = 0.5
"""Relevancy above which a Gaussian is selected: the query beats every canonical phrase (see the module docstring)."""
RELEVANCY_PLY = "relevancy.ply"
SELECTED_PLY = "selected.ply"


@dataclass(frozen=True)
class Selection:
    """The Gaussians a query selects.

    relevancy: [N] relevancy of every Gaussian at the chosen level; level: that level (0 for one-level fields);
    selected: bool [N]; threshold: the relevancy threshold used.
    """

    relevancy: Tensor
    level: int
    selected: Tensor
    threshold: float

    @property
    def count(self) -> int:
        return int(self.selected.sum())


def gaussian_relevancy(field: LanguageField, query: Tensor, canon: Tensor, chunk: int = DECODE_CHUNK) -> Tensor:
    """Relevancy of every Gaussian's decoded feature to one query.

    Args:
        query: [D] or [1, D] text embedding; canon: [C, D] canonical phrases.
    Returns:
        [L, N], L = ``field.levels``.
    """
    return decoded_relevancy(field, field.features, query.reshape(1, -1), canon, chunk)[0]


def select_gaussians(field: LanguageField, query: Tensor, canon: Tensor,
                     threshold: float = SELECT_THRESHOLD) -> Selection:
    """Score every Gaussian and select those with relevancy > ``threshold`` (level: the one with the highest
    maximum)."""
    rel = gaussian_relevancy(field, query, canon)  # [L, N]
    level = int(torch.argmax(rel.amax(dim=1))) if rel.shape[1] else 0
    chosen = rel[level]
    return Selection(relevancy=chosen, level=level, selected=chosen > threshold, threshold=threshold)


def relevancy_colors(rel: Tensor) -> Tensor:
    """[N] relevancy -> [N, 3] RGB in [0, 1] on the ``COLORMAP`` scale, min-max normalised over the N values."""
    return torch.from_numpy(colormap(normalized(rel.numpy()))).float() / 255.0


def write_selection_plys(folder: Path, splats: dict[str, Tensor], selection: Selection) -> dict[str, str | None]:
    """Write ``relevancy.ply`` (all Gaussians coloured by relevancy) and ``selected.ply`` (the selected ones).

    Args:
        splats: raw 3DGS parameters as ``gags.data.read_ply`` returns them (the field's Gaussians, same order).
    Returns:
        {"relevancy_ply", "selected_ply"} file names; ``selected_ply`` is None when no Gaussian is selected (nothing
        is written then, and an older selected.ply is removed).
    """
    from gags.data import write_ply
    from gags.splat.gaussians import rgb_to_sh

    folder = Path(folder)
    coloured = dict(splats)
    coloured["sh0"] = rgb_to_sh(relevancy_colors(selection.relevancy))[:, None, :]
    coloured["shN"] = torch.zeros_like(splats["shN"])
    write_ply(folder / RELEVANCY_PLY, coloured)
    if selection.count == 0:
        (folder / SELECTED_PLY).unlink(missing_ok=True)
        return {"relevancy_ply": RELEVANCY_PLY, "selected_ply": None}
    mask = selection.selected
    write_ply(folder / SELECTED_PLY, {k: v[mask] for k, v in splats.items()})
    return {"relevancy_ply": RELEVANCY_PLY, "selected_ply": SELECTED_PLY}
