"""OUT/report.html: sections from whatever stages ran, self-contained (embedded PNGs, no script, nothing to fetch), and
what a browser (Debian's headless chromium) shows of it."""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gags.errors import GagsError
from gags.report import (
    LEVEL_COLORS,
    MAX_SIDE,
    level_map,
    line_chart,
    png_data_uri,
    write_report,
)
from gags.workspace import REPORT_HTML as REPORT_FILE

SECTIONS = ("scene", "reconstruction", "queries", "granularity", "metrics", "ladder", "curves", "timing")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str:
    """The chromium executable; without one, skip, or fail when GAGS_REQUIRE_BROWSER=1 (CI sets it)."""
    if CHROMIUM is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium); the report's browser checks need it"
        if os.environ.get("GAGS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GAGS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM


def sections(page: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, flags=re.DOTALL))


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "PNG"
    return image


def assert_self_contained(page: str) -> None:
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)  # base64 has slashes
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert not re.search(r"(https?:|ftp:)?//[a-z0-9]", page, flags=re.IGNORECASE), "a URL to fetch"
    assert not re.search(r'(src|href)="(?!data:|#)', page), "a link that is neither a data URI nor an anchor"


# ----------------------------------------------------------------------------------------------------------------------
# without any stage


def test_empty_folder_states_every_missing_section(tmp_path):
    path = write_report(tmp_path)
    assert path == tmp_path / REPORT_FILE
    page = path.read_text()
    found = sections(page)
    assert tuple(found) == SECTIONS
    for sid, body in found.items():
        assert 'class="missing"' in body, sid
    assert "gags reconstruct" in found["reconstruction"] and "gags synth" in found["scene"]
    assert "gags eval" in found["queries"] and "gags distill" in found["granularity"]
    assert "gags demo" in found["timing"]
    assert image_sources(page) == []
    assert_self_contained(page)


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(GagsError, match="not a folder"):
        write_report(tmp_path / "nope")


def test_corrupt_stage_file_is_stated_not_raised(tmp_path):
    (tmp_path / "reconstruct").mkdir()
    (tmp_path / "reconstruct" / "metrics.json").write_text("{not json")
    (tmp_path / "demo.json").write_text(json.dumps({"seconds": {"synth": 1.5, "reconstruct": 90.0}}))
    found = sections(write_report(tmp_path).read_text())
    assert "not valid JSON" in found["reconstruction"] and "not valid JSON" in found["curves"]
    assert "1 min 30 s" in found["timing"] and "1.5 s" in found["timing"]
    assert 'class="missing"' not in found["timing"]


# ----------------------------------------------------------------------------------------------------------------------
# the pieces


