"""``gags eval`` on a hand-made OUT: a background plane and two flat square objects made of small Gaussians, four
frontal cameras, LERF-OVS labels projected from the squares' corners, and hand-made language fields whose decoded
feature is exactly a text embedding per Gaussian (a 3-layer-deep identity path into the matrix of embeddings).

The helpers here also build the scenes of ``test_answer.py`` (loaded from this file by path).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip
import pytest
import torch

from gags.config import EvalConfig
from gags.errors import GagsError

ENCODER_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"interpolation": "bilinear", "resize_mode": "squash"},
}
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
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(ENCODER_CFG))
    cfg["model_cfg"]["embed_dim"] = embed_dim
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
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
    if method == "langsplat":
        background = one_hot_features(torch.full_like(owner, 2))
        # Levels 0 and 2 know nothing (background everywhere); level 1 is the right one: choose_level must find it.
        field = LanguageField(method, torch.cat([background, feats, background], dim=1),
                              autoencoder=embedding_autoencoder(emb))
    else:
        field = LanguageField(method, feats, feature_decoder=embedding_decoder(emb))
    field.save(out / "field" / method / "field.safetensors")


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return make_encoder(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def base_out(tmp_path_factory) -> Path:
    return make_out(tmp_path_factory.mktemp("evalscene"))


@pytest.fixture
def out(base_out, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "out"
    shutil.copytree(base_out, dst)
    return dst


def eval_config(out: Path, encoder_dir: Path, **kwargs) -> EvalConfig:
    return EvalConfig(out=out, encoder=f"openclip:local-dir:{encoder_dir}", **kwargs)


# ----------------------------------------------------------------------------------------------------------------------


def test_hand_made_decoder_gives_the_embeddings(encoder_dir):
    emb = phrase_embeddings(encoder_dir)
    decoded = embedding_decoder(emb)(torch.eye(3))
    torch.testing.assert_close(decoded, emb, atol=1e-5, rtol=0)
    decoded = embedding_autoencoder(emb).decode(torch.eye(3))
    torch.testing.assert_close(decoded, emb, atol=1e-5, rtol=0)


def test_relevancy_is_highest_on_the_right_object(encoder_dir):
    """Precondition of the predictions below, checked on these embeddings: a pixel carrying the embedding of label q
    is more relevant to q than a pixel carrying any other phrase."""
    from gags.models import load_encoder
    from gags.query.relevancy import CANONICAL_PHRASES, relevancy

    enc = load_encoder(f"openclip:local-dir:{encoder_dir}", device="cpu")
    emb, canon = enc.encode_text(list(PHRASES)), enc.encode_text(list(CANONICAL_PHRASES))
    rel = relevancy(emb, emb[:2], canon)  # [2 queries, 3 pixel phrases]
    for q in range(2):
        assert rel[q, q] > 0.5
        assert rel[q, q] > rel[q, [i for i in range(3) if i != q]].max()


def test_eval_perfect_field(out, encoder_dir, capsys):
    from gags.query.evaluate import run

    write_field(out, "gags", encoder_dir)
    results = run(eval_config(out, encoder_dir))
    assert set(results["gags"]) == {"train", "test"}
    train, test = results["gags"]["train"], results["gags"]["test"]
    # Splits are separate: views 0 and 2 are labelled training views, view 3 the held-out one.
    assert {q["frame"] for q in train["queries"]} == {"frame_00001", "frame_00003"}
    assert {q["frame"] for q in test["queries"]} == {"frame_00004"}
    assert (train["n_queries"], test["n_queries"]) == (4, 2)
    for m in (train, test):
        assert m["loc_acc"] == 1.0
        assert m["miou"] > 0.75
        assert all(q["iou"] > 0.7 for q in m["queries"])
    written = json.loads((out / "eval" / "gags" / "test" / "metrics.json").read_text())
    assert written["miou"] == pytest.approx(test["miou"]) and written["loc_acc"] == 1.0
    assert written["queries"][0]["label"] == "bowl"
    for q in written["queries"]:
        for key in ("relevancy_png", "mask_png"):
            assert (out / "eval" / "gags" / "test" / q[key]).is_file()
    assert "gags" in capsys.readouterr().out


def test_eval_swapped_field_scores_zero(out, encoder_dir):
    from gags.query.evaluate import run

    write_field(out, "avg", encoder_dir, swap=True)
    results = run(eval_config(out, encoder_dir, method="avg", split="train", figures=False))
    assert set(results["avg"]) == {"train"}
    m = results["avg"]["train"]
    assert m["loc_acc"] == 0.0
    assert m["miou"] < 0.05
    assert not (out / "eval" / "avg" / "test").exists()
    assert not list((out / "eval" / "avg" / "train").glob("*.png"))


def test_eval_langsplat_picks_the_informative_level(out, encoder_dir):
    from gags.query.evaluate import run

    write_field(out, "langsplat", encoder_dir)
    write_field(out, "gags", encoder_dir)
    results = run(eval_config(out, encoder_dir, method="all", split="test", figures=False))
    assert set(results) == {"gags", "langsplat"}
    ls, gg = results["langsplat"]["test"], results["gags"]["test"]
    assert ls["loc_acc"] == 1.0
    assert all(q["level_loc"] == 1 and q["level_seg"] == 1 for q in ls["queries"])
    assert ls["miou"] == pytest.approx(gg["miou"], abs=0.02)


def test_eval_downscale_and_real_label_names(out, encoder_dir, tmp_path):
    """LERF-OVS label names (frame_0000N.json with info.name frame_0000N.jpg) match the .png images by number;
    --downscale 2 renders at half the label size."""
    from gags.data import load_scene_json
    from gags.query.evaluate import run

    labels = tmp_path / "lerf"
    labels.mkdir()
    scene = load_scene_json(out)
    cam = scene.cameras[3]
    data = label_json(cam, "frame_4.jpg", categories=("egg",))
    (labels / "frame_00004.json").write_text(json.dumps(data))
    write_field(out, "gags", encoder_dir)
    m = run(eval_config(out, encoder_dir, labels=labels, downscale=2.0, figures=False))["gags"]["test"]
    assert m["resolution"] == [[WIDTH // 2, HEIGHT // 2]]
    assert m["n_queries"] == 1 and m["loc_acc"] == 1.0 and m["miou"] > 0.6


def test_eval_user_errors(out, encoder_dir, tmp_path):
    from gags.query.evaluate import run

    with pytest.raises(GagsError, match="gags distill"):
        run(eval_config(out, encoder_dir))  # no field at all
    write_field(out, "avg", encoder_dir)
    with pytest.raises(GagsError, match=r"field/gags/field.safetensors does not exist.*\(avg\)"):
        run(eval_config(out, encoder_dir, method="gags"))
    with pytest.raises(GagsError, match=r"unknown method 'foo'.*gags, avg.*fields in .*: avg"):
        run(eval_config(out, encoder_dir, method="foo"))
    with pytest.raises(GagsError, match="label folder .* does not exist"):
        run(eval_config(out, encoder_dir, method="avg", labels=tmp_path / "nowhere"))
    with pytest.raises(GagsError, match="scene.json"):
        run(eval_config(tmp_path / "empty", encoder_dir))
    # A label folder that covers no held-out view.
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    src = json.loads((Path(json.loads((out / "scene.json").read_text())["root"]) / "label" / "frame_00001.json")
                     .read_text())
    (only_train / "frame_00001.json").write_text(json.dumps(src))
    with pytest.raises(GagsError, match="cover no test view"):
        run(eval_config(out, encoder_dir, method="avg", labels=only_train, split="test"))
    # An encoder whose text size does not match the field's.
    enc16 = make_encoder(tmp_path / "clip16", embed_dim=16)
    with pytest.raises(GagsError, match="16 dimensions"):
        run(EvalConfig(out=out, method="avg", encoder=f"openclip:local-dir:{enc16}", figures=False))
    # No --labels, and the scene folder has no label/ folder.
    record = json.loads((out / "scene.json").read_text())
    record["root"] = str(tmp_path / "elsewhere")
    (out / "scene.json").write_text(json.dumps(record))
    with pytest.raises(GagsError, match="no --labels given"):
        run(eval_config(out, encoder_dir, method="avg"))


def test_eval_cli(out, encoder_dir, capsys):
    from gags.cli import main

    write_field(out, "gags", encoder_dir)
    code = main(["eval", str(out), "--split", "test", "--no-figures", "--encoder", f"openclip:local-dir:{encoder_dir}"])
    assert code == 0
    assert "mIoU" in capsys.readouterr().out
    assert json.loads((out / "eval" / "gags" / "test" / "metrics.json").read_text())["loc_acc"] == 1.0
    assert main(["eval", str(out), "--method", "nope"]) == 1
    captured = capsys.readouterr()
    assert "unknown method 'nope'" in captured.out + captured.err
    assert "Traceback" not in captured.err


def test_small_labels_are_evaluated_enlarged_to_the_protocol_side(out, encoder_dir):
    """LangSplat's pixel-sized filters were set on ~1000-px frames: 128 x 96 labels are evaluated at 720 x 540 (maps
    upsampled), figures stay at the render size, and protocol_min_side=0 evaluates at the label size itself."""
    from PIL import Image

    from gags.query.evaluate import protocol_size, run

    assert protocol_size(128, 96, 720) == (720, 540)
    assert protocol_size(986, 728, 720) == (986, 728)  # LERF-OVS-sized labels: unchanged
    assert protocol_size(128, 96, 0) == (128, 96)
    write_field(out, "gags", encoder_dir)
    enlarged = run(eval_config(out, encoder_dir, split="test"))["gags"]["test"]
    assert enlarged["resolution"] == [[WIDTH, HEIGHT]] and enlarged["protocol_resolution"] == [[720, 540]]
    png = out / "eval" / "gags" / "test" / enlarged["queries"][0]["mask_png"]
    assert Image.open(png).size == (WIDTH, HEIGHT)
    native = run(eval_config(out, encoder_dir, split="test", figures=False, protocol_min_side=0))["gags"]["test"]
    assert native["protocol_resolution"] == [[WIDTH, HEIGHT]]
    assert enlarged["loc_acc"] == 1.0 and enlarged["miou"] > 0.75
    # The 30 x 30 box filter spans a quarter of a 128-px image; enlarged, it smears the perfect field's masks less.
    assert enlarged["miou"] > native["miou"]


def test_eval_refuses_an_encoder_whose_weights_changed_since_segment(out, encoder_dir):
    """Features encoded by one set of weights and queries by another would silently give garbage."""
    from gags.query.evaluate import run
    from gags.segment.extract import file_fingerprint

    write_field(out, "gags", encoder_dir)
    spec = f"openclip:local-dir:{encoder_dir}"
    record = out / "segment" / "config.json"
    record.parent.mkdir(exist_ok=True)
    record.write_text(json.dumps({"settings": {"encoder": spec, "encoder_weights": "0123456789abcdef"}}))
    with pytest.raises(GagsError, match="not those that encoded the features"):
        run(eval_config(out, encoder_dir, split="test", figures=False))
    record.write_text(json.dumps({"settings": {"encoder": spec, "encoder_weights": file_fingerprint(encoder_dir)}}))
    (encoder_dir / "MODEL_CARD.md").write_text("a card edit does not change the model")
    assert run(eval_config(out, encoder_dir, split="test", figures=False))["gags"]["test"]["loc_acc"] == 1.0
