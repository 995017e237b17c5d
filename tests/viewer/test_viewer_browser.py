"""``gags view`` in a real browser: Debian's chromium, driven by Playwright, on the miniature OUT of conftest.py.

A query typed into the text box re-colours the view (the server's frame for that tab and the pixels the browser
shows), and two tabs with different queries each get their own result.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.config import ViewConfig
from gags.viewer.render import same_camera

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1000, "height": 700}
QUERY_INPUT = ("xpath=//label[normalize-space()='Query']/ancestor::*[.//input[contains(@class,'TextInput-input')]][1]"
               "//input[contains(@class,'TextInput-input')]")
"""The viewer's "Query" text box (viser draws each labelled input in a row holding the label and the input)."""
VIEW_PICKER = ("xpath=//label[normalize-space()='Go to view']/ancestor::*[.//input[@role='combobox']][1]"
               "//input[@role='combobox']")
TIMEOUT = 60.0

viser = pytest.importorskip("viser", reason="the viewer needs viser (pip install 'gags[viewer]')")


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "condition"):
    """Poll ``predicate`` until it returns something other than None or False; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def viewer(viewer_out, encoder_spec):
    from gags.viewer import start

    handle = start(ViewConfig(out=viewer_out, port=0, encoder=encoder_spec, max_size=128, decode_size=64, threads=0))
    yield handle
    handle.stop()


def test_server_serves_the_page_on_localhost(viewer):
    assert ViewConfig(out=Path("x")).host == "127.0.0.1" and viewer.server.get_host() == "127.0.0.1"
    assert viewer.port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read().lower()


def test_run_serves_until_ctrl_c(viewer_out, encoder_spec, capsys, monkeypatch):
    """``gags view`` blocks serving; Ctrl-C (KeyboardInterrupt in the main thread) stops the server and returns.

    The Ctrl-C is raised by the serving loop's own wait, once the page answers: an interrupt sent from another thread
    could land while the server is still starting, in code that is not the loop's."""
    import socket
    import types

    from gags.viewer import run, server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def serving() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    answered = []

    def sleep_then_ctrl_c(seconds: float) -> None:
        answered.append(wait_until(lambda: serving() or None, what="the server to answer"))
        raise KeyboardInterrupt

    patched = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    monkeypatch.setattr(server, "time", types.SimpleNamespace(**{**patched, "sleep": sleep_then_ctrl_c}))
    run(ViewConfig(out=viewer_out, port=port, encoder=encoder_spec, max_size=64, threads=0))
    assert answered == [True]
    assert not serving()
    printed = capsys.readouterr().out
    assert f"http://localhost:{port}" in printed and "gags view: stopped" in printed


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when GAGS_REQUIRE_BROWSER=1 (CI sets it, so that a missing browser cannot pass unnoticed)."""
    if os.environ.get("GAGS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"GAGS_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        skip_or_fail(f"no browser at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright; its own browser downloads are not needed: "
                     "Debian's chromium is used)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_tab(browser, viewer):
    """A new page on the viewer and the server-side session it created."""
    before = {s.client_id for s in viewer.session_list()}
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(viewer.url)
    session = wait_until(lambda: next((s for s in viewer.session_list() if s.client_id not in before), None),
                         what="the tab's session")
    session.wait_frame(timeout=TIMEOUT)
    return page, session


def screenshot(page) -> np.ndarray:
    import cv2

    png = np.frombuffer(page.screenshot(), np.uint8)
    return cv2.imdecode(png, cv2.IMREAD_COLOR)[..., ::-1]  # RGB [H, W, 3]


def canvas_point(frame, point, scene_helpers) -> tuple[int, int]:
    """Where the centre of an object's square appears on the page (the frame is stretched over the viewport)."""
    x1, y1, x2, y2 = scene_helpers.OBJECTS[point]
    centre = torch.tensor([[(x1 + x2) / 2, (y1 + y2) / 2, scene_helpers.OBJECT_Z]])
    uv, _ = frame.camera.project(centre)
    u, v = uv[0].tolist()
    return (int(u / frame.camera.width * VIEWPORT["width"]), int(v / frame.camera.height * VIEWPORT["height"]))


def redness(image: np.ndarray, xy: tuple[int, int], radius: int = 6) -> float:
    """Median of R - B around a page pixel (turbo's hot end is red, its cold end blue)."""
    x, y = xy
    patch = image[y - radius:y + radius + 1, x - radius:x + radius + 1].astype(int)
    return float(np.median(patch[..., 0] - patch[..., 2]))


