"""``gags distill``: granularity-aware distillation (GaD) of 3-level CLIP features into one language field.

- :mod:`gags.distill.train`: the stage (``run``) and its one training loop, shared by every method
- :mod:`gags.distill.baselines`: what each method trains (gags, avg, level-s|m|l, langsplat, n2f2) and the N2F2 fusion
- :mod:`gags.distill.losses`: the GaD and LangSplat losses as pure functions
- :mod:`gags.distill.autoencoder`: LangSplat's autoencoder training (the langsplat baseline)
"""
