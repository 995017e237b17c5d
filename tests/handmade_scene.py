"""A hand-made scene output folder (OUT) for the tests of ``gags eval``, ``query``, the viewer and the benchmarks: a
background plane and two flat square objects ("bowl", "egg") made of small Gaussians, four frontal cameras, LERF-OVS
labels projected from the squares' corners, and hand-made language fields whose decoded feature is exactly a text
embedding per Gaussian (a 3-layer-deep identity path into the matrix of embeddings).

Import it as ``from tests import handmade_scene`` (pytest's importlib mode makes ``tests`` a package).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from tests.helpers import tiny_clip_cfg, write_random_clip

WIDTH, HEIGHT, FOCAL = 128, 96, 100.0
CAMERA_HEIGHT = 3.0
OBJECT_Z = 0.2
OBJECTS = {"bowl": (-1.2, -0.45, -0.35, 0.45), "egg": (0.35, -0.45, 1.2, 0.45)}
"""category -> square (x1, y1, x2, y2) on the plane z = OBJECT_Z, facing the cameras."""
BACKGROUND_PHRASE = "table"
PHRASES = ("bowl", "egg", BACKGROUND_PHRASE)
OBJECT_SPACING, PLANE_SPACING = 0.05, 0.1
CAMERA_XY = [(-0.25, 0.0), (0.0, 0.1), (0.25, -0.05), (0.1, 0.05)]
"""Views 0..2 train, view 3 held out; views 0, 2 and 3 labelled (view 1 has no labels)."""
TRAIN, TEST, LABELLED = [0, 1, 2], [3], [0, 2, 3]


def image_name(i: int) -> str:
    return f"frame_{i + 1:05d}.png"


def make_encoder(folder: Path, embed_dim: int = 32) -> Path:
    """A random-weights open_clip model in local-dir format (``embed_dim``-d)."""
    write_random_clip(folder, tiny_clip_cfg(embed_dim))
    return folder


def _grid(x1: float, y1: float, x2: float, y2: float, z: float, spacing: float) -> torch.Tensor:
    xs = torch.arange(x1 + spacing / 2, x2, spacing)
    ys = torch.arange(y1 + spacing / 2, y2, spacing)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full((gx.numel(),), z)], dim=1)


def scene_gaussians() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Raw 3DGS parameters (as in a PLY) and the phrase index of every Gaussian: 0 bowl, 1 egg, 2 background."""
    from gags.splat.gaussians import rgb_to_sh

    parts = [(_grid(-3.0, -2.5, 3.0, 2.5, 0.0, PLANE_SPACING), 2, PLANE_SPACING, (0.6, 0.5, 0.4))]
    colors = {"bowl": (0.9, 0.9, 0.95), "egg": (0.95, 0.8, 0.2)}
    for k, (name, box) in enumerate(OBJECTS.items()):
        parts.append((_grid(*box, OBJECT_Z, OBJECT_SPACING), k, OBJECT_SPACING, colors[name]))
    means = torch.cat([p[0] for p in parts])
    owner = torch.cat([torch.full((len(p[0]),), p[1]) for p in parts])
    scales = torch.cat([torch.full((len(p[0]), 3), math.log(0.6 * p[2])) for p in parts])
    rgb = torch.cat([torch.tensor(p[3]).expand(len(p[0]), 3) for p in parts])
    n = len(means)
    splats = {"means": means, "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), "scales": scales,
              "opacities": torch.full((n,), math.log(0.99 / 0.01)), "sh0": rgb_to_sh(rgb)[:, None],
              "shN": torch.zeros(n, 0, 3)}
    return splats, owner


def cameras() -> list:
    from gags.cameras import Camera, intrinsics

    out = []
    for i, (cx, cy) in enumerate(CAMERA_XY):
        # Looking down -z from above: OpenCV x = world x, y = -world y, z = -world z.
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
        w2c[:3, 3] = -w2c[:3, :3] @ torch.tensor([cx, cy, CAMERA_HEIGHT], dtype=torch.float64)
        out.append(Camera(name=image_name(i), K=intrinsics(FOCAL, FOCAL, WIDTH / 2, HEIGHT / 2), world_to_cam=w2c,
                          width=WIDTH, height=HEIGHT))
    return out


def label_json(camera, name: str, categories=tuple(OBJECTS)) -> dict:
    """LERF-OVS labels of one view: each object's square, projected (the Gaussians' centres fill it to its edges)."""
    objects = []
    for category in categories:
        x1, y1, x2, y2 = OBJECTS[category]
        corners = torch.tensor([[x1, y1, OBJECT_Z], [x2, y1, OBJECT_Z], [x2, y2, OBJECT_Z], [x1, y2, OBJECT_Z]])
        uv, _ = camera.project(corners)
        poly = uv.tolist()
        lo, hi = uv.min(0).values.tolist(), uv.max(0).values.tolist()
        objects.append({"category": category, "group": 1, "segmentation": poly, "area": 0, "layer": 1.0,
                        "bbox": [lo[0], lo[1], hi[0], hi[1]], "iscrowd": 0, "note": ""})
    return {"info": {"name": name, "width": camera.width, "height": camera.height, "depth": 3, "note": ""},
            "objects": objects}


