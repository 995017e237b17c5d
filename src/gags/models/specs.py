"""Model specs: the strings a user passes as ``--segmenter`` and ``--encoder``, parsed and checked.

Segmenters::

    hierarchy                                  the embedded superpixel hierarchy (no weights)
    tinysam                                    the embedded SAM-architecture segmenter (= sam:tiny:<shipped weights>)
    exact                                      a procedural scene's own entities (``gags.segment.exact``; no model)
    oracle                                     a perfect promptable segmenter on a procedural scene (the same module)
    sam:vit_h:/path/sam_vit_h_4b8939.pth        segment_anything, vit_b | vit_l | vit_h | tiny (gags train-segmenter)
    sam2:sam2.1_hiera_large:/path.pt            SAM 2 (package ``sam2``), a config shipped inside that package

Encoders::

    tiny                                        the embedded tiny CLIP (open_clip ``local-dir:`` format)
    openclip:ViT-B-16:/path/open_clip_pytorch_model.bin   any open_clip architecture + a local checkpoint file
    openclip:local-dir:/path/dir                an open_clip ``local-dir:`` folder (open_clip_config.json + weights)

Parsing checks the syntax, the architecture names that can be checked without importing a model library, and that
the files exist; everything a user can get wrong is a ``GagsError`` that lists what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gags.errors import GagsError

SEGMENTER_FORMS = (
    "hierarchy",
    "tinysam",
    "exact | oracle (scenes made by gags synth: their own entities)",
    "sam:vit_b|vit_l|vit_h|tiny:/path/to/sam_checkpoint.pth",
    "sam2:<config>:/path/to/sam2_checkpoint.pt",
)
ENCODER_FORMS = (
    "tiny",
    "openclip:<architecture>:/path/to/checkpoint (.bin/.pt/.pth/.safetensors)",
    "openclip:local-dir:/path/to/folder (open_clip_config.json + weights)",
)

SAM_ARCHS = ("vit_b", "vit_l", "vit_h", "tiny")
"""segment_anything's sam_model_registry, and ``tiny`` (``gags.models.tinysam``: SAM with a small image encoder)."""

# SAM 2 configs shipped inside the ``sam2`` package (sam2 1.1.0: sam2/configs/sam2/ and sam2/configs/sam2.1/); the
# long names are those of the released checkpoint files (sam2.1_hiera_large.pt), the short ones those of the configs.
_SAM2_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l", "t": "t", "s": "s", "b+": "b+", "l": "l"}
SAM2_CONFIGS: dict[str, str] = {
    f"{version}_hiera_{size}": f"configs/{version}/{version}_hiera_{short}.yaml"
    for version in ("sam2", "sam2.1")
    for size, short in _SAM2_SIZES.items()
}

# open_clip's local-dir loader (open_clip 3.x factory._find_checkpoint_in_dir) takes *.safetensors, *.bin or *.pth.
LOCAL_DIR_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")
TINY_CLIP_DIR = Path(__file__).resolve().parent / "weights" / "tinyclip"
TINY_SAM_DIR = Path(__file__).resolve().parent / "weights" / "tinysam"
TINY_SAM_FILE = "tinysam.safetensors"


