"""``gags bench ladder``: features that are exactly the query on the label's own mask score the label's figures (R2 =
R0); a field decoded from the same features as the segments scores what the segments score (R3 = R2); a procedural
scene gets the exact-mask rung (R1) and the coverage of labelled pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.bench.ladder import READINGS, average_relevancy, level_relevancy, run, table_rows
from gags.config import BenchLadderConfig
from gags.data.features import write_language_features
from gags.data.labels import load_labels
from gags.errors import GagsError
from gags.query.render import load_geometry
from gags.splat import rasterize
from gags.workspace import Workspace
from tests import handmade_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ladder(out: Path, encoder_dir: Path, **kwargs) -> dict:
    return run(BenchLadderConfig(out=out, encoder=f"openclip:local-dir:{encoder_dir}", **kwargs))


def test_level_relevancy_reads_each_pixels_segment():
    table = torch.eye(3)  # three segments whose features are the axes
    seg = torch.tensor([[[0, 1], [-1, 2]], [[0, 0], [1, -1]], [[2, 2], [2, 2]]])  # [3 levels, 2, 2]
    query, canon = torch.eye(3)[:1], torch.eye(3)[1:2]  # query = segment 0, canonical phrase = segment 1
    rel = level_relevancy(table, seg, query, canon)  # [1, 3, 2, 2]
    assert rel.shape == (1, 3, 2, 2)
    assert rel[0, 0, 1, 0] == 0 and rel[0, 1, 1, 1] == 0  # no segment: relevancy 0
    assert rel[0, 0, 0, 0] > 0.99 and rel[0, 0, 0, 1] < 0.01  # the query's own segment, then the canonical one's
    avg = average_relevancy(table, seg, query, canon)
    assert avg.shape == (1, 2, 2) and torch.all(avg >= 0) and avg[0, 0, 0] > avg[0, 0, 1]


def test_a_view_without_any_segment_has_relevancy_zero():
    """A segmenter may keep no mask of a view (its _f table is empty): every reading is 0, nothing fails."""
    table = torch.zeros(0, 3)
    seg = torch.full((3, 2, 2), -1)
    query, canon = torch.eye(3)[:1], torch.eye(3)[1:2]
    assert torch.equal(level_relevancy(table, seg, query, canon), torch.zeros(1, 3, 2, 2))
    assert torch.equal(average_relevancy(table, seg, query, canon), torch.zeros(1, 2, 2))


def test_features_that_are_the_query_on_the_labels_score_the_labels(query_out, encoder_dir, tmp_path):
    """One label per frame; its mask is the segment at every level and its feature the label's own text embedding:
    every reading of R2 is an affine image of the label mask, so it scores R0's figures (up to float rounding: the
    box filter of a binary mask puts whole rows of pixels exactly on the protocol's threshold, where the last bit of
    the relevancy decides; measured: at most 0.8 mIoU points apart)."""
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    for i in handmade_scene.LABELLED:
        cam = handmade_scene.cameras()[i]
        label = handmade_scene.label_json(cam, cam.name, categories=("bowl",))
        (labels_dir / f"{Path(cam.name).stem}.json").write_text(json.dumps(label))
    frames = load_labels(labels_dir)
    bowl = handmade_scene.phrase_embeddings(encoder_dir)[:1].numpy()
    ws = Workspace(query_out)
    for name, frame in frames.items():
        seg = np.where(frame.masks["bowl"], 0, -1).astype(np.int32)
        write_language_features(ws.features_dir, frame.image_name, bowl.astype(np.float16), np.stack([seg] * 4))
    record = ladder(query_out, encoder_dir, labels=labels_dir, protocol_min_side=0)
    for split, entry in record["splits"].items():
        r0 = entry["R0"]
        assert r0["loc_acc"] == 1.0 and r0["miou"] > 0.5
        for reading in READINGS:
            if reading == "own":  # the hand-made scene's queries carry no level
                assert entry["R2"]["own"]["n_queries"] == 0
                continue
            got = entry["R2"][reading]
            assert got["miou"] == pytest.approx(r0["miou"], abs=0.02), (split, reading)
            assert got["loc_acc"] == r0["loc_acc"], (split, reading)
        assert entry["coverage"]["3"] == 1.0  # every labelled pixel has a segment at all three levels
        assert "R1" not in entry  # no id maps: not a procedural scene
    assert any("R1" in note for note in record["notes"])
    assert json.loads(ws.bench_file("ladder").read_text())["splits"].keys() == record["splits"].keys()


def test_a_field_and_the_segments_of_its_own_features_score_alike(query_out, encoder_dir):
    """Segments made from the hand-made gags field (each pixel's segment: the phrase its rendered Gaussians decode
    to) score as the field does: R3 keeps what R2 holds."""
    ws = Workspace(query_out)
    scene = ws.load_scene()
    geometry = load_geometry(query_out)
    splats, owner = handmade_scene.scene_gaussians()
    onehot = handmade_scene.one_hot_features(owner)
    emb = handmade_scene.phrase_embeddings(encoder_dir).numpy().astype(np.float16)
    for cam in scene.cameras:
        rendered, alpha, _ = rasterize(geometry.means, geometry.quats, geometry.scales, geometry.opacities, onehot,
                                       cam.world_to_cam, cam.K, cam.width, cam.height)
        phrase = rendered.argmax(-1).numpy().astype(np.int32)
        phrase[alpha[..., 0].numpy() < 0.5] = -1
        write_language_features(ws.features_dir, cam.name, emb, np.stack([phrase] * 4))
    record = ladder(query_out, encoder_dir, methods=("gags",))
    for split, entry in record["splits"].items():
        r2, r3 = entry["R2"]["pick"], entry["R3"]["gags"]
        assert r3["target"] == "pick"
        assert r3["loc_acc"] == r2["loc_acc"], split
        assert abs(r3["miou"] - r2["miou"]) < 0.03, (split, r3["miou"], r2["miou"])  # only edge pixels differ
        assert r3["kept"]["loc_acc"] == pytest.approx(1.0)


def test_a_procedural_scene_gets_every_rung(demo_run, encoder_dir, tmp_path, capsys):
    out = Path(shutil.copytree(demo_run[0], tmp_path / "demo"))
    record = ladder(out, encoder_dir)
    for entry in record["splits"].values():
        assert set(entry) >= {"R0", "R1", "R2", "R3", "coverage"}
        assert set(entry["R1"]) == set(READINGS) and entry["R1"]["own"]["n_queries"] == entry["R0"]["n_queries"]
        # the oracle reading is the best of the three levels per query
        for reading in ("level-s", "level-m", "level-l"):
            assert entry["R1"]["best"]["miou"] >= entry["R1"][reading]["miou"] - 1e-12
            assert entry["R2"]["best"]["loc_acc"] >= entry["R2"][reading]["loc_acc"]
        assert entry["R0"]["miou"] >= entry["R1"]["best"]["miou"] - 0.05
        assert sum(entry["coverage"].values()) == pytest.approx(1.0)
        assert set(entry["R3"]) == {"gags", "avg", "lift", "lift-consistent"} and "kept" in entry["R3"]["avg"]
    printed = capsys.readouterr().out
    assert "exact masks, own" in printed and "field gags" in printed
    # how each field was made (the miniature demo distils 10 iterations from zeros at the CPU's downscale, loss
    # averaged over pixels as on any CPU, the decoders in bfloat16 where this CPU has it natively)
    from gags.field import native_bfloat16

    precision = "bfloat16" if native_bfloat16() else "float32"
    assert record["fields"]["gags"] == {"init": "zero", "iterations": 10, "downscale": 1.0, "region_aware": False,
                                        "precision": precision}
    assert record["fields"]["lift"] == {"init": None, "iterations": None, "downscale": None, "region_aware": None,
                                        "precision": None}
    from gags.bench.ladder import kept_markdown

    record["fields"]["gags"]["precision"] = "bfloat16"
    table = kept_markdown([record, record])
    assert table.count("| demo | gags | zero, 10, 1, pixels, bfloat16 |") == 2
    assert "| demo | lift | training-free |" in table
    for key in ("region_aware", "precision"):  # a record from before the options: region-aware, float32
        del record["fields"]["gags"][key]
    assert "| demo | gags | zero, 10, 1, regions |" in kept_markdown([record])
    # how the segments were made, and scenes segmented in different ways side by side
    from gags.bench.ladder import segments_markdown

    settings = Workspace(out).segment_settings()
    assert record["segments"] == {k: settings[k] for k in ("segmenter", "prompts", "pred_iou_thresh",
                                                             "stability_thresh", "mask_nms_score", "min_region_area")}
    assert settings["min_region_area"] is None  # the default: the release's 100 px scaled to the image
    off = json.loads(json.dumps(record))
    off["segments"].update(segmenter="tinysam", pred_iou_thresh=0.0, stability_thresh=0.0, min_region_area=4)
    older = json.loads(json.dumps(record))  # a record from before min_region_area was recorded: 100 px then
    del older["segments"]["min_region_area"]
    exact = json.loads(json.dumps(record))
    exact["segments"]["segmenter"] = "exact"
    rows = segments_markdown([record, off, older, exact], ["demo"] * 4).splitlines()[2:]
    test = record["splits"]["test"]
    own = f"{100 * test['R2']['own']['miou']:.1f} / {100 * test['R2']['own']['loc_acc']:.1f}"
    assert rows[0].startswith(f"| demo | {settings['segmenter']}, filters on, small regions: scaled | {own} |")
    assert rows[1].startswith(f"| demo | tinysam, filters off, small regions: 4 px | {own} |")
    assert rows[2].startswith(f"| demo | {settings['segmenter']}, filters on, small regions: 100 px | {own} |")
    assert rows[3].startswith(f"| demo | exact (every entity, no prompts, no filters) | {own} |")
    assert rows[0].endswith(f"| {100 * record['splits']['train']['coverage']['3']:.1f}% / "
                            f"{100 * test['coverage']['3']:.1f}% |")
    # the report shows the ladder
    from gags.report import write_report

    page = write_report(out).read_text()
    section = page[page.index('<section id="ladder">'):]
    section = section[: section.index("</section>")]
    assert "exact masks, own" in section and "field avg" in section and "kept" in section


def test_the_exact_segmenters_segments_are_the_exact_rung(demo_run, encoder_dir, tmp_path):
    """``gags segment --segmenter exact`` writes the segments R1 reads: R2 then scores R1's figures, every reading."""
    from gags.config import SegmentConfig
    from gags.segment.extract import run as segment

    out = Path(shutil.copytree(demo_run[0], tmp_path / "demo"))
    shutil.rmtree(Workspace(out).fields_dir)  # fields of the previous segments: not read here
    segment(SegmentConfig(out=out, segmenter="exact", encoder=f"openclip:local-dir:{encoder_dir}", overwrite=True))
    record = ladder(out, encoder_dir)
    assert record["segments"]["segmenter"] == "exact"
    for split, entry in record["splits"].items():
        for reading in READINGS:
            r1, r2 = entry["R1"][reading], entry["R2"][reading]
            assert r2 == r1, (split, reading)


