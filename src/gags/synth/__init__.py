"""Procedural benchmark scenes with exact ground truth at three granularities (``gags synth``).

- ``world``: the hierarchy (whole -> parts -> sub-parts of analytic primitives), names, colours, textures;
  ``build_world(preset, seed)``.
- ``library``: the object kinds and the presets.
- ``raycast``: the analytic renderer, ``render(world, camera) -> Render(rgb, depth, ids)``.
- ``rig``: handheld-like camera paths, ``sample_cameras(world, n, resolution, seed)``.
- ``scenes``: the writer behind ``gags synth`` (transforms.json, images, depth, ids, labels, queries).
"""