def type_query(page, text: str) -> None:
    page.locator(QUERY_INPUT).press_sequentially(text, delay=30)


def wait_frame_of(session, text: str):
    return wait_until(lambda: f if (f := session.frame) is not None and f.query == text else None,
                      what=f"a frame of {text!r}")


def redness_at(page, session, name: str, scene_helpers) -> tuple[float, np.ndarray]:
    """(redness where the object ``name`` is in the session's latest frame, the page's screenshot)."""
    image = screenshot(page)
    return redness(image, canvas_point(session.frame, name, scene_helpers)), image


def test_typed_query_recolours_the_view(browser, viewer, scene_helpers):
    page, session = open_tab(browser, viewer)
    try:
        assert session.frame.mode == "rgb"
        before = wait_until(lambda: img if abs((r := redness_at(page, session, "bowl", scene_helpers))[0]) < 40
                            and (img := r[1]) is not None else None, what="the white bowl on the page")
        type_query(page, "bowl")
        frame = wait_frame_of(session, "bowl")
        assert frame.mode == "relevancy"  # typing over the colours switches to the relevancy view
        assert frame.relevancy is not None and frame.relevancy.max() > 0.5
        after = wait_until(lambda: img if (r := redness_at(page, session, "bowl", scene_helpers))[0] > 60
                           and (img := r[1]) is not None else None, what="the bowl turning red on the page")
        changed = np.abs(after[:, :600].astype(int) - before[:, :600].astype(int)).mean()  # left of the GUI panel
        assert changed > 10, changed
        # Orbit: dragging on the canvas moves the camera; the view is rendered again from there, same query.
        page.mouse.move(300, 400)
        page.mouse.down()
        page.mouse.move(420, 360, steps=8)
        page.mouse.up()
        moved = wait_until(lambda: f if not same_camera((f := session.frame).camera, frame.camera) else None,
                           what="a frame from the orbited camera")
        assert moved.query == "bowl" and moved.mode == "relevancy"
        # "Go to view" puts the camera on a training camera.
        target = scene_helpers.cameras()[1]
        page.locator(VIEW_PICKER).click()
        page.get_by_role("option", name=target.name, exact=True).click()
        wait_until(lambda: torch.allclose(session.frame.camera.world_to_cam, target.world_to_cam, atol=1e-3),
                   what="a frame from the training camera")
        assert target.name not in page.locator(VIEW_PICKER).input_value()  # the picker is back to "(current)"
    finally:
        page.close()


def test_two_tabs_get_their_own_results(browser, viewer, scene_helpers):
    (page_a, session_a), (page_b, session_b) = open_tab(browser, viewer), open_tab(browser, viewer)
    try:
        type_query(page_a, "bowl")
        type_query(page_b, "egg")
        wait_frame_of(session_a, "bowl"), wait_frame_of(session_b, "egg")
        time.sleep(1.0)  # let any late key stroke render: the sessions must still show their own query
        frame_a, frame_b = session_a.frame, session_b.frame
        assert (frame_a.query, frame_b.query) == ("bowl", "egg")
        for frame, hot, cold in ((frame_a, "bowl", "egg"), (frame_b, "egg", "bowl")):
            camera = frame.camera
            for name, expect_hot in ((hot, True), (cold, False)):
                x, y = canvas_point(frame, name, scene_helpers)
                u = min(camera.width - 1, int(x * camera.width / VIEWPORT["width"]))
                v = min(camera.height - 1, int(y * camera.height / VIEWPORT["height"]))
                assert (frame.relevancy[v, u] > 0.5) == expect_hot, (frame.query, name, frame.relevancy[v, u])
        # On the pages: the bowl is red in tab A (its query) and not in tab B (the egg is the hot one there).
        wait_until(lambda: redness_at(page_a, session_a, "bowl", scene_helpers)[0] > 60, what="tab A's bowl in red")
        wait_until(lambda: redness_at(page_b, session_b, "bowl", scene_helpers)[0] < 0, what="tab B's bowl in blue")
    finally:
        page_a.close()
        page_b.close()
    wait_until(lambda: session_a.client_id not in {s.client_id for s in viewer.session_list()},
               what="the closed tab's session to end")