def test_not_an_output_folder(tmp_path, encoder_dir):
    with pytest.raises(GagsError, match="is not a scene output folder"):
        ladder(tmp_path, encoder_dir)


def test_a_langsplat_field_is_also_read_against_its_own_autoencoder(demo_run, encoder_dir, tmp_path):
    """LangSplat's target is the segment features as its autoencoder reproduces them: the ladder reads them (R2
    ``langsplat codes``) as it would read a folder whose segment features were replaced by their reconstructions."""
    from gags.bench.ladder import through_autoencoder
    from gags.config import DistillConfig
    from gags.data.features import read_language_features
    from gags.distill.train import run as distill
    from gags.field import LanguageField

    out = Path(shutil.copytree(demo_run[0], tmp_path / "demo"))
    distill(DistillConfig(out=out, method="langsplat", iterations=3, ae_epochs=2, init="zero", threads=1,
                          encoder=f"openclip:local-dir:{encoder_dir}"))
    record = ladder(out, encoder_dir, methods=("langsplat",))
    ws = Workspace(out)
    autoencoder = LanguageField.load(ws.field_file("langsplat")).autoencoder
    assert autoencoder is not None
    # the same folder with every segment feature replaced by its reconstruction, and no field
    coded = Path(shutil.copytree(demo_run[0], tmp_path / "coded"))
    cws = Workspace(coded)
    for path in sorted(cws.features_dir.glob("*_f.npy")):
        name = path.name.replace("_f.npy", ".png")
        feats, seg = read_language_features(cws.features_dir, name)
        table = through_autoencoder(autoencoder, torch.from_numpy(feats.astype(np.float32)))
        write_language_features(cws.features_dir, name, table.numpy().astype(np.float32), seg)
    shutil.rmtree(coded / "field")
    plain = ladder(coded, encoder_dir)
    for split, entry in record["splits"].items():
        codes = entry["R2 codes"]["langsplat"]
        assert codes == pytest.approx(plain["splits"][split]["R2"]["pick"])
        r3 = entry["R3"]["langsplat"]
        assert r3["kept_codes"]["miou"] == pytest.approx(r3["miou"] / codes["miou"])
    assert "langsplat codes, pick" in [label for _, label, _ in table_rows(record)]
