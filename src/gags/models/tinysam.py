"""The embedded promptable segmenter: segment_anything's ``Sam`` with a small image encoder sized for a 2-core CPU.

Everything but the image encoder is segment_anything's own code: ``PromptEncoder``, ``MaskDecoder`` with a
``TwoWayTransformer``, ``Sam`` (normalisation, padding, mask post-processing) and ``SamPredictor`` (resizing, batched
point prompts, three mask outputs with predicted IoU). It is built here and loaded by ``SamSegmenter``, the adapter
that loads ``vit_b``, ``vit_l`` and ``vit_h`` (``--segmenter tinysam`` is ``sam:tiny:<the shipped weights>``).

Image encoder (``TinyImageEncoder``): strided convolutions with residual blocks at 1/4 and 1/8 of the input
(``IMAGE_SIZE`` = 128 px: a 16 x 16 grid of 8 px tokens), then ``GLOBAL_BLOCKS`` transformer blocks with a learned
absolute position embedding (global attention over the tokens, as SAM's ViT's global blocks), and SAM's neck (1x1 conv,
LayerNorm2d, 3x3 conv, LayerNorm2d) to ``EMBED_DIM`` channels. SAM's ViT-B turns a 1024 px image into 64 x 64 tokens of
16 px; here a 128 px image becomes 16 x 16 tokens of 8 px; the decoder's masks (4x the token grid, 64 x 64) are
upsampled bilinearly to the image, as SAM's are.

Sizes are set by the decoder's cost on a CPU: SAM's decoder runs its two-way transformer and its upscaling over the
whole token grid once per prompt point, and the segment stage asks 1,000-4,000 points per 128 px image (GaS). Measured
on a 2-core CPU, batches of 128 points: a 32 x 32 grid costs 1.9 ms per point at 32 channels, a 16 x 16 grid 0.43 ms at
32 channels and 0.71 ms at 64 (``EMBED_DIM``, whose hypernetworks combine ``EMBED_DIM / 8`` = 8 mask channels).

The weights are trained by ``gags train-segmenter`` (``gags.models.train_tinysam``) on renders of the procedural world.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

IMAGE_SIZE = 128
"""Side of the encoder's input (SAM: 1024). The predictor resizes an image's longest side to this and pads."""
PATCH = 8
"""Stride of the encoder: 128 px -> a 16 x 16 token grid, 8 px per token (SAM's ViT: 16 px)."""
EMBED_DIM = 64
"""Channels of the image embedding and of every token of the mask decoder (SAM: 256)."""
ENCODER_DIM = 96
"""Channels inside the image encoder."""
CONV_BLOCKS = 2
"""Residual 3x3 convolution blocks at 1/4 of the input and again at the token grid (edges, colour boundaries)."""
GLOBAL_BLOCKS = 2
"""Transformer blocks with global attention over the token grid (whole objects need a receptive field of the image)."""
ENCODER_HEADS = 4
DECODER_DEPTH = 2
"""TwoWayTransformer layers (SAM: 2)."""
DECODER_HEADS = 4
"""Attention heads of the decoder (SAM: 8)."""
DECODER_MLP = 128
"""MLP width of the decoder's transformer (SAM: 2048)."""
IOU_HEAD_HIDDEN = 64
"""Hidden width of the predicted-IoU head (SAM: 256)."""
MASK_IN_CHANS = 16
"""Channels of the prompt encoder's mask-input branch (SAM: 16; unused by point prompts, kept for the architecture)."""


class _LayerNorm2d(nn.Module):
    """LayerNorm over channels of [B, C, H, W] (segment_anything.modeling.common.LayerNorm2d's definition)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class _ConvBlock(nn.Module):
    """Residual block: 3x3 conv, LayerNorm2d, GELU, 3x3 conv, LayerNorm2d, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), _LayerNorm2d(dim), nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), _LayerNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x + self.body(x))


class _GlobalBlock(nn.Module):
    """Pre-norm transformer block over [B, N, C] tokens (global self-attention, MLP of 4 C)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyImageEncoder(nn.Module):
    """[B, 3, IMAGE_SIZE, IMAGE_SIZE] normalised image -> [B, EMBED_DIM, IMAGE_SIZE / PATCH, IMAGE_SIZE / PATCH].

    Has ``img_size``, which ``SamPredictor`` and ``Sam`` read to resize and pad images, as SAM's ViT does.
    """

    def __init__(self, img_size: int = IMAGE_SIZE, dim: int = ENCODER_DIM, out_chans: int = EMBED_DIM) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // PATCH
        half = dim // 2
        self.stem = nn.Sequential(  # 1/2, 1/4 (with residual blocks), 1/8 (with residual blocks)
            nn.Conv2d(3, dim // 4, 3, stride=2, padding=1, bias=False), _LayerNorm2d(dim // 4), nn.GELU(),
            nn.Conv2d(dim // 4, half, 3, stride=2, padding=1, bias=False), _LayerNorm2d(half), nn.GELU(),
            *(_ConvBlock(half) for _ in range(CONV_BLOCKS)),
            nn.Conv2d(half, dim, 3, stride=2, padding=1, bias=False), _LayerNorm2d(dim), nn.GELU(),
        )
        self.convs = nn.Sequential(*(_ConvBlock(dim) for _ in range(CONV_BLOCKS)))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(_GlobalBlock(dim, ENCODER_HEADS) for _ in range(GLOBAL_BLOCKS))
        self.neck = nn.Sequential(  # SAM's neck
            nn.Conv2d(dim, out_chans, 1, bias=False), _LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), _LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.stem(x))  # [B, C, g, g]
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.pos_embed  # [B, g*g, C]
        for block in self.blocks:
            tokens = block(tokens)
        x = x + tokens.transpose(1, 2).reshape(b, c, h, w)  # the convolutions' detail plus the global context
        return self.neck(x)


def build_tiny_sam() -> Sam:
    """segment_anything's ``Sam`` with ``TinyImageEncoder``; randomly initialised (load weights with load_state_dict).

    The pixel mean and std are SAM's (ImageNet's, on 0-255 values).
    """
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = IMAGE_SIZE // PATCH
    return Sam(
        image_encoder=TinyImageEncoder(),
        prompt_encoder=PromptEncoder(
            embed_dim=EMBED_DIM, image_embedding_size=(grid, grid), input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=MASK_IN_CHANS,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=DECODER_DEPTH, embedding_dim=EMBED_DIM, mlp_dim=DECODER_MLP,
                                          num_heads=DECODER_HEADS),
            transformer_dim=EMBED_DIM, iou_head_depth=3, iou_head_hidden_dim=IOU_HEAD_HIDDEN,
        ),
    )
