"""Promptable segmenters and image-text encoders, from local checkpoints or embedded in the package.

- ``load_segmenter(spec)``: ``tinysam`` | ``hierarchy`` (embedded) | ``sam:vit_h:/path.pth`` |
  ``sam2:sam2.1_hiera_large:/path.pt``
- ``load_encoder(spec)``: ``tiny`` (embedded) | ``openclip:ViT-B-16:/path/file`` | ``openclip:local-dir:/path/dir``
- ``crop_masks(rgb, masks, size)``: the crops an encoder sees (background black, box crop, square pad, resize)
"""

from gags.models.crops import crop_masks
from gags.models.encoders import Encoder, OpenClipEncoder, load_encoder
from gags.models.hierarchy import HierarchySegmenter
from gags.models.segmenters import (
    MaskPrediction,
    Sam2Segmenter,
    SamSegmenter,
    Segmenter,
    load_segmenter,
)
from gags.models.specs import parse_encoder_spec, parse_segmenter_spec

__all__ = [
    "Encoder",
    "HierarchySegmenter",
    "MaskPrediction",
    "OpenClipEncoder",
    "Sam2Segmenter",
    "SamSegmenter",
    "Segmenter",
    "crop_masks",
    "load_encoder",
    "load_segmenter",
    "parse_encoder_spec",
    "parse_segmenter_spec",
]
