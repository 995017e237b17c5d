"""The scene output folder (OUT), the interface between stages: its layout, its small records and the shared checks.

Every stage reads and writes one folder; this module is the only one that spells the names of its files::

    OUT/
      scene.json                     resolved input: source format, image list, train/test split, scale
      points3D.ply                   the scene's initial points, when it has some
      gaussians.ply                  RGB Gaussians, standard 3DGS PLY
      reconstruct/                   metrics.json (PSNR/SSIM on held-out views, curve), checkpoint.safetensors,
                                     renders/NAME.png
      language_features/             LangSplat-compatible NAME_f.npy / NAME_s.npy (gags.data.features)
      prompts/NAME.npy               the prompt points of the segment stage
      segment/                       config.json (models, settings, fingerprints), timings.json, depth/NAME.npy
      field/METHOD/                  field.safetensors, checkpoint.safetensors, curves.json, curves.png
      eval/METHOD/SPLIT/             metrics.json and the per-query figures
      query/SLUG/                    result.json and the maps of a `gags query`
      bench/                         benchmark records of this folder (query.json)
      report.html                    the self-contained report
      demo.json                      time per stage of `gags demo`
      scene/                         the procedural scene `gags demo` writes (its own format: gags.synth)
      sfm/                           the COLMAP model `gags reconstruct --images` makes (gags.data.sfm)

The formats belong to their modules (``gags.data.scene`` for scene.json, ``gags.data.features`` for the feature files,
``gags.field`` for fields); :class:`Workspace` gives their paths and the checks every stage shares: is this an output
folder, does a field fit the Gaussians, which encoder made the features and are its weights the same now.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gags.errors import GagsError
from gags.io import ensure_dir, read_json, write_json
from gags.methods import METHOD_NAMES

if TYPE_CHECKING:
    from gags.data.scene import Scene

SCENE_JSON = "scene.json"
POINTS_PLY = "points3D.ply"
GAUSSIANS_PLY = "gaussians.ply"
RECONSTRUCT_DIR = "reconstruct"
FEATURES_DIR = "language_features"
PROMPTS_DIR = "prompts"
SEGMENT_DIR = "segment"
DEPTH_DIR = "depth"
FIELD_DIR = "field"
EVAL_DIR = "eval"
QUERY_DIR = "query"
BENCH_DIR = "bench"
SYNTH_SCENE_DIR = "scene"
SFM_DIR = "sfm"
REPORT_HTML = "report.html"
DEMO_JSON = "demo.json"
METRICS_JSON = "metrics.json"
CHECKPOINT = "checkpoint.safetensors"
STAGE_CONFIG_JSON = "config.json"
TIMINGS_JSON = "timings.json"
FIELD_FILE = "field.safetensors"
CURVES_JSON = "curves.json"
CURVES_PNG = "curves.png"
RESULT_JSON = "result.json"
DEPTH_META_JSON = "meta.json"
REPLACED_PREFIX = ".replaced-"
"""``OUT/.replaced-STAGE/``: a stage's previous outputs while a run replaces them (``Workspace.replacing``)."""
LOCK_PREFIX = ".lock-"
"""``OUT/.lock-STAGE``: held by the process writing that stage (``Workspace.lock``)."""

DEFAULT_ENCODER = "tiny"
"""The encoder assumed when OUT records none (features made elsewhere, e.g. by LangSplat's preprocessing)."""