def test_png_data_uri_downscales_large_images():
    image = np.random.default_rng(0).integers(0, 255, (600, 300, 3), dtype=np.uint8)
    decoded = decode(png_data_uri(image))
    assert decoded.size == (MAX_SIDE // 2, MAX_SIDE)
    small = np.zeros((20, 30, 3), np.uint8)
    small[5, 7] = (255, 0, 0)
    back = np.asarray(decode(png_data_uri(small)).convert("RGB"))
    np.testing.assert_array_equal(back, small)  # small images are kept pixel for pixel


def test_level_map_colours_the_strongest_level_where_covered():
    image = np.full((2, 3, 3), 100, np.uint8)
    weights = np.zeros((2, 3, 3), np.float32)
    weights[0, :, 0] = 0.7
    weights[1, :, 2] = 0.6
    covered = np.ones((2, 3), bool)
    covered[1, 2] = False
    out = level_map(image, weights, covered).astype(int)
    blend = lambda c: np.round(0.6 * np.asarray(c) + 0.4 * 100).astype(int)
    np.testing.assert_array_equal(out[0, 0], blend(LEVEL_COLORS[0]))
    np.testing.assert_array_equal(out[1, 0], blend(LEVEL_COLORS[2]))
    np.testing.assert_array_equal(out[1, 2], [100, 100, 100])


def test_line_chart_scales_and_skips_bad_values():
    svg = line_chart("t", "iteration", "loss", [("a", [(1, 0.5), (2, 0.05), (3, float("nan")), (4, 0.0)], "#000"),
                                                ("b", [], "#111")], log_y=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    points = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    assert len(points) == 2  # NaN and 0 (log axis) left out
    (x1, y1), (x2, y2) = (tuple(map(float, p.split(","))) for p in points)
    assert x2 > x1 and y2 > y1  # smaller loss lower on the chart
    ticks = re.findall(r'text-anchor="end">([^<]+)<', svg)
    assert "0.1" in ticks and "0.01" in ticks or "0.05" in ticks
    assert ">b<" not in svg  # an empty series gets no legend entry
    assert "no data" in line_chart("t", "x", "y", [("a", [], "#000")])


# ----------------------------------------------------------------------------------------------------------------------
# a miniature demo, its report, and a browser


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, demo_run) -> Path:
    """A copy of the session's miniature demo (the first test rewrites its report)."""
    return shutil.copytree(demo_run[0], tmp_path_factory.mktemp("report") / "demo")


@pytest.mark.slow
def test_demo_writes_a_complete_report(demo_out, capsys):
    path = demo_out / REPORT_FILE
    assert path.is_file()
    path.unlink()
    write_report(demo_out)
    page = path.read_text()
    found = sections(page)
    assert tuple(found) == SECTIONS
    for sid, body in found.items():
        assert 'class="missing"' not in body, (sid, re.findall(r'class="missing">([^<]*)', body))

    test_queries = json.loads((demo_out / "eval" / "gags" / "test" / "metrics.json").read_text())["queries"]
    per_frame = [sum(q["frame"] == f for q in test_queries) for f in dict.fromkeys(q["frame"] for q in test_queries)]
    scene = json.loads((demo_out / "scene.json").read_text())
    n_train, n_test = len(scene["train"]), len(scene["test"])
    expected = {
        "scene": min(6, n_train),
        "reconstruction": 2 * min(3, n_test),  # ground truth and render
        "queries": 2 * max(per_frame),  # relevancy and mask of each query of the view with the most labels
        "granularity": 2 * min(3, n_test),  # image and level map
        "metrics": 0, "ladder": 0, "curves": 0, "timing": 0,
    }
    assert {sid: len(image_sources(body)) for sid, body in found.items()} == expected
    for uri in image_sources(page):
        assert decode(uri).size[0] > 0
    assert_self_contained(page)
    assert path.stat().st_size < 3_000_000

    # every method and split in the table, with the numbers of metrics.json
    for method in ("gags", "avg"):
        for split in ("train", "test"):
            m = json.loads((demo_out / "eval" / method / split / "metrics.json").read_text())
            assert f"{100 * m['miou']:.1f}%" in found["metrics"] and f"{100 * m['loc_acc']:.1f}%" in found["metrics"]
    # four charts: RGB loss and PSNR (reconstruct's new curve), distillation losses of gags and avg, granularity
    assert found["curves"].count("<svg") == 4
    assert ">gags<" in found["curves"] and ">avg<" in found["curves"]
    for stage in ("synth", "reconstruct", "segment", "distill gags", "distill avg", "eval gags", "eval avg"):
        assert f">{stage}<" in found["timing"]


@pytest.mark.slow
def test_chromium_shows_the_report(demo_out, tmp_path):
    browser = chromium()
    report = demo_out / REPORT_FILE
    assert report.is_file()
    shot = tmp_path / "shot.png"
    proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={shot}", "--window-size=1200,3000", report.resolve().as_uri()],
                          check=False, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (3000, 1200, 3)
    assert image.std() > 20, "blank screenshot"
    assert image[:40].mean() < 80, "the dark page header is not at the top"
    assert len(np.unique(image.reshape(-1, 3)[::7], axis=0)) > 500  # photos and heatmaps, not flat boxes

    # the DOM after loading: a copy of the page with a probe that records what the browser decoded
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
             "const p = document.createElement('pre'); p.id = 'probe'; p.textContent = JSON.stringify({"
             "images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)"
             ".length, sections: [...document.querySelectorAll('section')].map(s => s.id),"
             "charts: document.querySelectorAll('svg.chart').length}); document.body.appendChild(p); });</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", probe + "</body>"))
    proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                          check=False, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, proc.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    n_images = len(image_sources(report.read_text()))
    assert result == {"images": n_images, "decoded": n_images, "sections": list(SECTIONS), "charts": 4}
