"""Image-text encoders: L2-normalised CLIP embeddings of image crops and of text.

One protocol, one implementation: ``OpenClipEncoder`` builds any open_clip architecture from a local checkpoint
file, or from an open_clip ``local-dir:`` folder (``open_clip_config.json`` + weights). The embedded tiny CLIP is such
a folder inside this package, so it is loaded by exactly the code that loads a real CLIP.

Build one from a spec string with ``gags.models.load_encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from gags.errors import GagsError
from gags.models.specs import TINY_CLIP_DIR, parse_encoder_spec

DEFAULT_BATCH_SIZE = 64
"""Crops or texts per forward pass."""


@runtime_checkable
class Encoder(Protocol):
    """Embeds image crops and texts into one space; every output row has unit L2 norm."""

    input_size: int
    """Side of the square image the model sees (crops are resized to it)."""
    dim: int
    """Embedding dimension D."""

    def encode_images(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """crops: [B, H, W, 3] uint8 RGB -> [B, D] float32, L2-normalised (CPU)."""

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """texts: T strings -> [T, D] float32, L2-normalised (CPU)."""


def load_encoder(spec: str = "tiny", device: str | torch.device | None = None) -> Encoder:
    """Build an encoder from a spec: ``tiny`` | ``openclip:ViT-B-16:/path/file`` | ``openclip:local-dir:/path/dir``.

    device: default CUDA when available (fp16 there), else CPU (fp32).
    Raises GagsError for a malformed spec, an unknown architecture or a missing/unreadable checkpoint.
    """
    parsed = parse_encoder_spec(spec)
    return OpenClipEncoder(parsed.arch, parsed.checkpoint, device=device)


def tiny_encoder(device: str | torch.device | None = None) -> OpenClipEncoder:
    """The embedded tiny CLIP (same as ``load_encoder("tiny")``)."""
    return OpenClipEncoder("local-dir", TINY_CLIP_DIR, device=device)


class OpenClipEncoder:
    """Any open_clip model, from a local checkpoint file or a ``local-dir:`` folder; batched, fp16 on CUDA.

    Images are preprocessed as the model's preprocess config says (size, resize mode, interpolation, mean, std),
    batched in PyTorch; text goes through the model's own open_clip tokenizer.
    """

    def __init__(
        self,
        arch: str,
        checkpoint: Path | None = None,
        device: str | torch.device | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """arch: an open_clip architecture name (``ViT-B-16``) or ``"local-dir"`` (then checkpoint is the folder).

        checkpoint: None with an architecture name builds randomly initialised weights (for tests).
        """
        import open_clip
        from open_clip.model import get_model_preprocess_cfg

        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.batch_size = int(batch_size)
        precision = "fp16" if self.device.type == "cuda" else "fp32"
        if arch == "local-dir":
            if checkpoint is None:
                raise GagsError("a local-dir encoder needs its folder.")
            model_name, pretrained = f"local-dir:{checkpoint}", None
            source: Path | None = Path(checkpoint)
        else:
            available = open_clip.list_models()
            if arch not in available:
                raise GagsError(
                    f"unknown open_clip architecture {arch!r}. Accepted: {', '.join(available)}; or an open_clip "
                    "folder as openclip:local-dir:/path/dir."
                )
            model_name, pretrained, source = arch, (str(checkpoint) if checkpoint is not None else None), checkpoint
        try:
            model = open_clip.create_model(
                model_name, pretrained=pretrained, precision=precision, device=self.device,
                weights_only=True, pretrained_text=False, pretrained_image=False,
            )
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:  # noqa: BLE001 - open_clip signals a wrong file by many exception types
            raise GagsError(
                f"cannot build open_clip model {arch!r} from {source}: {type(exc).__name__}: {str(exc)[:400]}. "
                "Check that the checkpoint belongs to this architecture and is a state dict readable with "
                "torch.load(weights_only=True) or safetensors."
            ) from exc
        model.eval()
        self.model = model
        self.name = model_name
        cfg = get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.image_hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.input_size = max(self.image_hw)
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32)
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32)
        self.interpolation = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.fill = float(cfg.get("fill_color", 0)) / 255.0
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.dim = int(self.encode_text([""]).shape[1])

    # ------------------------------------------------------------------------------------------------------------

    def preprocess(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """crops: [B, H, W, 3] uint8 -> [B, 3, h, w] float, resized and normalised as the model's config says."""
        x = torch.as_tensor(crops)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise GagsError(f"encode_images expects uint8 crops [B, H, W, 3]; got {x.dtype} {list(x.shape)}.")
        x = x.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        height, width = x.shape[-2:]
        th, tw = self.image_hw
        if (height, width) != (th, tw):
            if self.resize_mode == "squash":
                x = self._resize(x, th, tw)
            elif self.resize_mode == "longest":  # fit inside, pad the rest with the fill colour (centred)
                scale = min(th / height, tw / width)
                nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
                x = self._resize(x, nh, nw)
                top, left = (th - nh) // 2, (tw - nw) // 2
                x = F.pad(x, (left, tw - nw - left, top, th - nh - top), value=self.fill)
            else:  # "shortest": cover, then centre crop (open_clip's default)
                scale = max(th / height, tw / width)
                nh, nw = max(th, round(height * scale)), max(tw, round(width * scale))
                x = self._resize(x, nh, nw)
                top, left = (nh - th) // 2, (nw - tw) // 2
                x = x[:, :, top : top + th, left : left + tw]
        x = (x - self.mean.to(x.device)[:, None, None]) / self.std.to(x.device)[:, None, None]
        return x.to(self.dtype)

    def _resize(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if x.shape[-2:] == (height, width):
            return x
        x = F.interpolate(x, size=(height, width), mode=self.interpolation, align_corners=False, antialias=True)
        return x.clamp_(0.0, 1.0)  # bicubic overshoots; images are clamped to [0, 1] as 8-bit images are

    @torch.inference_mode()
    def encode_images(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """crops: [B, H, W, 3] uint8 RGB -> [B, D] float32, L2-normalised (CPU)."""
        crops = torch.as_tensor(crops)
        if len(crops) == 0:
            return torch.zeros((0, getattr(self, "dim", 0)), dtype=torch.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = self.preprocess(crops[start : start + self.batch_size])
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """texts: T strings -> [T, D] float32, L2-normalised (CPU)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return torch.zeros((0, getattr(self, "dim", 0)), dtype=torch.float32)
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out)
