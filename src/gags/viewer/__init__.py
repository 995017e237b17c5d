"""``gags view OUT``: an interactive viewer (viser) of a distilled scene with a text box.

Orbit the scene (rendered on the server by ``gags.splat.rasterize`` from each browser's camera), type a query, and
switch between the Gaussians' colours, the query's relevancy, the granularity map and the Gaussians the query selects
in 3D; the training cameras are drawn as frustums (click one to look through it).

Modules: ``scene`` (load OUT), ``render`` (one frame: pure rendering behind one lock), ``session`` (per-client state and
render worker), ``server`` (viser GUI and wiring). ``start(config)`` returns a running :class:`ViewerHandle`;
``run(config)`` serves until Ctrl-C.
"""

from gags.viewer.server import ViewerHandle, run, start

__all__ = ["ViewerHandle", "run", "start"]
