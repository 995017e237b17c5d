"""The viser server: per-client GUI (query box, mode, view picker, status, legend), training-camera frustums, and the
wiring from browser events to :class:`ClientSession` and from frames to the browser's background image.

``start(config)`` loads the scene, starts the server and returns a :class:`ViewerHandle` at once; ``run(config)``
serves until Ctrl-C. The server binds to ``config.host`` (127.0.0.1 unless told otherwise); when the port is taken,
viser tries the next ones, and the handle (and the printed address) give the port actually used.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from gags.cameras import Camera
from gags.config import ViewConfig
from gags.errors import GagsError
from gags.levels import DISPLAY as LEVEL_DISPLAY
from gags.query.figures import colormap
from gags.viewer.render import (
    GRANULARITY_COLORS,
    MODE_LABELS,
    Frame,
    Renderer,
    camera_from_pose,
    matrix_to_quat,
)
from gags.viewer.scene import ViewerScene, load_viewer_scene
from gags.viewer.session import ClientSession

JPEG_QUALITY = 90
"""Quality of the frames sent to the browser (viser's own default is 75; 90 keeps colour maps clean)."""
FAR_DEPTH = 160.0
"""Depth sent where no Gaussian is hit, so the frustums show there (viser's depth images hold at most 167.77)."""
FRUSTUM_SCALE = 0.05
"""Size of the training-camera frustums, as a fraction of the scene's size (``Scene.scale``)."""
FRUSTUM_COLOR = (235, 140, 30)
FRUSTUM_LINE_PX = 1.5
"""Frustum line width in screen pixels (world-sized lines fill the screen when the viewer sits on a camera)."""
NO_VIEW = "(current)"
"""Option of the view picker that leaves the camera where it is."""
MIN_SIZE, MAX_SIZE = 16, 2048
"""Allowed --max-size range in pixels."""


@dataclass
class ViewerHandle:
    """A running viewer: the viser server, the shared renderer and the sessions of the connected clients."""

    server: Any
    renderer: Renderer
    config: ViewConfig
    sessions: dict[int, ClientSession] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "::1") else self.host
        return f"http://{host}:{self.port}"

    @property
    def public(self) -> bool:
        """Listening on every interface: reachable by other machines of the network."""
        return self.host in ("0.0.0.0", "::", "")

    def session_list(self) -> list[ClientSession]:
        with self.lock:
            return list(self.sessions.values())

    def stop(self) -> None:
        """Close every session and stop the server."""
        with self.lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for session in sessions:
            session.close()
        self.server.stop()


def check_config(config: ViewConfig) -> None:
    """GagsError for option values the viewer cannot use."""
    if not 0 <= config.port <= 65535:
        raise GagsError(f"--port must be in 0..65535, got {config.port}.")
    if not MIN_SIZE <= config.max_size <= MAX_SIZE:
        raise GagsError(f"--max-size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {config.max_size}.")
    if not 1 <= config.decode_size <= MAX_SIZE:
        raise GagsError(f"--decode-size must be in 1..{MAX_SIZE} pixels, got {config.decode_size}.")
    if not 0.0 <= config.threshold <= 1.0:
        raise GagsError(f"--threshold is a relevancy in [0, 1], got {config.threshold}.")
    if config.threads < 0:
        raise GagsError(f"--threads must be 0 (PyTorch's default) or positive, got {config.threads}.")