@dataclass(frozen=True)
class SegmenterSpec:
    """A parsed ``--segmenter`` value. ``kind``: hierarchy | exact | oracle | sam | sam2; ``arch``: vit_h,
    sam2.1_hiera_large, ...; ``checkpoint``: the weights file (sam and sam2)."""

    kind: str
    arch: str | None = None
    checkpoint: Path | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed ``--encoder`` value: an open_clip architecture and a checkpoint file, or a ``local-dir:`` folder.

    ``arch`` is ``"local-dir"`` for a folder (then ``checkpoint`` is the folder); ``name`` is what the user wrote.
    """

    name: str
    arch: str
    checkpoint: Path


def _accepted(forms: tuple[str, ...]) -> str:
    return "Accepted forms: " + "; ".join(forms) + "."


def parse_segmenter_spec(spec: str) -> SegmenterSpec:
    """Parse and check a segmenter spec (see the module docstring). Raises GagsError."""
    spec = spec.strip()
    if spec in ("hierarchy", "exact", "oracle"):
        return SegmenterSpec(spec)
    if spec == "tinysam":
        weights = TINY_SAM_DIR / TINY_SAM_FILE
        if not weights.is_file():
            raise GagsError(f"the shipped tinysam weights {weights} are missing; reinstall gags, or train them with "
                            "gags train-segmenter and pass --segmenter sam:tiny:/path/tinysam.safetensors.")
        return SegmenterSpec("sam", "tiny", weights)
    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[0] not in ("sam", "sam2") or not parts[2]:
        raise GagsError(f"unknown segmenter spec {spec!r}. {_accepted(SEGMENTER_FORMS)}")
    kind, arch, path_text = parts
    if kind == "sam" and arch not in SAM_ARCHS:
        raise GagsError(
            f"unknown SAM architecture {arch!r} in {spec!r}. Accepted: {', '.join(SAM_ARCHS)} "
            f"(segment_anything's sam_model_registry, and tiny). {_accepted(SEGMENTER_FORMS)}"
        )
    if kind == "sam2" and arch not in SAM2_CONFIGS:
        raise GagsError(
            f"unknown SAM 2 config {arch!r} in {spec!r}. Accepted: {', '.join(sorted(SAM2_CONFIGS))}. "
            f"{_accepted(SEGMENTER_FORMS)}"
        )
    checkpoint = Path(path_text).expanduser()
    if not checkpoint.is_file():
        raise GagsError(
            f"segmenter checkpoint {checkpoint} does not exist (from {spec!r}). Download the {kind} {arch} checkpoint "
            "and pass its path, or use an embedded segmenter: --segmenter tinysam or hierarchy."
        )
    return SegmenterSpec(kind, arch, checkpoint)


def parse_encoder_spec(spec: str) -> EncoderSpec:
    """Parse and check an encoder spec (see the module docstring). Raises GagsError.

    The open_clip architecture name is checked when the model is built (``load_encoder``), because listing
    open_clip's architectures means importing it.
    """
    spec = spec.strip()
    if spec == "tiny":
        return EncoderSpec("tiny", "local-dir", _check_local_dir(TINY_CLIP_DIR, spec))
    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[0] != "openclip" or not parts[1] or not parts[2]:
        raise GagsError(f"unknown encoder spec {spec!r}. {_accepted(ENCODER_FORMS)}")
    _, arch, path_text = parts
    path = Path(path_text).expanduser()
    if arch == "local-dir":
        return EncoderSpec(spec, arch, _check_local_dir(path, spec))
    if path.is_dir():
        raise GagsError(
            f"{path} is a folder, but {spec!r} names the architecture {arch!r} and expects a checkpoint file. "
            f"For an open_clip folder write openclip:local-dir:{path}."
        )
    if not path.is_file():
        raise GagsError(
            f"encoder checkpoint {path} does not exist (from {spec!r}). Pass the path of a local open_clip "
            "checkpoint file (e.g. open_clip_pytorch_model.bin), or use the embedded encoder: --encoder tiny."
        )
    return EncoderSpec(spec, arch, path)


def _check_local_dir(path: Path, spec: str) -> Path:
    if not path.is_dir():
        raise GagsError(
            f"encoder folder {path} does not exist (from {spec!r}). An open_clip local-dir folder holds "
            "open_clip_config.json and one weights file (*.safetensors, *.bin or *.pth)."
        )
    if not (path / "open_clip_config.json").is_file():
        raise GagsError(
            f"{path} has no open_clip_config.json (from {spec!r}); it is not an open_clip local-dir folder. "
            "Write the model's config there as {\"model_cfg\": {...}, \"preprocess_cfg\": {...}}."
        )
    if not any(p.suffix in LOCAL_DIR_WEIGHT_SUFFIXES for p in path.iterdir()):
        raise GagsError(
            f"{path} has no weights file (from {spec!r}). Put the model's weights there as *.safetensors "
            "(preferred), *.bin or *.pth."
        )
    return path
