"""What the viewer shows, loaded once from a scene output folder and read-only afterwards.

``load_viewer_scene(OUT)`` reads, through :class:`gags.workspace.Workspace`, the scene record (the cameras), the
Gaussians (geometry and SH colours), the language field of one method and the text encoder that made the features
(recorded by ``gags segment``). Anything missing is a GagsError naming the command that writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gags.cameras import Camera
from gags.errors import GagsError
from gags.field import LanguageField
from gags.query import render as query_render
from gags.splat.gaussians import FrozenGaussians
from gags.workspace import Workspace


@dataclass(frozen=True)
class ViewerScene:
    """The Gaussians, their language field, the text encoder and the training cameras.

    geometry: activated Gaussians (means [N, 3], quats [N, 4], scales [N, 3], opacities [N]);
    sh: [N, K, 3] SH coefficients of the colours, evaluated up to ``sh_degree``;
    canon: [C, D] embeddings of the canonical phrases; cameras: every view of the scene (``train_ids`` are the
    training ones); up: [3] unit world up direction (mean of the training cameras' up axes); center: [3] the point the
    cameras look at; scale: the scene's size (``Scene.scale``).
    """

    out: Path
    geometry: FrozenGaussians
    sh: Tensor
    sh_degree: int
    field: LanguageField
    encoder_spec: str
    encoder: Any
    canon: Tensor
    cameras: list[Camera]
    train_ids: list[int]
    up: Tensor
    center: Tensor
    scale: float

    @property
    def has_granularity(self) -> bool:
        return self.field.granularity_decoder is not None

    def embed(self, text: str) -> Tensor:
        """[D] unit text embedding of ``text``."""
        return self.encoder.encode_text([text])[0].float()


def world_up(cameras: list[Camera]) -> Tensor:
    """[3] unit mean of the cameras' up axes (-y of OpenCV cameras) in world coordinates; +z if they cancel out."""
    ups = torch.stack([-c.cam_to_world[:3, 1] for c in cameras])
    up = ups.mean(dim=0)
    if up.norm() < 1e-6:
        return torch.tensor([0.0, 0.0, 1.0])
    return up / up.norm()


def look_center(cameras: list[Camera]) -> Tensor:
    """[3] the point closest (least squares) to every camera's optical axis: where the cameras look.

    Falls back to the cameras' mean centre when the axes are (nearly) parallel.
    """
    centers = torch.stack([c.center for c in cameras]).double()
    axes = torch.stack([c.cam_to_world[:3, 2] for c in cameras]).double()
    axes = axes / axes.norm(dim=1, keepdim=True)
    projector = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]  # [V, 3, 3]
    A = projector.sum(dim=0)
    b = (projector @ centers[:, :, None]).sum(dim=0)[:, 0]
    if torch.linalg.cond(A) > 1e6:
        return centers.mean(dim=0).float()
    return torch.linalg.solve(A, b).float()


def load_viewer_scene(out: Path, method: str = "gags", encoder: str | None = None) -> ViewerScene:
    """Load everything the viewer needs from OUT; GagsError (with the command to run) when a piece is missing."""
    from gags.data import read_ply
    from gags.data.ply import sh_degree_of
    from gags.models import load_encoder
    from gags.query.relevancy import CANONICAL_PHRASES

    out = Path(out)
    if not out.is_dir():
        raise GagsError(f"{out} does not exist. Pass a scene output folder (e.g. the --out of `gags demo`).")
    ws = Workspace(out)
    ws.require_scene()
    ws.require_gaussians()
    if not ws.field_methods():
        raise GagsError(f"{ws.fields_dir} holds no language field. Run `gags segment {out}` and then "
                        f"`gags distill {out}` first.")
    field = query_render.load_field(out, method)
    scene = ws.load_scene()
    splats = read_ply(ws.gaussians_ply)
    geometry = FrozenGaussians.from_splats(splats)
    ws.check_field(method, len(field.features), len(geometry))
    spec = encoder or ws.recorded_encoder()
    ws.check_encoder_weights(spec)
    text_encoder = load_encoder(spec, device="cpu")
    dim = query_render.field_dim(field)
    if text_encoder.dim != dim:
        raise GagsError(f"the encoder {spec!r} embeds text in {text_encoder.dim} dimensions but the field decodes "
                        f"{dim}-d features; pass the --encoder that made the features (as given to `gags segment`).")
    canon = text_encoder.encode_text(list(CANONICAL_PHRASES)).float()
    train = [scene.cameras[i] for i in scene.train_ids] or list(scene.cameras)
    return ViewerScene(
        out=out, geometry=geometry, sh=torch.cat([splats["sh0"], splats["shN"]], dim=1), sh_degree=sh_degree_of(splats),
        field=field, encoder_spec=spec, encoder=text_encoder, canon=canon, cameras=list(scene.cameras),
        train_ids=list(scene.train_ids), up=world_up(train), center=look_center(train), scale=float(scene.scale),
    )