def camera_pose(camera: Camera) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(wxyz [4] camera-to-world rotation, position [3], vertical fov in radians, aspect) of a camera (OpenCV axes)."""
    c2w = camera.cam_to_world.double().numpy()
    fov_y = 2 * math.atan(0.5 * camera.height / float(camera.K[1, 1]))
    return matrix_to_quat(c2w[:3, :3]), c2w[:3, 3], fov_y, camera.width / camera.height


def view_target(scene: ViewerScene, camera: Camera) -> np.ndarray:
    """[3] a point on ``camera``'s optical axis at the depth of the scene's centre (orbit centre of that view)."""
    c2w = camera.cam_to_world.double().numpy()
    forward, origin = c2w[:3, 2], c2w[:3, 3]
    depth = float(np.dot(scene.center.double().numpy() - origin, forward))
    if not math.isfinite(depth) or depth <= 1e-6:
        depth = scene.scale
    return origin + depth * forward


def legend_image(mode: str, width: int = 240, height: int = 36) -> np.ndarray:
    """uint8 [height, width, 3] legend of a mode: the relevancy colour scale or the granularity colours."""
    image = np.full((height, width, 3), 255, np.uint8)
    font, scale, ink = cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20)
    if mode == "relevancy":
        bar = colormap(np.linspace(0, 1, width - 20)[None].repeat(14, axis=0))
        image[2:16, 10:width - 10] = bar
        cv2.putText(image, "low", (10, 30), font, scale, ink, 1, cv2.LINE_AA)
        cv2.putText(image, "high", (width - 40, 30), font, scale, ink, 1, cv2.LINE_AA)
    elif mode == "granularity":
        step = width // 3
        for k, name in enumerate(LEVEL_DISPLAY):
            x = k * step + 6
            color = tuple(int(c) for c in np.round(GRANULARITY_COLORS[k] * 255))
            cv2.rectangle(image, (x, 10), (x + 14, 24), color, -1)
            cv2.putText(image, name, (x + 18, 22), font, scale, ink, 1, cv2.LINE_AA)
    elif mode == "selected":
        cv2.putText(image, "selected: colour, others: grey", (6, 22), font, scale, ink, 1, cv2.LINE_AA)
    else:
        cv2.putText(image, "Gaussian colours", (6, 22), font, scale, ink, 1, cv2.LINE_AA)
    return image


def publish_frame(client: Any, frame: Frame) -> None:
    """Send a frame as the client's background image, with its depth (so frustums hide behind surfaces)."""
    depth = np.where(frame.depth > 0, frame.depth, FAR_DEPTH).astype(np.float32)
    client.scene.set_background_image(frame.image, format="jpeg", jpeg_quality=JPEG_QUALITY,
                                      depth=depth if depth.max() <= FAR_DEPTH else None)


def plain_text(text: str) -> str:
    """``text`` shown as itself in a Markdown block: Markdown's punctuation escaped, HTML's brackets as entities, so a
    query such as ``![x](http://...)`` or ``<img src=...>`` is printed, never rendered or fetched."""
    escaped = re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", text)
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _status(frame: Frame) -> str:
    return f"**{MODE_LABELS[frame.mode]}** — {plain_text(frame.info)}  \n{frame.camera.width}x{frame.camera.height} " \
           f"px, {1000 * frame.seconds:.0f} ms"


