"""``gags eval`` on the hand-made OUT of ``tests/handmade_scene.py``: a background plane and two flat square objects
made of small Gaussians, four frontal cameras, LERF-OVS labels projected from the squares' corners, and hand-made
language fields whose decoded feature is exactly a text embedding per Gaussian."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gags.config import EvalConfig
from gags.errors import GagsError
from tests.handmade_scene import (
    HEIGHT,
    PHRASES,
    WIDTH,
    embedding_autoencoder,
    embedding_decoder,
    label_json,
    make_encoder,
    make_out,
    phrase_embeddings,
    write_field,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_out(tmp_path_factory) -> Path:
    return make_out(tmp_path_factory.mktemp("evalscene"))


@pytest.fixture
def out(base_out, tmp_path) -> Path:
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


@pytest.mark.parametrize("method", ["langsplat", "langsplat-v2"])
def test_eval_langsplat_picks_the_informative_level(out, encoder_dir, method):
    from gags.query.evaluate import run

    write_field(out, method, encoder_dir)
    write_field(out, "gags", encoder_dir)
    results = run(eval_config(out, encoder_dir, method="all", split="test", figures=False))
    assert set(results) == {"gags", method}
    ls, gg = results[method]["test"], results["gags"]["test"]
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


def test_eval_refuses_an_encoder_whose_weights_changed_since_segment(out, encoder_dir, tmp_path):
    """Features encoded by one set of weights and queries by another would silently give garbage."""
    from gags.query.evaluate import run
    from gags.workspace import file_fingerprint

    encoder_dir = Path(shutil.copytree(encoder_dir, tmp_path / "clip"))  # the shared folder stays as it is
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
