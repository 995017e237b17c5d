"""The language field: per-Gaussian features and the decoders that turn them into CLIP features.

Written by ``gags distill``, read by query, viewer and report. One field is one safetensors file: tensors (features and
every decoder's state) plus JSON metadata (method, decoder architectures, the resolved distillation config).

Decoders (architectures of the official releases):

- :class:`FeatureDecoder` (GAGS ``models/networks.py``, ``CNN_decoder``): 1x1 convolutions 16->256, seven 256->256,
  256->512, ReLU after every layer but the last, two residual adds, output L2-normalised over channels.
- :class:`GranularityDecoder` (GAGS ``CNN_scale_decoder``): 1x1 convolutions 16->64->128->64->32->16->3, ReLU between,
  softmax over the channels: the weights of the sub-part, part and whole levels.
- :class:`LangSplatAutoencoder` (LangSplat ``autoencoder/model.py``): 512->256->128->64->32->3 with BatchNorm+ReLU
  between the linear layers, L2-normalised code; 3->16->32->64->128->256->256->512 with ReLU between, L2-normalised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gags.errors import GagsError
from gags.io import atomic_path, read_safetensors
from gags.levels import NUM_LEVELS

CLIP_DIM = 512
"""CLIP feature size (OpenCLIP ViT-B-16, as GAGS and LangSplat use)."""
FEATURE_DIM = 16
"""Per-Gaussian feature size of GAGS: ``512 / 32`` (GAGS ``train.py``: ``feature_in_dim = feature_out_dim / 32``)."""
"""Granularity levels: sub-part (s), part (m), whole (l)."""

FIELD_FORMAT = "gags.language_field"
FIELD_VERSION = 1

FEATURE_HIDDEN_DIM = 256
"""Width of the feature decoder (GAGS ``CNN_decoder``: nine layers, 256 wide)."""
GRANULARITY_HIDDEN_DIMS = (64, 128, 64, 32, 16)
"""Hidden widths of the granularity decoder (GAGS ``CNN_scale_decoder``)."""
AUTOENCODER_ENCODER_DIMS = (256, 128, 64, 32, 3)
"""LangSplat ``autoencoder/train.py`` default ``--encoder_dims``."""
AUTOENCODER_DECODER_DIMS = (16, 32, 64, 128, 256, 256, 512)
"""LangSplat ``autoencoder/train.py`` default ``--decoder_dims``."""


def _pointwise(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a 1x1 convolution to channel-first maps ``[B, C, H, W]`` or to vectors ``[N, C]``."""
    conv = cast(nn.Conv2d, layer)
    if x.dim() == 4:
        return conv(x)
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def _check_input(x: Tensor, in_dim: int, name: str) -> int:
    """Return the channel dimension of ``x`` (``[B, C, H, W]`` or ``[N, C]``: 1) after checking its size."""
    if x.dim() not in (2, 4) or x.shape[1] != in_dim:
        raise ValueError(f"{name} expects [B, {in_dim}, H, W] or [N, {in_dim}], got {tuple(x.shape)}")
    return 1


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles), as PyTorch's CPU probes report it
    (False when this PyTorch has no such probe)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def decoder_precision(precision: str | None, device: torch.device) -> torch.autocast:
    """The context decoders train in: ``torch.autocast`` to bfloat16 for ``"bfloat16"`` (their matrix products in
    bfloat16; weights, gradients and the saved field stay float32), disabled for ``"float32"`` (and None)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


class FeatureDecoder(nn.Module):
    """16-d rendered feature -> L2-normalised 512-d CLIP feature, pointwise (GAGS ``CNN_decoder``).

    Nine 1x1 convolutions ``L0..L8`` (in->256, seven 256->256, 256->out), ReLU after ``L0..L7``, and two residual adds,
    exactly where the official release puts them::

        x1 = relu(L0(x))
        x3 = relu(L3(x1 + relu(L2(relu(L1(x1))))))
        x5 = x3 + relu(L5(relu(L4(x3))))
        out = normalize(L8(relu(L7(relu(L6(x5))))))
    """

    def __init__(self, in_dim: int = FEATURE_DIM, hidden_dim: int = FEATURE_HIDDEN_DIM, out_dim: int = CLIP_DIM):
        super().__init__()
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        dims = [in_dim] + [hidden_dim] * 8 + [out_dim]
        self.layers = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], kernel_size=1) for i in range(9))

    def spec(self) -> dict[str, int]:
        return {"in_dim": self.in_dim, "hidden_dim": self.hidden_dim, "out_dim": self.out_dim}

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, in, H, W] or [N, in] -> [B, out, H, W] or [N, out], unit norm over the channels."""
        dim = _check_input(x, self.in_dim, "FeatureDecoder")

        def conv_relu(i: int, t: Tensor) -> Tensor:
            return F.relu(_pointwise(self.layers[i], t))

        x1 = conv_relu(0, x)
        x3 = conv_relu(3, x1 + conv_relu(2, conv_relu(1, x1)))
        x5 = x3 + conv_relu(5, conv_relu(4, x3))
        out = _pointwise(self.layers[8], conv_relu(7, conv_relu(6, x5)))
        return F.normalize(out, dim=dim)


