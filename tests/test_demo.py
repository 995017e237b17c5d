"""``gags demo`` chains every stage: run it end to end on a very small scene (random-weights CLIP of open_clip's
architecture, so the test does not depend on the shipped tiny CLIP; the session's one run, ``demo_run`` in
conftest.py), then check that a rerun resumes."""

import dataclasses
import json
import shutil

import pytest

from gags.cli import main
from gags.config import DemoConfig
from gags.demo import run
from gags.errors import GagsError


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(demo_run, tmp_path, small_demo, capsys):
    shared, summary = demo_run
    out = shutil.copytree(shared, tmp_path / "demo")  # the rerun below rewrites demo.json and the report
    for path in ("scene/transforms.json", "gaussians.ply", "reconstruct/metrics.json", "segment/timings.json",
                 "field/gags/field.safetensors", "field/avg/field.safetensors", "field/lift/field.safetensors",
                 "field/lift-consistent/field.safetensors", "eval/gags/test/metrics.json",
                 "eval/avg/train/metrics.json", "bench/ladder.json", "demo.json"):
        assert (out / path).is_file(), path
    assert set(summary["eval"]) == {"gags", "avg", "lift", "lift-consistent"}
    for splits in summary["eval"].values():
        for m in splits.values():
            assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["loc_acc"] <= 1.0
    timings = json.loads((out / "demo.json").read_text())["seconds"]
    methods = ("gags", "avg", "lift", "lift-consistent")
    assert set(timings) == {"synth", "reconstruct", "segment", *(f"distill {m}" for m in methods),
                            *(f"eval {m}" for m in methods), "ladder"}

    capsys.readouterr()
    run(small_demo(out))  # everything is done: every stage is skipped
    printed = capsys.readouterr().out
    assert printed.count("done already") == 12

    # one more baseline: its field is distilled and evaluated, the ladder measured again; nothing else reruns
    more = run(dataclasses.replace(small_demo(out), baselines=("avg", "lift", "lift-consistent", "level-s")))
    printed = capsys.readouterr().out
    assert printed.count("done already") == 11
    assert "level-s" in more["eval"] and "test" in more["eval"]["level-s"]
    assert "level-s" in json.loads((out / "bench" / "ladder.json").read_text())["methods"]


def test_unknown_baseline_is_a_user_error(tmp_path, capsys):
    with pytest.raises(GagsError, match="unknown baseline"):
        run(DemoConfig(out=tmp_path, baselines=("best",)))
    # on the command line the choices come from the method registry: a usage error (exit 2) that lists them
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", str(tmp_path), "--baselines", "best"])
    assert exit_.value.code == 2
    assert "level-s" in capsys.readouterr().err


def test_the_spread_over_seeds_is_the_mean_and_range_of_the_records():
    from gags.demo import spread_markdown

    def record(seed: int, miou: float, seconds: float) -> dict:
        return {"seed": seed, "total_seconds": seconds,
                "eval": {"gags": {"train": {"miou": miou, "loc_acc": 0.5}, "test": {"miou": miou / 2, "loc_acc": 0.25}}}}

    table = spread_markdown([record(0, 0.2, 120.0), record(1, 0.4, 180.0)])
    assert "| gags | 30.0% (20.0-40.0) | 50.0% (50.0-50.0) | 15.0% (10.0-20.0) | 25.0% (25.0-25.0) |" in table
    assert "over 2 runs (`--seed` 0, 1), segmenter `hierarchy`" in table and "2.0-3.0 min" in table
    exact = [{**record(2, 0.5, 120.0), "segmenter": "exact"}]
    assert "segmenter `exact`" in spread_markdown(exact)
