"""``gags bench query`` on the hand-made OUT of tests/query: the JSON's keys, positive times, the ratio, and errors."""

from __future__ import annotations

import json
import shutil

import pytest

from gags.bench.query import PARTS, run
from gags.cli import main
from gags.config import BenchConfig
from gags.errors import GagsError
from tests.handmade_scene import LABELLED

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bench(out, encoder_dir, **kwargs) -> BenchConfig:
    return BenchConfig(which="query", folder=out, encoder=f"openclip:local-dir:{encoder_dir}", repeats=1, **kwargs)


def test_query_bench_writes_times_and_ratio(query_out, encoder_dir, capsys):
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
                              "langsplat_render_resolution"}
    for name, b in breakdown.items():
        for part in PARTS:
            assert b[f"{part}_s"] > 0, (name, part)
        assert sum(b[f"{p}_s"] for p in PARTS) <= b["total_s"]
    assert breakdown["gags"]["total_s"] == written["gags_s"]
    assert breakdown["langsplat"]["total_s"] == written["langsplat_s"]
    assert written["ratio_render_resolution"] == pytest.approx(
        breakdown["langsplat_render_resolution"]["total_s"] / breakdown["gags_render_resolution"]["total_s"])
    assert [breakdown[k]["renders_per_frame"] for k in ("gags", "langsplat", "langsplat_one_render")] == [1, 3, 1]
    q3 = written["query_3d"]
    assert q3["gags_s"] > 0 and q3["langsplat_s"] > 0 and q3["n_queries"] == 2
    assert len(q3["per_query_s"]["gags"]) == 2 and q3["ratio"] == pytest.approx(q3["langsplat_s"] / q3["gags_s"])


def test_missing_langsplat_field_says_how_to_make_it(query_out, encoder_dir):
    shutil.rmtree(query_out / "field" / "langsplat")
    with pytest.raises(GagsError, match=f"gags distill {query_out} --method langsplat"):
        run(bench(query_out, encoder_dir))
    assert not (query_out / "bench" / "query.json").exists()


def test_no_folder_is_a_user_error():
    with pytest.raises(GagsError, match="needs the scene output folder"):
        run(BenchConfig(which="query"))
    assert main(["bench", "query"]) == 1


@pytest.mark.parametrize("which, script", [("rasterize", "benchmarks/rasterize.py"),
                                           ("reconstruct", "benchmarks/reconstruct.py"),
                                           ("mask-nms", "benchmarks/mask_nms.py")])
def test_script_benchmarks_say_which_script_to_run(which, script, capsys):
    from pathlib import Path

    assert (Path(__file__).resolve().parents[2] / script).is_file()
    assert main(["bench", which]) == 1
    assert f"python {script}" in capsys.readouterr().err