FINGERPRINT_BYTES = 1 << 22
"""A weights file is fingerprinted by its size and the SHA-256 of its first and last 4 MiB (cheap for a 2.5 GB SAM
checkpoint, and any retrained or replaced weights change it)."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")
"""Files of a model folder (open_clip ``local-dir``) that make the model; its model card and training record do not."""
IGNORED_IN_FOLDERS = ("training.json",)


def file_fingerprint(path: Path) -> str:
    """Size and SHA-256 of the first and last ``FINGERPRINT_BYTES`` of a file (a folder: of each of its model files)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = (sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                    and p.name not in IGNORED_IN_FOLDERS) if path.is_dir() else [path])
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}:".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(FINGERPRINT_BYTES))
            if size > 2 * FINGERPRINT_BYTES:
                fh.seek(size - FINGERPRINT_BYTES)
                digest.update(fh.read(FINGERPRINT_BYTES))
            elif size > FINGERPRINT_BYTES:
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def _remove(path: Path) -> None:
    """Delete a file, a link or a folder tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


SLUG_HASH_CHARS = 6
"""Hex characters of the text's hash that end every slug: texts that differ only in case, punctuation or non-Latin
letters get different names."""


def query_slug(text: str, max_len: int = 60) -> str:
    """A file-name-safe name of a text, unique to it: lower case, runs of other characters -> '-', then a short hash
    of the exact text (``"Red cup!"`` -> ``red-cup-`` + 6 hex characters; a text of no Latin letter or digit ->
    ``query-`` + the hash). The text itself is kept in the files written beside."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:SLUG_HASH_CHARS]
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return f"{s or QUERY_DIR}-{digest}"