def make_out(root: Path) -> Path:
    """root/scene (images, label/) and root/out (scene.json, gaussians.ply); returns OUT."""
    from PIL import Image

    from gags.data import save_scene_json, write_ply
    from gags.data.scene import Scene
    from gags.query.render import load_geometry
    from gags.splat import rasterize
    from gags.splat.gaussians import sh_to_rgb

    scene_dir, out = root / "scene", root / "out"
    (scene_dir / "label").mkdir(parents=True)
    out.mkdir(parents=True)
    splats, _ = scene_gaussians()
    write_ply(out / "gaussians.ply", splats)
    geometry = load_geometry(out)
    cams = cameras()
    paths = []
    for i, cam in enumerate(cams):
        rgb, _, _ = rasterize(geometry.means, geometry.quats, geometry.scales, geometry.opacities,
                              sh_to_rgb(splats["sh0"][:, 0]), cam.world_to_cam, cam.K, cam.width, cam.height)
        path = scene_dir / cam.name
        Image.fromarray((rgb.clamp(0, 1) * 255).round().byte().numpy()).save(path)
        paths.append(path)
        if i in LABELLED:
            stem = Path(cam.name).stem
            (scene_dir / "label" / f"{stem}.json").write_text(json.dumps(label_json(cam, cam.name)))
    scene = Scene(root=scene_dir, source_format="transforms", cameras=cams, image_paths=paths, train_ids=TRAIN,
                  test_ids=TEST)
    save_scene_json(scene, out)
    return out


def _identity(layer: torch.nn.Module, rows: int, cols: int) -> None:
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        w = layer.weight.view(layer.weight.shape[0], -1)
        w[: min(rows, cols), : min(rows, cols)] = torch.eye(min(rows, cols))


def embedding_decoder(embeddings: torch.Tensor):
    """A FeatureDecoder with K inputs whose output for a non-negative input x is ``normalize(embeddings.T @ x)``.

    embeddings: [K, D]. Layers 1, 2, 4, 5 are zero (their residual branches add nothing), 0, 3, 6, 7 pass x through
    (ReLU keeps non-negative values), layer 8 maps the one-hot channels to the embeddings.
    """
    from gags.field import FeatureDecoder

    k, d = embeddings.shape
    decoder = FeatureDecoder(in_dim=k, hidden_dim=k, out_dim=d)
    for i, layer in enumerate(decoder.layers):
        _identity(layer, layer.out_channels, layer.in_channels)
        if i in (1, 2, 4, 5):
            with torch.no_grad():
                layer.weight.zero_()
    with torch.no_grad():
        decoder.layers[8].weight.copy_(embeddings.T[:, :, None, None])
    return decoder.eval()


def embedding_autoencoder(embeddings: torch.Tensor):
    """A LangSplat autoencoder whose decoder maps a non-negative 3-d code c to ``normalize(embeddings.T @ c)``."""
    from gags.field import LangSplatAutoencoder

    k, d = embeddings.shape
    assert k == 3
    ae = LangSplatAutoencoder(in_dim=d, encoder_dims=(8, 3), decoder_dims=(3, d))
    _identity(ae.decoder[0], 3, 3)
    with torch.no_grad():
        ae.decoder[2].weight.copy_(embeddings.T)
        ae.decoder[2].bias.zero_()
    return ae.eval()


def phrase_embeddings(encoder_dir: Path) -> torch.Tensor:
    from gags.models import load_encoder

    return load_encoder(f"openclip:local-dir:{encoder_dir}", device="cpu").encode_text(list(PHRASES))


def one_hot_features(owner: torch.Tensor, mapping: dict[int, int] | None = None) -> torch.Tensor:
    """[N, 3] one-hot of each Gaussian's phrase (``mapping`` renames phrases, e.g. swaps bowl and egg)."""
    mapping = mapping or {}
    index = torch.tensor([mapping.get(int(o), int(o)) for o in owner])
    return torch.nn.functional.one_hot(index, len(PHRASES)).float()


def write_field(out: Path, method: str, encoder_dir: Path, swap: bool = False) -> None:
    """A hand-made field: every Gaussian decodes to its own phrase's embedding (``swap``: bowl <-> egg)."""
    from gags.field import LanguageField

    _, owner = scene_gaussians()
    emb = phrase_embeddings(encoder_dir)
    feats = one_hot_features(owner, {0: 1, 1: 0} if swap else None)
    if method in ("langsplat", "langsplat-v2"):
        background = one_hot_features(torch.full_like(owner, 2))
        # Levels 0 and 2 know nothing (background everywhere); level 1 is the right one: choose_level must find it.
        per_level = torch.cat([background, feats, background], dim=1)
        if method == "langsplat":
            field = LanguageField(method, per_level, autoencoder=embedding_autoencoder(emb))
        else:  # one-hot coefficients over a codebook holding the three phrases' embeddings at every level
            from gags.field import SparseCodebook

            book = SparseCodebook(levels=3, size=emb.shape[0], dim=emb.shape[1], top_k=1)
            book.codebooks.data = emb[None].repeat(3, 1, 1).float()
            field = LanguageField(method, per_level, sparse=book)
    else:
        field = LanguageField(method, feats, feature_decoder=embedding_decoder(emb))
    field.save(out / "field" / method / "field.safetensors")


def make_out_with_fields(root: Path, encoder_dir: Path) -> Path:
    """``make_out(root)`` with a hand-made gags field and a hand-made langsplat field; returns OUT."""
    out = make_out(root)
    write_field(out, "gags", encoder_dir)
    write_field(out, "langsplat", encoder_dir)
    return out
