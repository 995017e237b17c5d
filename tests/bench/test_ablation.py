"""``gags bench ablation``: the tables' arithmetic on hand-made runs, and a miniature benchmark end to end (one preset,
two seeds, a subset of methods, tiny images and iterations) whose tables are checked against the per-run metrics.json
files, then rerun to check that finished runs are skipped."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from gags.bench import ablation
from gags.bench.ablation import ALL_PRESETS, Row, aggregate, mean_std, metrics_path, plan_rows
from gags.config import BenchAblationConfig
from gags.errors import GagsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mean_std_is_the_sample_standard_deviation():
    stat = mean_std([0.1, 0.3, 0.8])
    assert stat["mean"] == pytest.approx(0.4)
    assert stat["std"] == pytest.approx(math.sqrt(((0.1 - 0.4) ** 2 + (0.3 - 0.4) ** 2 + (0.8 - 0.4) ** 2) / 2))
    assert stat["n"] == 3
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1, "values": [0.5]}
    assert mean_std([])["mean"] is None


def _run(preset, seed, row, split, miou, loc):
    return {"preset": preset, "seed": seed, "row": row.key, "split": split, "miou": miou, "loc_acc": loc}


def test_aggregate_over_seeds_and_presets():
    gags, avg = Row("gas", "gags"), Row("gas", "avg")
    runs = [
        _run("ramen", 0, gags, "test", 0.2, 0.5), _run("ramen", 1, gags, "test", 0.4, 0.7),
        _run("teatime", 0, gags, "test", 0.6, 0.1), _run("teatime", 1, gags, "test", 0.8, 0.3),
        _run("ramen", 0, avg, "test", 0.1, 0.2),  # avg: one seed of one preset only
        _run("ramen", 0, gags, "train", 0.9, 1.0),
    ]
    table = aggregate(runs, ["ramen", "teatime"], [gags, avg])
    cell = table[gags.key]["ramen"]["test"]
    assert cell["miou"]["mean"] == pytest.approx(0.3) and cell["miou"]["std"] == pytest.approx(math.sqrt(0.02))
    assert cell["loc_acc"]["values"] == [0.5, 0.7]
    # over presets: per seed the mean over presets (0.4 and 0.6), then over seeds
    every = table[gags.key][ALL_PRESETS]["test"]["miou"]
    assert every["values"] == pytest.approx([0.4, 0.6]) and every["std"] == pytest.approx(math.sqrt(0.02))
    assert table[gags.key][ALL_PRESETS]["train"]["miou"]["n"] == 0  # seed 0 has no teatime training figure
    assert table[avg.key]["ramen"]["test"]["miou"] == {"mean": 0.1, "std": None, "n": 1, "values": [0.1]}
    assert table[avg.key][ALL_PRESETS]["test"]["miou"]["mean"] is None


def test_sign_test_is_the_exact_binomial_tail():
    assert ablation.sign_test(0, 0) == 1.0 and ablation.sign_test(3, 3) == 1.0
    assert ablation.sign_test(5, 0) == pytest.approx(2 / 32)  # 5 of 5 one way: 2 x 0.5^5
    assert ablation.sign_test(1, 9) == ablation.sign_test(9, 1) == pytest.approx(2 * 11 / 1024)


def test_paired_tests_match_queries_across_rows_presets_and_seeds(tmp_path):
    gags, avg = Row("gas", "gags"), Row("gas", "avg")

    def metrics(row: Row, preset: str, seed: int, ious: list[float], hits: list[bool]) -> dict:
        path = tmp_path / preset / f"seed{seed}" / row.method / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        queries = [{"frame": f"f{i // 2}", "label": f"q{i % 2}", "iou": iou, "hit": hit}
                   for i, (iou, hit) in enumerate(zip(ious, hits, strict=True))]
        path.write_text(json.dumps({"queries": queries}))
        return {**_run(preset, seed, row, "test", 0.0, 0.0), "metrics": str(path.relative_to(tmp_path))}

    runs = [metrics(gags, "ramen", 0, [0.5, 0.4, 0.0, 0.2], [True, True, False, False]),
            metrics(avg, "ramen", 0, [0.1, 0.4, 0.3, 0.1], [False, True, True, False]),
            metrics(gags, "teatime", 0, [0.9, 0.8], [True, True]),
            metrics(avg, "teatime", 0, [0.2, 0.1], [False, False]),
            metrics(avg, "teatime", 1, [0.7, 0.7], [True, True])]  # no GaD run to pair with: left out
    table = ablation.paired_tests(tmp_path, runs, [gags, avg])
    stats = table["record"][avg.key]["test"]
    assert stats["queries"] == 6
    assert stats["mean_iou_difference"] == pytest.approx((0.4 + 0 - 0.3 + 0.1 + 0.7 + 0.7) / 6)
    assert stats["iou_higher"] == [4, 1] and stats["iou_p"] == pytest.approx(ablation.sign_test(4, 1))
    assert stats["localized_only"] == [3, 1]
    assert table["record"][avg.key]["train"]["queries"] == 0 and len(table["rows"]) == 1


def test_figures_per_query_granularity_and_final_granularity(tmp_path):
    queries = [{"label": "bowl", "iou": 0.5, "hit": True}, {"label": "bowl", "iou": 0.1, "hit": False},
               {"label": "egg yolk", "iou": 0.3, "hit": True}, {"label": "unknown", "iou": 1.0, "hit": True}]
    levels = {"bowl": "whole", "egg yolk": "subpart"}
    got = ablation.by_query_level(queries, levels)
    assert got["miou_whole"] == pytest.approx(0.3) and got["loc_acc_whole"] == 0.5
    assert got["miou_subpart"] == pytest.approx(0.3) and got["loc_acc_subpart"] == 1.0
    assert got["miou_part"] is None and got["loc_acc_part"] is None

    curves = tmp_path / "curves.json"
    assert ablation.final_granularity(curves) is None
    history = [{"granularity": [0.2, 0.3, 0.5]}, {"granularity": [0.0, 0.1, 0.9]}, {"granularity": [0.0, 0.0, 0.0]}]
    curves.write_text(json.dumps({"history": history}))
    assert ablation.final_granularity(curves) == [0.0, 0.1, 0.9]  # the last step had no pixel to train


def test_rows_and_user_errors(tmp_path):
    rows = plan_rows(BenchAblationConfig(methods=("gags", "langsplat"), uniform_methods=("avg",),
                                 variants=("no-entropy",)))
    assert [r.key for r in rows] == ["gas/gags", "gas/langsplat", "uniform/avg", "gas/gags/no-entropy"]
    assert rows[-1].folder == "gas-no-entropy"
    assert rows[-1].switches() == {"region_aware": True, "entropy": False, "consistency": True}
    with pytest.raises(GagsError, match="unknown method"):
        plan_rows(BenchAblationConfig(methods=("best",)))
    with pytest.raises(GagsError, match="unknown variant"):
        plan_rows(BenchAblationConfig(variants=("no-loss",)))
    with pytest.raises(GagsError, match="unknown preset"):
        ablation.run(BenchAblationConfig(out=tmp_path, presets=("moon",)))
    ablation._check_settings(tmp_path, ablation.settings_of(BenchAblationConfig()))
    with pytest.raises(GagsError, match="other settings"):
        ablation.run(BenchAblationConfig(out=tmp_path, resolution=96))


def test_share_inputs_links_what_the_stages_read(tmp_path):
    src, dst = tmp_path / "gas", tmp_path / "seed0" / "gas-no-entropy"
    (src / "language_features").mkdir(parents=True)
    (src / "segment").mkdir()
    for name in ("scene.json", "gaussians.ply", "points3D.ply", "segment/config.json"):
        (src / name).write_text(name)
    ablation.share_inputs(src, dst, features=True)
    ablation.share_inputs(src, dst, features=True)  # again: links are replaced, not an error
    assert not (dst / "scene.json").is_symlink() and (dst / "scene.json").read_text() == "scene.json"
    for name in ("gaussians.ply", "points3D.ply", "language_features", "segment/config.json"):
        assert (dst / name).is_symlink() and (dst / name).resolve() == (src / name).resolve()


# ----------------------------------------------------------------------------------------------------------------------


def miniature(out: Path, encoder_dir: Path) -> BenchAblationConfig:
    return BenchAblationConfig(out=out, presets=("ramen",), seeds=2, resolution=32, views=6,
                       reconstruct_iterations=20, max_gaussians=2000, distill_iterations=8, distill_init="zero",
                       methods=("gags", "avg"),
                       uniform_methods=("gags",), variants=("no-entropy",), encoder=f"openclip:local-dir:{encoder_dir}",
                       figures=False, protocol_min_side=0)


@pytest.mark.slow
def test_miniature_ablation_tables_match_the_runs_and_resume(tmp_path, encoder_dir, capsys):
    out = tmp_path / "bench"
    config = miniature(out, encoder_dir)
    record = ablation.run(config)
    rows = plan_rows(config)
    assert len(record["ran"]) == 2 * (1 + 1 + 2 + 2 * len(rows)) and record["skipped"] == []

    written = json.loads((out / "ablation.json").read_text())
    md = (out / "ablation.md").read_text()
    tables = written["tables"]
    assert set(tables) == {"table1", "table2", "table4", "table6", "levels", "granularity", "paired"}
    # every other row paired with GaS + GaD on the queries of both seeds
    n_queries = sum(len(json.loads(metrics_path(out, "ramen", s, Row("gas", "gags"), "test").read_text())["queries"])
                    for s in (0, 1))
    assert [r[0] for r in tables["paired"]["rows"]] == [r.label() for r in rows if r.key != "gas/gags"]
    assert all(int(r[1]) == n_queries for r in tables["paired"]["rows"])
    assert "## Paired per query" in md
    assert [r[0] for r in tables["granularity"]["rows"]] == [r.label() for r in rows if r.method == "gags"]
    assert tables["granularity"]["header"] == ["method", "ramen seed0", "ramen seed1"]
    assert len(tables["levels"]["rows"]) == len(rows) and len(tables["levels"]["header"]) == 7
    assert tables["table1"]["header"] == ["method", "ramen held-out", "ramen train", "mean held-out", "mean train"]
    assert [r[0] for r in tables["table1"]["rows"]] == [Row("gas", "gags").label(), Row("gas", "avg").label()]
    assert [r[:2] for r in tables["table4"]["rows"]] == [["✓", "average of the levels"], ["✗", "GaD (gags)"],
                                                         ["✓", "GaD (gags)"]]
    assert [r[:3] for r in tables["table6"]["rows"]] == [["✓", "✓", "✓"], ["✓", "✗", "✓"]]
    assert len(written["runs"]) == 2 * len(rows) * 2  # seeds x rows x splits

    for row in rows:
        for split in ("test", "train"):
            for metric in ("miou", "loc_acc"):
                values = [json.loads(metrics_path(out, "ramen", s, row, split).read_text())[metric] for s in (0, 1)]
                mean = sum(values) / 2
                std = math.sqrt(sum((v - mean) ** 2 for v in values))  # n - 1 = 1
                for preset in ("ramen", ALL_PRESETS):  # one preset: the mean over presets is that preset
                    cell = written["results"][row.key][preset][split][metric]
                    assert cell["values"] == pytest.approx(values)
                    assert cell["mean"] == pytest.approx(mean) and cell["std"] == pytest.approx(std)
    # figures per query granularity, from the per-query lists and the scene's queries.json
    for level in ("whole", "part", "subpart"):
        values = []
        for seed in (0, 1):
            levels = {q["text"]: q["level"] for q in json.loads(
                (out / "ramen" / f"seed{seed}" / "scene" / "queries.json").read_text())["queries"]}
            queries = json.loads(metrics_path(out, "ramen", seed, Row("gas", "gags"), "test").read_text())["queries"]
            hits = [q["hit"] for q in queries if levels[q["label"]] == level]
            if hits:
                values.append(sum(hits) / len(hits))
        assert written["results"]["gas/gags"]["ramen"]["test"][f"loc_acc_{level}"]["values"] == pytest.approx(values)
    # the Markdown shows the same numbers, in percent
    gags_test = written["results"]["gas/gags"]["ramen"]["test"]["loc_acc"]
    first = next(line for line in md.splitlines() if line.startswith(f"| {Row('gas', 'gags').label()} |"))
    assert first.split(" | ")[1] == f"{100 * gags_test['mean']:.1f} ± {100 * gags_test['std']:.1f}"

    finished = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    capsys.readouterr()
    again = ablation.run(config)
    assert again["ran"] == [] and len(again["skipped"]) == len(record["ran"])
    assert "done already" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == finished
    assert json.loads((out / "ablation.json").read_text())["results"] == written["results"]


def test_ablation_on_ray_gives_the_serial_tables_and_resumes(tmp_path, encoder_dir, ray_head):
    """(preset, seed) runs as tasks of a real local Ray cluster (2 CPUs: both seeds at once): the same figures as a
    serial run, and a rerun finds everything done."""
    serial = ablation.run(dataclasses.replace(miniature(tmp_path / "serial", encoder_dir), variants=()))
    config = dataclasses.replace(miniature(tmp_path / "ray", encoder_dir), variants=(), ray=ray_head)
    on_ray = ablation.run(config)
    assert sorted(on_ray["ran"]) == sorted(serial["ran"])
    assert on_ray["results"] == serial["results"]
    timings = json.loads((tmp_path / "ray" / ablation.TIMINGS_FILE).read_text())["seconds"]
    assert set(timings) == set(serial["ran"])  # merged on the driver from both tasks
    again = ablation.run(config)
    assert again["ran"] == [] and sorted(again["skipped"]) == sorted(serial["ran"])
