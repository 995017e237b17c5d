"""Granularity-aware segmentation (GaS): ``gags segment``.

- ``mindepth``: Gaussian visibility per view and min-depth sample maps;
- ``prompts``: depth-driven prompt points (gags, paper) or a uniform grid;
- ``masks``: SAM-style filtering, LangSplat's mask NMS, per-level painting and the ``_s`` layout;
- ``extract``: the stage itself (``run``), writing LangSplat-compatible feature files (``Workspace.features_dir``);
- ``consistency``: how consistently segments agree across views, and with ground-truth parts.
"""
