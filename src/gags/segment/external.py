"""Language features made elsewhere (LangSplat's preprocessing): validated and used instead of segmenting.

``gags segment OUT`` takes this path when OUT's feature folder (``Workspace.features_dir``) already holds ``_f``/``_s``
files that it did not write, or when ``--features DIR`` names such a folder (its files are copied into OUT).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gags.config import SegmentConfig
from gags.data.features import check_features, feature_paths, read_npy
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir
from gags.workspace import Workspace

RECORD_VERSION = 1
"""Version of the segment stage's record (``Workspace.segment_config``)."""


def validate_language_features(folder: Path, names: Sequence[str], sizes: Sequence[tuple[int, int]],
                               required: Sequence[str]) -> dict[str, Any]:
    """Check LangSplat ``_f``/``_s`` files of images ``names``; raise GagsError naming the first bad file.

    sizes: the (width, height) of every image (``_s`` must have its aspect ratio, within a pixel of rounding);
    required: names whose files must exist (others are checked when present).
    ``_f``: [M, D] float16/float32, finite, D the same for every image. ``_s``: [4, H, W] integers (or floats holding
    integers, as LangSplat saves them), every value in [-1, M).
    Returns {"images": checked count, "dim": D, "missing": names without files}.
    """
    folder = Path(folder)
    dim = None
    checked, missing = 0, []
    must = set(required)
    for name, (width, height) in zip(names, sizes, strict=True):
        f_path, s_path = feature_paths(folder, name)
        if not f_path.is_file() or not s_path.is_file():
            if name in must:
                absent = f_path if not f_path.is_file() else s_path
                raise GagsError(f"{absent} is missing: {folder} has no features of training image {name!r}. Re-run "
                                "LangSplat's preprocessing for all images, or run `gags segment` without these files.")
            missing.append(name)
            continue
        feats, seg = read_npy(f_path), read_npy(s_path)
        if dim is not None and feats.ndim == 2 and feats.shape[1] != dim:
            raise GagsError(f"{f_path} has features of dimension {feats.shape[1]}, other images {dim}; every image "
                            "must be encoded by the same CLIP model.")
        check_features(feats, seg, f_path, s_path)
        dim = feats.shape[1]
        if abs(seg.shape[2] - seg.shape[1] * width / height) > 1.0:
            raise GagsError(f"{s_path} is {seg.shape[2]}x{seg.shape[1]} (W x H) but image {name!r} is "
                            f"{width}x{height}; the segment maps must have the image's aspect ratio.")
        checked += 1
    return {"images": checked, "dim": dim, "missing": missing}


def has_feature_files(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.glob("*_f.npy")) or any(folder.glob("*_s.npy")))


def import_features(config: SegmentConfig, scene: Any) -> dict[str, Any]:
    """Validate an existing LangSplat folder (``--features`` or OUT's own) and record it."""
    ws = Workspace(Path(config.out))
    features_dir = ws.features_dir
    names = scene.names
    sizes = [(c.width, c.height) for c in scene.cameras]
    required = [names[i] for i in scene.train_ids] or names
    source = Path(config.features) if config.features is not None else features_dir
    if not source.is_dir():
        raise GagsError(f"--features {source} is not a folder; pass the folder of LangSplat's _f.npy / _s.npy files.")
    report = validate_language_features(source, names, sizes, required)
    if config.features is not None and source.resolve() != features_dir.resolve():
        ensure_dir(features_dir)
        for name in names:
            for path in feature_paths(source, name):
                if path.is_file():
                    with atomic_path(features_dir / path.name) as tmp:
                        shutil.copyfile(path, tmp)
    ws.write_segment_record({
        "version": RECORD_VERSION, "source": "external", "from": str(source.resolve()), "dim": report["dim"],
        "images": report["images"], "missing": report["missing"]})
    print(f"gags segment: using existing LangSplat features from {source}: {report['images']} images, "
          f"{report['dim']}-d" + (f"; {len(report['missing'])} held-out image(s) without features" if report["missing"]
                                  else ""))
    return {"source": "external", **report}


__all__ = ["RECORD_VERSION", "has_feature_files", "import_features", "validate_language_features"]
