import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from gags.models import load_encoder  # noqa: E402
from gags.models.train_tinyclip import (  # noqa: E402
    GENERIC,
    INPUT_SIZE,
    MIN_CROP_PIXELS,
    Captions,
    CropSet,
    WorldJob,
    colour_names,
    contrastive_loss,
    heldout_jobs,
    save_local_dir,
    texture_names,
    train,
    training_jobs,
    vocabulary_names,
    world_crops,
)

MINI_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def _crop_set(rows: list[tuple[str | None, str, str, bool]], size: int = 16) -> CropSet:
    """rows: (name or None for generic, colour, texture, background)."""
    names, colors, textures = vocabulary_names(), colour_names(), texture_names()
    n = len(rows)
    rng = np.random.default_rng(0)
    return CropSet(
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        np.array([names.index(r[0]) if r[0] else -1 for r in rows]),
        np.array([colors.index(r[1]) if r[0] else -1 for r in rows]),
        np.array([textures.index(r[2]) if r[0] else -1 for r in rows]),
        np.array([2 if r[0] else -1 for r in rows]),
        np.array([r[3] for r in rows]),
        np.zeros(n, np.int64),
    )


def test_captions_are_positives_of_every_image_they_describe():
    data = _crop_set([("mug", "red", "striped", False), ("mug", "blue", "plain", False),
                      ("table", "brown", "speckled", True), (None, "", "", False)])
    captions = Captions(data, open_clip.SimpleTokenizer(context_length=12))
    texts = torch.tensor([captions.index[t] for t in
                          ["mug", "red mug", "striped mug", "red striped mug", "blue mug", "table", "stuff", "object"]])
    pos = captions.positives(texts, *(torch.from_numpy(a) for a in (data.name, data.color, data.texture,
                                                                   data.background)))
    assert pos.tolist() == [
        # mug    red mug striped red-str blue   table  stuff  object
        [True, True, True, True, False, False, False, False],  # red striped mug
        [True, False, False, False, True, False, False, False],  # blue plain mug
        [False, False, False, False, False, True, True, False],  # table (background): its name, stuff, texture
        [False, False, False, False, False, False, True, True],  # generic crop: every generic phrase
    ]


def test_every_caption_variant_is_a_positive_of_its_own_image():
    data = _crop_set([("egg yolk", "yellow", "plain", False), ("mug", "red", "dotted", False),
                      ("floor", "gray", "checkered", True), (None, "", "", False)])
    captions = Captions(data, open_clip.SimpleTokenizer(context_length=12))
    variants, counts = captions.variants(data)
    assert counts.tolist() == [2, 4, 6, len(GENERIC)]
    attrs = [torch.from_numpy(a) for a in (data.name, data.color, data.texture, data.background)]
    for i in range(4):
        texts = variants[i, : counts[i]]
        assert captions.positives(texts, *attrs)[i].all()
    gen = torch.Generator().manual_seed(0)
    picks = torch.stack([Captions.sample(variants, counts, gen) for _ in range(200)])
    assert all(len(set(picks[:, i].tolist())) == counts[i] for i in range(4))  # every variant gets drawn


def test_loss_is_clip_loss_when_every_caption_is_unique():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    scale = torch.tensor(10.0)
    ours = contrastive_loss(image, text, torch.eye(6, dtype=torch.bool), scale, torch.arange(6))
    logits = scale * image @ text.T
    clip = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6)))
    assert torch.allclose(ours, clip)


def test_duplicate_captions_are_not_negatives():
    # two crops of mugs and one cup, each perfectly aligned with its caption's text
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    unique_text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # "mug", "cup"
    pos = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.bool)
    scale = torch.tensor(30.0)
    aware = contrastive_loss(image, unique_text, pos, scale, torch.tensor([0, 1]))
    # label-aware targets: this is the optimum; the loss is only the entropy of the targets (the "mug" column
    # shares its mass between the two mugs: 0.5 * mean(0, log 2))
    assert abs(float(aware) - 0.5 * (0.0 + 0.5 * np.log(2))) < 1e-4
    # identity targets over a text per image ("mug" twice) cannot reach it: each mug is a negative of the other
    naive = contrastive_loss(image, image.clone(), torch.eye(3, dtype=torch.bool), scale, torch.arange(3))
    assert naive > aware + 0.25


def test_training_and_held_out_worlds_never_share_a_seed():
    train_seeds = {(j.preset, j.seed) for s in range(3) for j in training_jobs(s, 50, 1)}
    held = {(j.preset, j.seed) for j in heldout_jobs(50)}
    assert not train_seeds & held
    assert len(train_seeds) == 3 * 50 * 5