def _attach_client(handle: ViewerHandle, client: Any) -> ClientSession:
    """Build one client's GUI, frustums and session (registered in ``handle.sessions``), and wire its events."""
    renderer, config = handle.renderer, handle.config
    scene = renderer.scene
    labels = [MODE_LABELS[m] for m in renderer.modes]
    mode_of = {MODE_LABELS[m]: m for m in renderer.modes}

    client.gui.add_markdown(f"**gags** — `{scene.out}`, field `{scene.field.method}`, encoder `{scene.encoder_spec}`")
    query_box = client.gui.add_text("Query", initial_value="", hint="A phrase, e.g. 'egg yolk'; the view re-colours "
                                    "by its relevancy.")
    mode_box = client.gui.add_dropdown("Show", labels, initial_value=MODE_LABELS["rgb"])
    names = [scene.cameras[i].name for i in scene.train_ids]
    view_box = client.gui.add_dropdown("Go to view", [NO_VIEW, *names], initial_value=NO_VIEW)
    frustums_box = client.gui.add_checkbox("Training cameras", initial_value=True)
    status = client.gui.add_markdown("rendering ...")
    legend = client.gui.add_image(legend_image("rgb"), label="Legend", format="png")

    def publish(frame: Frame) -> None:
        publish_frame(client, frame)
        status.content = _status(frame)

    def on_error(message: str) -> None:
        status.content = f"**error**: {message}"

    session = ClientSession(client.client_id, renderer, publish, on_error)
    with handle.lock:
        handle.sessions[client.client_id] = session

    def camera_changed(camera_handle: Any) -> None:
        session.update(camera=camera_from_pose(camera_handle.wxyz, camera_handle.position, camera_handle.fov,
                                               camera_handle.aspect, config.max_size))

    def go_to(camera: Camera) -> None:
        _, position, fov_y, _ = camera_pose(camera)
        target = view_target(scene, camera)
        client.camera.up_direction = -camera.cam_to_world.double().numpy()[:3, 1]
        client.camera.position = position
        client.camera.look_at = target
        client.camera.fov = fov_y

    @query_box.on_update
    def _(event: Any) -> None:
        text = query_box.value
        if text.strip() and session.request.mode == "rgb":  # a query typed over the colours: show its relevancy
            mode_box.value = MODE_LABELS["relevancy"]  # its on_update sets the legend and the session's mode
            session.update(query=text, mode="relevancy")
        else:
            session.update(query=text)

    @mode_box.on_update
    def _(event: Any) -> None:
        mode = mode_of[mode_box.value]
        legend.image = legend_image(mode)
        session.update(mode=mode)

    @view_box.on_update
    def _(event: Any) -> None:
        if view_box.value != NO_VIEW:
            go_to(scene.cameras[scene.train_ids[names.index(view_box.value)]])
            view_box.value = NO_VIEW  # so that picking the same view again moves there again

    frustums = []
    for i in scene.train_ids:
        camera = scene.cameras[i]
        wxyz, position, fov_y, aspect = camera_pose(camera)
        frustum = client.scene.add_camera_frustum(
            f"/training_cameras/{i:05d}", fov=fov_y, aspect=aspect, scale=FRUSTUM_SCALE * scene.scale,
            thickness=FRUSTUM_LINE_PX, thickness_units="screen", color=FRUSTUM_COLOR, wxyz=wxyz, position=position)
        frustum.on_click(lambda event, cam=camera: go_to(cam))
        frustums.append(frustum)

    @frustums_box.on_update
    def _(event: Any) -> None:
        for frustum in frustums:
            frustum.visible = frustums_box.value

    client.camera.on_update(camera_changed)
    if client.camera.update_timestamp != 0.0:  # the client's first camera message came before the callback
        camera_changed(client.camera)
    return session


def start(config: ViewConfig) -> ViewerHandle:
    """Load OUT, start the viser server on ``config.host:config.port`` and return at once (see ``ViewerHandle``)."""
    check_config(config)
    try:
        import viser
    except ImportError as exc:
        raise GagsError("the viewer needs viser: pip install 'gags[viewer]' (or pip install viser).") from exc
    if config.threads:
        torch.set_num_threads(config.threads)
    scene = load_viewer_scene(config.out, config.method, config.encoder)
    renderer = Renderer(scene, config.threshold, config.decode_size)
    try:
        server = viser.ViserServer(host=config.host, port=config.port, label="gags", verbose=False)
    except OSError as exc:
        raise GagsError(f"cannot listen on {config.host}:{config.port} ({exc}). Pass another --port or --host."
                        ) from exc
    handle = ViewerHandle(server=server, renderer=renderer, config=config)

    server.scene.set_up_direction(scene.up.double().numpy())
    first = scene.cameras[scene.train_ids[0]] if scene.train_ids else scene.cameras[0]
    _, position, fov_y, _ = camera_pose(first)
    server.initial_camera.position = position
    server.initial_camera.look_at = view_target(scene, first)
    server.initial_camera.up = scene.up.double().numpy()
    server.initial_camera.fov = fov_y

    @server.on_client_connect
    def _on_connect(client: Any) -> None:
        _attach_client(handle, client)

    @server.on_client_disconnect
    def _on_disconnect(client: Any) -> None:
        with handle.lock:
            session = handle.sessions.pop(client.client_id, None)
        if session is not None:
            session.close()

    return handle


def run(config: ViewConfig) -> None:
    """``gags view OUT``: serve the viewer until Ctrl-C."""
    handle = None
    try:  # Ctrl-C while the server starts stops it too
        handle = start(config)
        print(f"gags view: {handle.url} (field {handle.renderer.scene.field.method}, "
              f"{len(handle.renderer.scene.geometry)} Gaussians); Ctrl-C to stop", flush=True)
        if handle.public:
            print(f"gags view: warning: listening on every network interface ({handle.host}): anyone who can reach "
                  f"this machine on port {handle.port} can open the viewer and read the scene. Use --host 127.0.0.1 "
                  "to keep it local.", file=sys.stderr, flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("gags view: stopped")
    finally:
        if handle is not None:
            handle.stop()
