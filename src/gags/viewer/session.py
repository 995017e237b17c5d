"""Per-client state of the viewer: one browser tab = one :class:`ClientSession`.

A session holds what its client asked for (camera, mode, query) and a worker thread that renders it. Updates (camera
moves, key strokes in the text box, mode changes) only record the newest request and wake the worker; the worker
renders the newest request, then looks again, so a burst of updates costs one or two renders, never a queue of stale
ones. Each frame carries the request it was made from, and a session only ever publishes its own frames, so two
tabs never see each other's query. The renders themselves are serialised by the shared :class:`Renderer`'s lock.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

from gags.cameras import Camera
from gags.errors import GagsError
from gags.viewer.render import Frame, Renderer, RenderPass


@dataclass(frozen=True)
class Request:
    """What a client asks to see. version: increases with every change (a frame says which version it shows)."""

    camera: Camera | None = None
    mode: str = "rgb"
    query: str = ""
    version: int = 0


class ClientSession:
    """The state and render worker of one client.

    publish: called (from the worker thread) with every new frame; on_error: called with a message when a render
    fails (the session keeps running and renders the next request).
    """

    def __init__(self, client_id: int, renderer: Renderer, publish: Callable[[Frame], None],
                 on_error: Callable[[str], None] | None = None, mode: str = "rgb", query: str = ""):
        self.client_id = client_id
        self.renderer = renderer
        self._publish = publish
        self._on_error = on_error
        self._cond = threading.Condition()
        self._request = Request(mode=mode, query=query)
        self._closed = False
        self._frame: Frame | None = None
        self._frame_version = -1
        self._pass: RenderPass | None = None
        self.frames_rendered = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name=f"gags-view-client-{client_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------------------------------
    # updates (any thread)

    @property
    def request(self) -> Request:
        with self._cond:
            return self._request

    def update(self, *, camera: Camera | None = None, mode: str | None = None, query: str | None = None) -> int:
        """Record a new request (only the given fields change) and wake the worker; returns its version."""
        if mode is not None and mode not in self.renderer.modes:
            raise GagsError(f"unknown view mode {mode!r}; choose one of {', '.join(self.renderer.modes)}.")
        with self._cond:
            current = self._request
            self._request = replace(current, camera=camera if camera is not None else current.camera,
                                    mode=mode if mode is not None else current.mode,
                                    query=query if query is not None else current.query,
                                    version=current.version + 1)
            self._cond.notify_all()
            return self._request.version

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (after the render it may be doing)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------------------------------
    # results

    @property
    def frame(self) -> Frame | None:
        """The last frame rendered for this client."""
        with self._cond:
            return self._frame

    def wait_frame(self, version: int | None = None, timeout: float = 60.0) -> Frame:
        """Block until a frame of request ``version`` (default: the current one) or newer exists; return it.

        Raises TimeoutError after ``timeout`` seconds.
        """
        with self._cond:
            target = self._request.version if version is None else version
            if not self._cond.wait_for(lambda: self._frame_version >= target or self._closed, timeout):
                raise TimeoutError(f"client {self.client_id}: no frame of request {target} after {timeout} s "
                                   f"(last: {self._frame_version}; errors: {self.errors[-1:]})")
            if self._frame is None:
                raise TimeoutError(f"client {self.client_id} was closed before rendering anything")
            return self._frame

    # ------------------------------------------------------------------------------------------------------------------
    # the worker

    def _next(self) -> Request | None:
        """Wait for a request newer than the last frame (with a camera); None when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (
                self._request.version > self._frame_version and self._request.camera is not None))
            return None if self._closed else self._request

    def _work(self) -> None:
        while (request := self._next()) is not None:
            assert request.camera is not None
            try:
                frame, self._pass = self.renderer.render(request.camera, request.mode, request.query, self._pass)
            except Exception as exc:  # noqa: BLE001 - a render error must not end the session: report it, go on
                message = str(exc) if isinstance(exc, GagsError) else f"{type(exc).__name__}: {exc}"
                with self._cond:
                    self.errors.append(message)
                    self._frame_version = request.version  # do not retry the same request forever
                    self._cond.notify_all()
                if not isinstance(exc, GagsError):
                    traceback.print_exc()
                if self._on_error is not None:
                    self._on_error(message)
                continue
            with self._cond:
                self._frame = frame
                self._frame_version = request.version
                self.frames_rendered += 1
                self._cond.notify_all()
            try:
                self._publish(frame)
            except Exception:  # noqa: BLE001 - the client may have gone: its disconnect closes the session
                traceback.print_exc()