def test_trained_model_is_an_open_clip_local_dir_loaded_by_the_encoder(tmp_path):
    data = _crop_set([("mug", "red", "plain", False), ("apple", "green", "speckled", False),
                      ("wall", "white", "plain", True), (None, "", "", False)] * 4)
    model, log = train(data, seed=0, epochs=2, batch_size=8, lr=1e-3, model_cfg=MINI_CFG, log=lambda _: None)
    assert log["steps"] == 4 and np.isfinite(log["loss_last20"])
    save_local_dir(model, tmp_path / "tiny", MINI_CFG)
    config = json.loads((tmp_path / "tiny" / "open_clip_config.json").read_text())
    assert config["model_cfg"] == MINI_CFG and config["preprocess_cfg"]["size"] == 16
    enc = load_encoder(f"openclip:local-dir:{tmp_path / 'tiny'}", device="cpu")
    assert enc.input_size == 16 and enc.dim == 16
    with torch.no_grad():  # the stored fp16 weights reproduce the trained model up to fp16 rounding
        ref = F.normalize(model.encode_text(open_clip.SimpleTokenizer(context_length=12)(["red mug"])), dim=-1)
    assert torch.allclose(enc.encode_text(["red mug"]), ref, atol=2e-2)


def test_world_crops_label_exact_and_segmenter_masks():
    data = world_crops(WorldJob("figurines", 5, 1, segmenter_crops=True, blur=False))
    names = vocabulary_names()
    assert data.crops.shape[1:] == (INPUT_SIZE, INPUT_SIZE, 3) and data.crops.dtype == np.uint8
    exact, seg = data.source == 0, data.source == 1
    assert exact.sum() > 5 and seg.sum() > 0
    assert (data.name[exact] >= 0).all() and set(data.level[exact].tolist()) <= {0, 1, 2}
    assert (data.level[data.name < 0] == -1).all()  # generic crops have no level
    assert {names[i] for i in data.name[exact & (data.level == 2) & data.background]} <= {"table", "floor", "wall"}
    assert (data.crops.reshape(len(data.crops), -1).max(1) > 0).all()  # every crop shows something
    assert MIN_CROP_PIXELS == 64


def test_training_is_reproducible_from_its_seed():
    data = _crop_set([("mug", "red", "plain", False), ("apple", "green", "speckled", False),
                      ("wall", "white", "plain", True), (None, "", "", False)] * 4)
    runs = [train(data, seed=s, epochs=1, batch_size=8, lr=1e-3, model_cfg=MINI_CFG, log=lambda _: None)[0]
            for s in (3, 3, 4)]
    a, b, c = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_user_mistakes_are_gags_errors(tmp_path):
    from gags.config import TrainEncoderConfig
    from gags.errors import GagsError
    from gags.models.train_tinyclip import run

    with pytest.raises(GagsError, match="open_clip_config.json"):
        run(TrainEncoderConfig(eval_only=True, weights=tmp_path))
    with pytest.raises(GagsError, match="--worlds"):
        run(TrainEncoderConfig(out=tmp_path, worlds=0))
    with pytest.raises(GagsError, match="--seed"):
        run(TrainEncoderConfig(out=tmp_path, seed=999))


class _OracleEncoder:
    """Text i of the vocabulary (and each generic phrase) is the i-th axis; image b scores 1 for its chosen name and
    0.5 for its runner-up."""

    def __init__(self, predicted: list[tuple[str, str]]) -> None:
        self.axes = vocabulary_names() + list(GENERIC)
        self.predicted = predicted

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.one_hot(torch.tensor([self.axes.index(t) for t in texts]), len(self.axes)).float()

    def encode_images(self, crops: np.ndarray) -> torch.Tensor:
        assert len(crops) == len(self.predicted)
        first, second = zip(*self.predicted)
        return self.encode_text(list(first)) + 0.5 * self.encode_text(list(second))


def test_evaluation_counts_hits_and_the_level_of_every_miss():
    from gags.models.train_tinyclip import evaluate

    truth = ["mug", "mug", "apple", "apple", "mug handle"]
    predicted = [("mug", "apple"), ("mug body", "mug"), ("apple", "mug"), ("mug", "apple"), ("mug handle", "mug")]
    data = _crop_set([(t, "red", "plain", False) for t in truth])
    data.level = np.array([2, 2, 2, 2, 1])
    metrics = evaluate(_OracleEncoder(predicted), data)
    # among all names: two of the four wholes are missed, one to a part ("mug body"), one to another whole
    assert metrics["whole"]["n"] == 4 and metrics["whole"]["top1_all_names"] == 0.5
    assert metrics["whole"]["misses_to"] == {"subpart": 0, "part": 1, "whole": 1}
    # among whole names only, "mug body" is no candidate and its runner-up "mug" is right
    assert metrics["whole"]["top1_level_names"] == 0.75
    assert metrics["part"]["top1_all_names"] == 1.0 and sum(metrics["part"]["misses_to"].values()) == 0


def test_defaults_reproduce_the_shipped_tiny_clip():
    """`gags train-encoder` without options trains the model the package ships (same data, schedule, architecture)."""
    from gags.config import TrainEncoderConfig
    from gags.models.specs import TINY_CLIP_DIR
    from gags.models.train_tinyclip import MODEL_CFG

    shipped = json.loads((TINY_CLIP_DIR / "training.json").read_text())
    config = TrainEncoderConfig()
    assert (config.seed, config.worlds, config.views, config.epochs, config.batch_size, config.lr) == (
        shipped["seed"], shipped["worlds_per_preset"], shipped["views_per_world"], shipped["epochs"],
        shipped["batch_size"], shipped["lr"])
    assert config.eval_worlds == shipped["heldout"]["worlds_per_preset"]
    assert json.loads((TINY_CLIP_DIR / "open_clip_config.json").read_text())["model_cfg"] == MODEL_CFG