class GranularityDecoder(nn.Module):
    """16-d rendered feature -> softmax weights of the 3 granularity levels, pointwise (GAGS ``CNN_scale_decoder``)."""

    def __init__(
        self, in_dim: int = FEATURE_DIM, hidden_dims: tuple[int, ...] = GRANULARITY_HIDDEN_DIMS,
        out_dim: int = NUM_LEVELS,
    ):
        super().__init__()
        self.in_dim, self.hidden_dims, self.out_dim = in_dim, tuple(hidden_dims), out_dim
        dims = [in_dim, *hidden_dims, out_dim]
        self.layers = nn.ModuleList(nn.Conv2d(dims[i], dims[i + 1], kernel_size=1) for i in range(len(dims) - 1))

    def spec(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "hidden_dims": list(self.hidden_dims), "out_dim": self.out_dim}

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, in, H, W] or [N, in] -> [B, 3, H, W] or [N, 3], non-negative, summing to 1 over the channels."""
        dim = _check_input(x, self.in_dim, "GranularityDecoder")
        for i, layer in enumerate(self.layers):
            x = _pointwise(layer, x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return torch.softmax(x, dim=dim)


class LangSplatAutoencoder(nn.Module):
    """LangSplat's scene-specific autoencoder: 512-d CLIP feature <-> unit 3-d code (LangSplat
    ``autoencoder/model.py``).

    Encoder: Linear 512->256, then (BatchNorm1d, ReLU, Linear) for 256->128->64->32->3; the code is L2-normalised.
    Decoder: Linear 3->16, then (ReLU, Linear) for 16->32->64->128->256->256->512; the output is L2-normalised.
    """

    def __init__(
        self,
        in_dim: int = CLIP_DIM,
        encoder_dims: tuple[int, ...] = AUTOENCODER_ENCODER_DIMS,
        decoder_dims: tuple[int, ...] | None = None,
    ):
        """decoder_dims: default LangSplat's, with the last layer of size ``in_dim`` (512 for CLIP ViT-B-16)."""
        super().__init__()
        if decoder_dims is None:
            decoder_dims = (*AUTOENCODER_DECODER_DIMS[:-1], in_dim)
        self.in_dim, self.encoder_dims, self.decoder_dims = in_dim, tuple(encoder_dims), tuple(decoder_dims)
        enc: list[nn.Module] = []
        prev = in_dim
        for i, d in enumerate(encoder_dims):
            if i > 0:
                enc += [nn.BatchNorm1d(prev), nn.ReLU()]
            enc.append(nn.Linear(prev, d))
            prev = d
        dec: list[nn.Module] = []
        for i, d in enumerate(decoder_dims):
            if i > 0:
                dec.append(nn.ReLU())
            dec.append(nn.Linear(prev, d))
            prev = d
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    @property
    def code_dim(self) -> int:
        return self.encoder_dims[-1]

    def spec(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "encoder_dims": list(self.encoder_dims), "decoder_dims": list(self.decoder_dims)}

    def encode(self, x: Tensor) -> Tensor:
        """x: [N, 512] -> [N, 3], unit norm."""
        return F.normalize(self.encoder(x), dim=-1)

    def decode(self, z: Tensor) -> Tensor:
        """z: [..., 3] -> [..., 512], unit norm (the decoder has no BatchNorm, so any leading shape works)."""
        return F.normalize(self.decoder(z), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, 512] -> reconstruction [N, 512]."""
        return self.decode(self.encode(x))


class DirectFeatures(nn.Module):
    """The per-Gaussian features are the CLIP features themselves (training-free lifting): [N, L x D] read as L
    levels of D-d features, each L2-normalised. No parameters."""

    def __init__(self, levels: int, dim: int):
        super().__init__()
        if levels < 1 or dim < 1:
            raise ValueError(f"levels and dim must be positive, got {levels}, {dim}")
        self.levels, self.dim = int(levels), int(dim)

    def spec(self) -> dict[str, int]:
        return {"levels": self.levels, "dim": self.dim}

    def forward(self, f: Tensor) -> Tensor:
        """f: [N, L x D] -> [N, L, D], unit norm (a zero feature stays zero)."""
        return F.normalize(f.float().reshape(f.shape[0], self.levels, self.dim), dim=-1)


SPARSE_EPS = 1e-10
"""Guard of the renormalisation in :func:`top_k_soft_codes` (LangSplatV2 utils/vq_utils.py)."""


def top_k_soft_codes(logits: Tensor, k: int) -> Tensor:
    """LangSplatV2's sparse coefficients: the softmax of ``logits`` [N, K] with all but its ``k`` largest entries set
    to zero, renormalised to sum to 1 -> [N, K]. Gradients flow through the kept entries.

    >>> top_k_soft_codes(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), k=2)
    tensor([[0.7311, 0.2689, 0.0000, 0.0000]])
    """
    probs = logits.softmax(dim=-1)
    kept = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, probs.topk(min(k, probs.shape[-1]), dim=-1).indices,
                                                              True)
    sparse = torch.where(kept, probs, torch.zeros_like(probs))
    return sparse / (sparse.sum(-1, keepdim=True) + SPARSE_EPS)


class SparseCodebook(nn.Module):
    """LangSplatV2's reader: per level a codebook of K learned D-d features; a per-Gaussian (or rendered) feature is
    L x K coefficients, and a level's CLIP feature is its coefficients times the level's codebook. Rendering and this
    product commute (both are linear), so a K-channel map is rendered and decoded instead of a D-channel one."""

    def __init__(self, levels: int, size: int, dim: int, top_k: int):
        super().__init__()
        if min(levels, size, dim, top_k) < 1:
            raise ValueError(f"levels, size, dim and top_k must be positive, got {levels}, {size}, {dim}, {top_k}")
        self.levels, self.size, self.dim, self.top_k = int(levels), int(size), int(dim), int(top_k)
        self.codebooks = nn.Parameter(torch.zeros(self.levels, self.size, self.dim))

    def spec(self) -> dict[str, int]:
        return {"levels": self.levels, "size": self.size, "dim": self.dim, "top_k": self.top_k}

    def codes(self, logits: Tensor) -> Tensor:
        """Per-Gaussian logits [N, L x K] -> sparse coefficients [N, L x K] (:func:`top_k_soft_codes` per level)."""
        n = logits.shape[0]
        return top_k_soft_codes(logits.reshape(n, self.levels, self.size), self.top_k).reshape(n, -1)

    def decode_level(self, coefficients: Tensor, level: int) -> Tensor:
        """coefficients [P, K] of one level -> [P, D] (not normalised: the training loss is a cosine)."""
        return coefficients @ self.codebooks[level]

    def forward(self, f: Tensor) -> Tensor:
        """f: [N, L x K] coefficients -> [N, L, D], unit norm (a zero feature stays zero)."""
        c = f.float().reshape(f.shape[0], self.levels, self.size)
        return F.normalize(torch.einsum("nlk,lkd->nld", c, self.codebooks), dim=-1)


_DECODERS: dict[str, type[nn.Module]] = {
    "feature_decoder": FeatureDecoder,
    "granularity_decoder": GranularityDecoder,
    "autoencoder": LangSplatAutoencoder,
    "direct": DirectFeatures,
    "sparse": SparseCodebook,
}


@dataclass
class LanguageField:
    """A distilled language field: one feature per Gaussian and the decoders that read it.

    features: [N, F] per-Gaussian features (F = 16 for gags/avg/level-*; 3 per level x 3 levels for langsplat; the CLIP
    features themselves, L x D, for the lifted fields; L x K sparse coefficients for langsplat-v2).
    Exactly one of ``feature_decoder`` (F-d feature -> CLIP), ``autoencoder`` (each 3-d slice -> CLIP), ``direct``
    (each D-d slice is a CLIP feature) or ``sparse`` (each K-d slice times its level's codebook) is set; with the
    autoencoder, ``direct`` or ``sparse`` the field has several levels, decoded separately.
    ``granularity_decoder`` is set for gags.
    config: the resolved configuration that made the field (JSON-serialisable; Paths are written as strings).
    """

    method: str
    features: Tensor
    feature_decoder: FeatureDecoder | None = None
    granularity_decoder: GranularityDecoder | None = None
    autoencoder: LangSplatAutoencoder | None = None
    direct: DirectFeatures | None = None
    sparse: SparseCodebook | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.dim() != 2:
            raise ValueError(f"features must be [N, F], got {tuple(self.features.shape)}")
        readers = [m for m in (self.feature_decoder, self.autoencoder, self.direct, self.sparse) if m is not None]
        if len(readers) != 1:
            raise ValueError("a LanguageField needs exactly one of feature_decoder, autoencoder, direct or sparse")
        f = self.features.shape[1]
        if self.direct is not None and f != self.direct.levels * self.direct.dim:
            raise ValueError(f"features have {f} channels, the direct reader expects {self.direct.levels} x "
                             f"{self.direct.dim}")
        if self.sparse is not None and f != self.sparse.levels * self.sparse.size:
            raise ValueError(f"features have {f} channels, the sparse codebook expects {self.sparse.levels} x "
                             f"{self.sparse.size}")
        if self.feature_decoder is not None and f != self.feature_decoder.in_dim:
            raise ValueError(f"features have {f} channels, the feature decoder expects {self.feature_decoder.in_dim}")
        if self.autoencoder is not None and f % self.autoencoder.code_dim != 0:
            raise ValueError(f"features have {f} channels, not a multiple of the code size {self.autoencoder.code_dim}")
        if self.granularity_decoder is not None and f != self.granularity_decoder.in_dim:
            raise ValueError(f"features have {f} channels, the granularity decoder expects "
                             f"{self.granularity_decoder.in_dim}")
        if self.autoencoder is not None:
            self.autoencoder.eval()  # trained before distillation; BatchNorm uses its running statistics from now on

    @property
    def levels(self) -> int:
        """Number of CLIP features decoded per feature vector: F / 3 with the autoencoder, the direct reader's levels,
        else 1."""
        if self.autoencoder is not None:
            return self.features.shape[1] // self.autoencoder.code_dim
        if self.direct is not None:
            return self.direct.levels
        if self.sparse is not None:
            return self.sparse.levels
        return 1

    @property
    def clip_dim(self) -> int:
        """Size of the decoded features (512 for CLIP ViT-B-16)."""
        if self.feature_decoder is not None:
            return self.feature_decoder.out_dim
        if self.direct is not None:
            return self.direct.dim
        if self.sparse is not None:
            return self.sparse.dim
        assert self.autoencoder is not None
        return self.autoencoder.decoder_dims[-1]

    def _modules(self) -> dict[str, FeatureDecoder | GranularityDecoder | LangSplatAutoencoder | DirectFeatures
                                   | SparseCodebook]:
        mods = {"feature_decoder": self.feature_decoder, "granularity_decoder": self.granularity_decoder,
                "autoencoder": self.autoencoder, "direct": self.direct, "sparse": self.sparse}
        return {k: m for k, m in mods.items() if m is not None}

    def to(self, device: torch.device | str) -> LanguageField:
        """Move features and decoders to ``device`` (in place) and return self."""
        self.features = self.features.to(device)
        for m in self._modules().values():
            m.to(device)
        return self

    @torch.no_grad()
    def decode_features(self, f: Tensor) -> Tensor:
        """f: [..., F] (per-Gaussian or rendered, channel-last) -> [..., L, 512] unit CLIP features, L = ``levels``."""
        lead = f.shape[:-1]
        flat = f.reshape(-1, f.shape[-1]).float()
        if self.feature_decoder is not None:
            out = self.feature_decoder(flat)[:, None, :]
        elif self.direct is not None:
            out = self.direct(flat)
        elif self.sparse is not None:
            out = self.sparse(flat)
        else:
            assert self.autoencoder is not None
            out = self.autoencoder.decode(flat.reshape(flat.shape[0], self.levels, self.autoencoder.code_dim))
        return out.reshape(*lead, self.levels, out.shape[-1])

    @torch.no_grad()
    def granularity(self, f: Tensor) -> Tensor:
        """f: [..., F] -> [..., 3] weights of the sub-part, part and whole levels (gags fields only)."""
        if self.granularity_decoder is None:
            raise GagsError(f"the {self.method} field has no granularity decoder; only gags fields predict "
                            "granularity.")
        flat = f.reshape(-1, f.shape[-1]).float()
        return self.granularity_decoder(flat).reshape(*f.shape[:-1], self.granularity_decoder.out_dim)

    def save(self, path: Path) -> None:
        """Write the field as one safetensors file (atomically): tensors + JSON metadata."""
        # lifted CLIP features and sparse coefficients (in [0, 1]) are stored in float16 (half the size; the
        # precision of CLIP's own output), the small learned features in float32
        dtype = torch.float16 if self.direct is not None or self.sparse is not None else torch.float32
        tensors = {"features": self.features.detach().to(dtype).cpu().contiguous()}
        specs = {}
        for name, module in self._modules().items():
            specs[name] = module.spec()
            for key, value in module.state_dict().items():
                tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
        metadata = {
            "format": FIELD_FORMAT,
            "version": str(FIELD_VERSION),
            "method": self.method,
            "decoders": json.dumps(specs),
            "config": json.dumps(self.config, default=str),
        }
        from safetensors.torch import save_file

        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> LanguageField:
        """Read a field written by :meth:`save`; GagsError if the file is missing, corrupt or of another format."""
        path = Path(path)
        fix = "Re-run `gags distill` to write it again."
        if not path.is_file():
            raise GagsError(f"language field {path} does not exist. Run `gags distill` first.")
        tensors, metadata = read_safetensors(path, "language field", fix)
        if metadata.get("format") != FIELD_FORMAT:
            raise GagsError(f"{path} is a safetensors file but not a gags language field. {fix}")
        try:
            version = int(metadata.get("version", ""))
        except ValueError:
            version = -1
        if version != FIELD_VERSION:
            raise GagsError(
                f"language field {path} has format version {metadata.get('version')!r}; this gags reads version "
                f"{FIELD_VERSION}. {fix}"
            )
        try:
            specs = json.loads(metadata["decoders"])
            config = json.loads(metadata["config"])
            method = metadata["method"]
            modules: dict[str, nn.Module] = {}
            for name, spec in specs.items():
                if name not in _DECODERS:
                    raise ValueError(f"unknown decoder {name!r}")
                module = _DECODERS[name](**spec)
                prefix = f"{name}."
                state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                module.load_state_dict(state, strict=True)
                module.eval()
                modules[name] = module
            features = tensors["features"]
            result = cls(method=method, features=features, config=config, **modules)  # type: ignore[arg-type]
        except (KeyError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as exc:
            raise GagsError(f"language field {path} is incomplete or inconsistent ({exc}). {fix}") from exc
        if not torch.isfinite(result.features).all():
            raise GagsError(f"language field {path} has non-finite features. {fix}")
        return result.to(device)


__all__ = [
    "CLIP_DIM",
    "FEATURE_DIM",
    "DirectFeatures",
    "SparseCodebook",
    "NUM_LEVELS",
    "FeatureDecoder",
    "GranularityDecoder",
    "LangSplatAutoencoder",
    "LanguageField",
    "decoder_precision",
    "native_bfloat16",
    "top_k_soft_codes",
]
