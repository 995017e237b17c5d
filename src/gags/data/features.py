"""Per-image language features in LangSplat's format: ``NAME_f.npy`` and ``NAME_s.npy`` in a feature folder.

    NAME_f.npy   [M, D] float16 (or float32): one L2-normalised CLIP feature per mask of the image
    NAME_s.npy   [4, H, W] integers (LangSplat saves floats holding integers): per level (default, s, m, l) the row of
                 ``_f`` that covers each pixel, -1 where no mask does

NAME is the image's file name up to its first dot, as LangSplat names them, so folders made by LangSplat's
preprocessing are read as they are. The segment stage writes these files, distillation and the consistency metric read
them; all go through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gags.errors import GagsError
from gags.io import atomic_path
from gags.levels import SEGMENT_ROWS

INTEGER_TOLERANCE = 1e-3
"""How far a float ``_s`` value may be from an integer and still be read as that index (LangSplat saves float32)."""


def feature_stem(name: str) -> str:
    """The file stem of an image's features: its file name up to the first dot (LangSplat: ``name.split('.')[0]``)."""
    return Path(name).name.split(".")[0]


def feature_paths(folder: Path, name: str) -> tuple[Path, Path]:
    """(``NAME_f.npy``, ``NAME_s.npy``) of image ``name`` in a language_features folder."""
    stem = feature_stem(name)
    return Path(folder) / f"{stem}_f.npy", Path(folder) / f"{stem}_s.npy"


def check_unique_stems(names: Sequence[str], where: Path) -> None:
    """Raise GagsError when two image names map to the same feature files."""
    seen: dict[str, str] = {}
    for name in names:
        stem = feature_stem(name)
        if stem in seen:
            raise GagsError(f"images {seen[stem]!r} and {name!r} of the scene in {where} share the feature file name "
                            f"{stem}_f.npy (LangSplat names features by the image name up to its first dot). Rename "
                            "one of the images.")
        seen[stem] = name


def read_npy(path: Path, remedy: str = "Replace or delete the file.") -> np.ndarray:
    """``np.load`` without pickles; an unreadable file is a GagsError that names it and says ``remedy``."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise GagsError(f"cannot read {path}: {exc}. {remedy}") from exc


def check_features(feats: np.ndarray, seg: np.ndarray, f_path: Path, s_path: Path) -> np.ndarray:
    """Validate one image's ``_f`` [M, D] and ``_s`` [4, H, W]; return ``_s`` as int32.

    Raises GagsError naming the file when one has the wrong shape or dtype, holds non-finite features or non-integer
    indices, or an index outside [-1, M).
    """
    if feats.ndim != 2 or feats.dtype not in (np.float16, np.float32, np.float64) or feats.shape[1] < 1:
        raise GagsError(f"{f_path} holds {feats.dtype} {list(feats.shape)}; a _f file is [M, D] float16 (or float32).")
    if not np.isfinite(feats).all():
        raise GagsError(f"{f_path} contains NaN or infinite features; recompute this image's features.")
    if seg.ndim != 3 or seg.shape[0] != len(SEGMENT_ROWS):
        raise GagsError(f"{s_path} has shape {list(seg.shape)}; a _s file is [4, H, W] (levels "
                        f"{', '.join(SEGMENT_ROWS)}).")
    if np.issubdtype(seg.dtype, np.floating):
        rounded = np.round(seg)
        if not np.isfinite(seg).all() or np.abs(seg - rounded).max(initial=0.0) > INTEGER_TOLERANCE:
            raise GagsError(f"{s_path} holds non-integer indices; _s values are rows of _f or -1.")
        seg = rounded
    elif not np.issubdtype(seg.dtype, np.integer):
        raise GagsError(f"{s_path} has dtype {seg.dtype}; _s holds integer indices (or floats holding integers).")
    seg = seg.astype(np.int64)
    lo, hi = (int(seg.min()), int(seg.max())) if seg.size else (-1, -1)
    if lo < -1 or hi >= feats.shape[0]:
        raise GagsError(f"{s_path} holds indices in [{lo}, {hi}] but {f_path.name} has {feats.shape[0]} rows; "
                        "indices must lie in [-1, M). The two files do not belong together.")
    return seg.astype(np.int32)


def read_language_features(folder: Path, name: str, missing_hint: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The checked ``_f`` [M, D] and ``_s`` [4, H, W] int32 arrays of image ``name`` in ``folder``.

    missing_hint: what the user should do when a file is missing (appended to the error).
    """
    f_path, s_path = feature_paths(folder, name)
    for path in (f_path, s_path):
        if not path.is_file():
            raise GagsError(f"{path} is missing: no language features for image {name!r}. {missing_hint}".rstrip())
    feats = read_npy(f_path, "Recompute this image's features (`gags segment`) or replace the file.")
    seg = read_npy(s_path, "Recompute this image's features (`gags segment`) or replace the file.")
    return feats, check_features(feats, seg, f_path, s_path)


def write_language_features(folder: Path, name: str, feats: np.ndarray, seg: np.ndarray) -> None:
    """Write image ``name``'s ``_f`` [M, D] and ``_s`` [4, H, W] atomically, ``_s`` last: its presence marks it done."""
    f_path, s_path = feature_paths(folder, name)
    with atomic_path(f_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, feats)
    with atomic_path(s_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, seg)
