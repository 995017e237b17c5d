"""``gags bench query`` on the hand-made OUT of tests/query: the JSON's keys, positive times, the ratio, and errors."""

from __future__ import annotations

import json
import shutil
import typing

import pytest

from gags.bench.query import PARTS, run
from gags.cli import main
from gags.config import BenchMaskNmsConfig, BenchQueryConfig, BenchRasterizeConfig
from gags.errors import GagsError
from tests.handmade_scene import LABELLED

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bench(out, encoder_dir, **kwargs) -> BenchQueryConfig:
    return BenchQueryConfig(out=out, encoder=f"openclip:local-dir:{encoder_dir}", repeats=1, **kwargs)


def test_query_bench_writes_times_and_ratio(query_out, encoder_dir, capsys):
    from tests import handmade_scene

    handmade_scene.write_field(query_out, "avg", encoder_dir)  # any other field of OUT is timed beside them
    # through the command line: the scene folder is the positional argument
    code = main(["bench", "query", str(query_out), "--encoder", f"openclip:local-dir:{encoder_dir}", "--repeats", "1"])
    assert code == 0
    written = json.loads((query_out / "bench" / "query.json").read_text())
    assert "ratio" in capsys.readouterr().out
    assert written["ratio"] == pytest.approx(written["langsplat_s"] / written["gags_s"], rel=1e-12)
    for key in ("gags_s", "langsplat_s", "ratio", "breakdown", "query_3d", "n_frames", "n_queries", "torch_threads",
                "cpu_count", "load_average_before", "langsplat_one_render_s", "text_encode_s",
                "ratio_render_resolution", "protocol_resolution"):
        assert key in written, key
    # every labelled view (two training views and the held-out one) with its two labels
    assert written["n_frames"] == len(LABELLED)
    assert written["n_queries"] == 2 * len(LABELLED)
    assert written["torch_threads"] == 1
    assert written["gags_s"] > 0 and written["langsplat_s"] > 0
    # 128 x 96 labels: localization and mask on maps upsampled to 720 px, as gags eval does
    assert written["protocol_resolution"] == [[720, 540]]
    breakdown = written["breakdown"]
    assert set(breakdown) == {"gags", "langsplat", "langsplat_one_render", "gags_render_resolution",
                              "langsplat_render_resolution", "avg"}
    for name, b in breakdown.items():
        for part in PARTS:
            assert b[f"{part}_s"] > 0, (name, part)
        assert sum(b[f"{p}_s"] for p in PARTS) <= b["total_s"]
    assert breakdown["gags"]["total_s"] == written["gags_s"]
    assert breakdown["langsplat"]["total_s"] == written["langsplat_s"]
    assert written["ratio_render_resolution"] == pytest.approx(
        breakdown["langsplat_render_resolution"]["total_s"] / breakdown["gags_render_resolution"]["total_s"])
    assert [breakdown[k]["renders_per_frame"] for k in ("gags", "langsplat", "langsplat_one_render")] == [1, 3, 1]
    assert set(written["others"]) == {"avg"} and written["others"]["avg"]["total_s"] > 0
    assert written["others"]["avg"]["ratio_to_gags"] == pytest.approx(written["others"]["avg"]["total_s"]
                                                                      / written["gags_s"])
    q3 = written["query_3d"]
    assert q3["gags_s"] > 0 and q3["langsplat_s"] > 0 and q3["n_queries"] == 2
    assert len(q3["per_query_s"]["gags"]) == 2 and q3["ratio"] == pytest.approx(q3["langsplat_s"] / q3["gags_s"])


def test_missing_langsplat_field_says_how_to_make_it(query_out, encoder_dir):
    shutil.rmtree(query_out / "field" / "langsplat")
    with pytest.raises(GagsError, match=f"gags distill {query_out} --method langsplat"):
        run(bench(query_out, encoder_dir))
    assert not (query_out / "bench" / "query.json").exists()


def test_a_folder_that_is_not_an_output_folder_is_a_user_error(tmp_path):
    with pytest.raises(GagsError, match="is not a scene output folder"):
        run(BenchQueryConfig(out=tmp_path))
    assert main(["bench", "query", str(tmp_path)]) == 1


def test_every_benchmark_is_a_subcommand(capsys):
    from gags.bench import BENCHMARKS
    from gags.config import BenchmarkConfig

    names = [typing.get_args(member)[1].name for member in typing.get_args(BenchmarkConfig)]
    assert len(names) == len(BENCHMARKS) == 11
    for name in names:
        with pytest.raises(SystemExit) as exit_:
            main(["bench", name, "--help"])
        assert exit_.value.code == 0
        assert f"gags bench {name}" in capsys.readouterr().out


def test_rasterize_benchmark_measures_the_target_case(tmp_path, capsys):
    from gags.bench.rasterize import run as rasterize

    record = rasterize(BenchRasterizeConfig(out=tmp_path / "r.json", repeats=1, quick=True, threads=1))
    written = json.loads((tmp_path / "r.json").read_text())
    assert written == json.loads(json.dumps(record))
    (case,) = written["results"]
    assert (case["n"], case["width"], case["height"], case["channels"]) == (20_000, 128, 128, 16)
    # Wall times of one repeat are too noisy to order against each other; check what they measured instead.
    assert case["composited_pairs"] > 0 and case["forward_seconds"] > 0 and case["forward_backward_seconds"] > 0
    assert case["forward_pairs_per_second"] == pytest.approx(case["composited_pairs"] / case["forward_seconds"])
    assert set(case["stage_cpu_seconds"]) == {"project", "build_pairs", "composite_forward", "backward_all"}
    assert case["stage_cpu_seconds"]["backward_all"] > 0
    assert "target 20k/128x128/16ch" in capsys.readouterr().out


def test_mask_nms_benchmark_checks_the_vectorised_version(tmp_path):
    from gags.bench.mask_nms import run as mask_nms

    record = mask_nms(BenchMaskNmsConfig(out=tmp_path / "m.json", objects=12, sizes=("40x52",), repeats=1,
                                         threads=1))
    assert record["all_identical"] and record["results"][0]["masks"] > 12
    assert json.loads((tmp_path / "m.json").read_text())["all_identical"]