@dataclass(frozen=True)
class Workspace:
    """One scene output folder. Paths are computed, never created: writers create what they write."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------------------------------------------------------
    # paths

    @property
    def scene_json(self) -> Path:
        return self.root / SCENE_JSON

    @property
    def points_ply(self) -> Path:
        return self.root / POINTS_PLY

    @property
    def gaussians_ply(self) -> Path:
        return self.root / GAUSSIANS_PLY

    @property
    def reconstruct_dir(self) -> Path:
        return self.root / RECONSTRUCT_DIR

    @property
    def reconstruct_metrics(self) -> Path:
        return self.reconstruct_dir / METRICS_JSON

    @property
    def reconstruct_checkpoint(self) -> Path:
        return self.reconstruct_dir / CHECKPOINT

    @property
    def reconstruct_renders(self) -> Path:
        return self.reconstruct_dir / "renders"

    @property
    def features_dir(self) -> Path:
        return self.root / FEATURES_DIR

    @property
    def prompts_dir(self) -> Path:
        return self.root / PROMPTS_DIR

    def prompt_file(self, stem: str) -> Path:
        """Prompt points of the image whose feature stem is ``stem`` (``gags.data.features.feature_stem``)."""
        return self.prompts_dir / f"{stem}.npy"

    @property
    def segment_dir(self) -> Path:
        return self.root / SEGMENT_DIR

    @property
    def segment_config(self) -> Path:
        """The segment stage's record: its settings and fingerprints, or where external features came from."""
        return self.segment_dir / STAGE_CONFIG_JSON

    @property
    def segment_timings(self) -> Path:
        """Written last by the segment stage: its presence means the stage finished."""
        return self.segment_dir / TIMINGS_JSON

    @property
    def depth_dir(self) -> Path:
        return self.segment_dir / DEPTH_DIR

    def depth_file(self, stem: str) -> Path:
        return self.depth_dir / f"{stem}.npy"

    @property
    def depth_meta(self) -> Path:
        return self.depth_dir / DEPTH_META_JSON

    @property
    def segment_outputs(self) -> tuple[Path, ...]:
        """What ``gags segment --overwrite`` replaces."""
        return self.features_dir, self.prompts_dir, self.segment_dir

    @property
    def fields_dir(self) -> Path:
        return self.root / FIELD_DIR

    def field_dir(self, method: str) -> Path:
        return self.fields_dir / method

    def field_file(self, method: str) -> Path:
        """Written last by ``gags distill --method METHOD``: its presence means the field is done."""
        return self.field_dir(method) / FIELD_FILE

    def field_checkpoint(self, method: str) -> Path:
        return self.field_dir(method) / CHECKPOINT

    def field_curves(self, method: str) -> Path:
        return self.field_dir(method) / CURVES_JSON

    def field_curves_png(self, method: str) -> Path:
        return self.field_dir(method) / CURVES_PNG

    @property
    def eval_root(self) -> Path:
        return self.root / EVAL_DIR

    def eval_dir(self, method: str, split: str) -> Path:
        return self.eval_root / method / split

    def eval_metrics(self, method: str, split: str) -> Path:
        return self.eval_dir(method, split) / METRICS_JSON

    def query_dir(self, text: str) -> Path:
        """The folder of the answers to ``text`` (named by :func:`query_slug`)."""
        return self.root / QUERY_DIR / query_slug(text)

    def query_result(self, text: str) -> Path:
        return self.query_dir(text) / RESULT_JSON

    @property
    def bench_dir(self) -> Path:
        return self.root / BENCH_DIR

    def bench_file(self, name: str) -> Path:
        """``OUT/bench/NAME.json``, the record of one benchmark run on this folder."""
        return self.bench_dir / f"{name}.json"

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def demo_json(self) -> Path:
        return self.root / DEMO_JSON

    @property
    def synth_scene(self) -> Path:
        """The procedural scene of ``gags demo`` (and of the ablation's runs), in ``gags synth``'s own layout."""
        return self.root / SYNTH_SCENE_DIR

    @property
    def sfm_dir(self) -> Path:
        """Structure-from-motion of bare photos (``gags reconstruct --images``), in COLMAP's layout."""
        return self.root / SFM_DIR

    # ------------------------------------------------------------------------------------------------------------------
    # what is there

    def field_methods(self) -> list[str]:
        """Methods with a field in ``OUT/field/``, in registry order (then any other folder name, sorted)."""
        found = ({p.parent.name for p in self.fields_dir.glob(f"*/{FIELD_FILE}")} if self.fields_dir.is_dir()
                 else set())
        return [m for m in METHOD_NAMES if m in found] + sorted(found - set(METHOD_NAMES))

    def eval_methods(self) -> list[str]:
        """Methods with at least one evaluated split, in registry order (then any other name, sorted)."""
        found = ({p.parent.parent.name for p in self.eval_root.glob(f"*/*/{METRICS_JSON}")} if self.eval_root.is_dir()
                 else set())
        return [m for m in METHOD_NAMES if m in found] + sorted(found - set(METHOD_NAMES))

    def curve_methods(self) -> list[str]:
        """Methods with training curves in ``OUT/field/METHOD/``, in registry order."""
        found = ({p.parent.name for p in self.fields_dir.glob(f"*/{CURVES_JSON}")} if self.fields_dir.is_dir()
                 else set())
        return [m for m in METHOD_NAMES if m in found] + sorted(found - set(METHOD_NAMES))

    def resolve_methods(self, method: str) -> list[str]:
        """The methods to use: ``method`` itself or, for ``"all"``, every method with a field; GagsError otherwise."""
        existing = self.field_methods()
        have = ", ".join(existing) if existing else "none"
        if method == "all":
            if not existing:
                raise GagsError(f"{self.fields_dir} holds no {FIELD_FILE}. Run `gags distill {self.root}` first.")
            return existing
        if method not in METHOD_NAMES and method not in existing:
            raise GagsError(f"unknown method {method!r}. Known methods: {', '.join(METHOD_NAMES)} (or 'all'); fields "
                            f"in {self.fields_dir}: {have}.")
        if method not in existing:
            raise GagsError(f"{self.field_file(method)} does not exist. Run `gags distill {self.root} --method "
                            f"{method}`, or pick a method with a field ({have}).")
        return [method]

    # ------------------------------------------------------------------------------------------------------------------
    # checks every stage shares

    def require_scene(self) -> Path:
        """``OUT/scene.json``, or a GagsError saying this is not a scene output folder and what makes one."""
        if not self.scene_json.is_file():
            raise GagsError(f"{self.scene_json} does not exist: {self.root} is not a scene output folder. Run `gags "
                            f"reconstruct SCENE --out {self.root}` (or `gags demo --out {self.root}`) first.")
        return self.scene_json

    def require_gaussians(self) -> Path:
        """``OUT/gaussians.ply``, or a GagsError naming the command that writes it."""
        if not self.gaussians_ply.is_file():
            raise GagsError(f"{self.gaussians_ply} does not exist. Run `gags reconstruct SCENE --out {self.root}` (or "
                            "put a 3DGS .ply there) first.")
        return self.gaussians_ply

    def read_gaussians(self) -> dict[str, Any]:
        """The raw 3DGS parameters of OUT's Gaussians (``gags.data.read_ply``); GagsError when there are none."""
        from gags.data.ply import read_ply

        splats = read_ply(self.require_gaussians())
        if len(splats["means"]) == 0:
            raise GagsError(f"{self.gaussians_ply} holds no Gaussians. Run `gags reconstruct SCENE --out {self.root}` "
                            "again (or put a non-empty 3DGS .ply there).")
        return splats

    def require_features(self) -> Path:
        """``OUT/language_features/``, or a GagsError naming the command that writes it."""
        if not self.features_dir.is_dir():
            raise GagsError(f"{self.features_dir} does not exist. Run `gags segment {self.root}` first (or copy "
                            f"LangSplat's {FEATURES_DIR} folder there).")
        return self.features_dir

    def load_scene(self) -> Scene:
        """The scene recorded in ``OUT/scene.json`` (GagsError when this is not a scene output folder)."""
        from gags.data.scene import read_scene_record

        return read_scene_record(self.require_scene())

    def save_scene(self, scene: Scene) -> Path:
        """Record ``scene`` in ``OUT/scene.json`` (and its points in ``OUT/points3D.ply``)."""
        from gags.data.scene import write_scene_record

        return write_scene_record(scene, self.scene_json, self.points_ply)

    def check_field(self, method: str, num_features: int, num_gaussians: int) -> None:
        """GagsError when the field of ``method`` holds another number of Gaussians than ``OUT/gaussians.ply``."""
        if num_features != num_gaussians:
            raise GagsError(f"the {method} field has {num_features} Gaussians but {self.gaussians_ply} has "
                            f"{num_gaussians}: it was distilled on other Gaussians. Re-run `gags distill {self.root} "
                            f"--method {method} --no-resume`.")

    # ------------------------------------------------------------------------------------------------------------------
    # what a stage was made from, and one writer per stage

    def gaussians_fingerprint(self) -> str:
        """Fingerprint of OUT's Gaussians (size and SHA-256 of the file's ends): other Gaussians of the same count
        differ."""
        return file_fingerprint(self.require_gaussians())

    def features_fingerprint(self) -> str:
        """Fingerprint of the language features: the segment stage's record (models, settings) and the name and size
        of every feature file. Re-segmenting with other settings or models changes it."""
        digest = hashlib.sha256()
        if self.segment_config.is_file():
            digest.update(self.segment_config.read_bytes())
        if self.features_dir.is_dir():
            for path in sorted(self.features_dir.glob("*.npy")):
                digest.update(f"{path.name}:{path.stat().st_size};".encode())
        return digest.hexdigest()[:16]

    def inputs(self) -> dict[str, str]:
        """The fingerprints of what a language field is made from: the Gaussians and the language features."""
        return {"gaussians": self.gaussians_fingerprint(), "features": self.features_fingerprint()}

    def check_field_inputs(self, method: str, recorded: dict[str, Any]) -> None:
        """GagsError when the field of ``method`` was made from other Gaussians or other features than OUT holds now
        (``recorded``: its config's ``inputs``; fields made before inputs were recorded are not checked)."""
        then = recorded.get("inputs")
        if not isinstance(then, dict):
            return
        now = self.inputs()
        changed = [k for k in ("gaussians", "features") if then.get(k) is not None and then.get(k) != now[k]]
        if changed:
            what = " and ".join({"gaussians": f"other Gaussians than {self.gaussians_ply}",
                                 "features": "other language features than OUT's"}[k] for k in changed)
            raise GagsError(f"the {method} field in {self.field_dir(method)} was made from {what} (they changed "
                            f"since). Re-run `gags distill {self.root} --method {method} --no-resume`.")

    @contextlib.contextmanager
    def lock(self, stage: str, command: str | None = None) -> Iterator[None]:
        """One writer per stage and folder: hold ``OUT/.lock-STAGE`` for the block; GagsError (naming ``command``,
        default ``gags STAGE``) when another process holds it. The lock is the kernel's (``flock``): a process that
        dies releases it, so no stale lock remains."""
        import fcntl

        ensure_dir(self.root)
        path = self.root / f"{LOCK_PREFIX}{stage}"
        try:
            fh = open(path, "a+")  # noqa: SIM115 (held for the block)
        except OSError as exc:
            raise GagsError(f"cannot write in {self.root} ({exc.strerror or exc}). Choose a writable output folder "
                            "or fix its permissions; nothing was changed.") from exc
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise GagsError(f"`{command or 'gags ' + stage}` is already writing into {self.root} ({holder}). Wait "
                                "for it to finish (or stop it); two runs must not write into one folder.") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield
        finally:
            fh.close()

    @contextlib.contextmanager
    def replacing(self, stage: str, paths: Sequence[Path]) -> Iterator[None]:
        """Replace a stage's outputs (``paths``, entries of OUT) by what the block writes, keeping the old ones until
        it succeeds: they are moved into ``OUT/.replaced-STAGE/`` first, put back if the block fails or is
        interrupted, and deleted when it succeeds. If a replacing run was killed (the folder is still there), it
        holds the last complete outputs: they stay, and the killed run's partial outputs are discarded."""
        backup = self.root / f"{REPLACED_PREFIX}{stage}"
        for path in paths:
            if Path(path).parent != self.root:
                raise ValueError(f"{path} is not an entry of {self.root}")
        if backup.exists():
            for path in paths:
                _remove(path)
        else:
            ensure_dir(backup)
            moved: list[Path] = []
            try:
                for path in paths:
                    if path.exists() or path.is_symlink():
                        os.replace(path, backup / path.name)
                        moved.append(path)
            except OSError as exc:
                for path in moved:
                    os.replace(backup / path.name, path)
                backup.rmdir()
                raise GagsError(f"cannot replace the {stage} outputs in {self.root} ({exc.strerror or exc}); nothing "
                                "was changed. Fix the folder's permissions.") from exc
        try:
            yield
        except BaseException:
            for path in paths:
                _remove(path)
            for item in backup.iterdir():
                os.replace(item, self.root / item.name)
            backup.rmdir()
            raise
        shutil.rmtree(backup)

    # ------------------------------------------------------------------------------------------------------------------
    # the segment stage's record

    def segment_record(self) -> dict[str, Any] | None:
        """``OUT/segment/config.json`` (None when the segment stage has not recorded anything)."""
        return read_json(self.segment_config) if self.segment_config.is_file() else None

    def write_segment_record(self, record: dict[str, Any]) -> None:
        write_json(self.segment_config, record)

    def segment_settings(self) -> dict[str, Any]:
        """The settings ``gags segment`` recorded; {} when there are none (e.g. features made by LangSplat's
        preprocessing) or the record is unreadable."""
        try:
            settings = (self.segment_record() or {}).get("settings")
        except (GagsError, AttributeError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def recorded_encoder(self) -> str:
        """The encoder spec ``gags segment`` recorded (what made the features), else ``DEFAULT_ENCODER``."""
        spec = self.segment_settings().get("encoder")
        return spec if isinstance(spec, str) and spec else DEFAULT_ENCODER

    def check_encoder_weights(self, encoder_spec: str) -> None:
        """GagsError when ``encoder_spec`` names the encoder `gags segment` used for OUT's features but its weights
        changed since (e.g. a package upgrade shipped new tiny CLIP weights): text and image embeddings would not
        match."""
        from gags.models.specs import parse_encoder_spec

        settings = self.segment_settings()
        then_spec, then_weights = settings.get("encoder"), settings.get("encoder_weights")
        if then_spec != encoder_spec or then_weights is None:
            return
        checkpoint = parse_encoder_spec(encoder_spec).checkpoint
        if checkpoint is not None and Path(checkpoint).exists() and file_fingerprint(checkpoint) != then_weights:
            raise GagsError(f"the weights of encoder {encoder_spec!r} ({checkpoint}) are not those that encoded the "
                            f"features in {self.root} (fingerprint {then_weights} in {self.segment_config}): text "
                            "queries would be embedded by another model. Pass --encoder with the original weights, or "
                            f"re-run `gags segment {self.root} --overwrite` and `gags distill`.")


__all__ = ["DEFAULT_ENCODER", "Workspace", "file_fingerprint", "query_slug"]
