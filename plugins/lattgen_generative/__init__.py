"""lattgen built-in plugin: generative: the autoregressive flow and the VAE baseline.

Both train with the generic trainer (``lattgen train``; the VAE by forward KL on data from
``lattgen.make_training_data``).
"""
