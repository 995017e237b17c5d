"""The three granularity levels, defined once: sub-part, part and whole.

A promptable segmenter answers a point with three masks, smallest first (SAM's multimask output); LangSplat keeps them
as the levels s, m, l of its ``_s`` maps, after a ``default`` row that holds all three together. Every module that
names a level (segmentation, the feature files, distillation, the procedural world's vocabulary, figures, tables) takes
its spelling from here.

    >>> [(level.code, level.name, level.row) for level in LEVELS]
    [('s', 'subpart', 1), ('m', 'part', 2), ('l', 'whole', 3)]
"""

from __future__ import annotations

from dataclasses import dataclass

from gags.errors import GagsError


@dataclass(frozen=True)
class Level:
    """One granularity.

    index: 0, 1, 2 (the segmenter's output order, and the channel of a granularity map ``[3, H, W]``);
    code: LangSplat's letter (``s``, ``m``, ``l``; ``level-s`` names the baseline trained on it);
    row: the row of a LangSplat ``_s`` map (1, 2, 3; row 0 is the ``default`` row);
    name: the procedural world's spelling (``subpart``, ``part``, ``whole``: entity levels and query granularities);
    display: how figures and tables write it (``sub-part``, ``part``, ``whole``).
    """

    index: int
    code: str
    row: int
    name: str
    display: str


LEVELS: tuple[Level, ...] = (
    Level(0, "s", 1, "subpart", "sub-part"),
    Level(1, "m", 2, "part", "part"),
    Level(2, "l", 3, "whole", "whole"),
)
"""Sub-part, part, whole: finest first, as SAM orders its three masks."""
NUM_LEVELS = len(LEVELS)
DEFAULT_ROW = 0
"""Row 0 of a LangSplat ``_s`` map: SAM's default level, all granularities together (not used by distillation)."""
SEGMENT_ROWS: tuple[str, ...] = ("default", *(level.code for level in LEVELS))
"""The rows of a LangSplat ``_s`` map, in order: default, s, m, l."""
CODES: tuple[str, ...] = tuple(level.code for level in LEVELS)
"""``("s", "m", "l")``."""
ROWS: tuple[int, ...] = tuple(level.row for level in LEVELS)
"""``(1, 2, 3)``: the ``_s`` rows of sub-part, part, whole."""
NAMES: tuple[str, ...] = tuple(level.name for level in LEVELS)
"""``("subpart", "part", "whole")``."""
DISPLAY: tuple[str, ...] = tuple(level.display for level in LEVELS)
"""``("sub-part", "part", "whole")``."""


def level(key: int | str) -> Level:
    """The level named by its index, code, name or display spelling; GagsError for anything else."""
    for lv in LEVELS:
        if key in (lv.index, lv.code, lv.name, lv.display):
            return lv
    raise GagsError(f"unknown granularity level {key!r}; use one of {', '.join(CODES)}, {', '.join(NAMES)} or 0, 1, 2.")


__all__ = ["CODES", "DEFAULT_ROW", "DISPLAY", "LEVELS", "NAMES", "NUM_LEVELS", "ROWS", "SEGMENT_ROWS", "Level", "level"]
