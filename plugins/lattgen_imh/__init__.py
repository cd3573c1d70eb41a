"""lattgen built-in plugin: imh (independence Metropolis-Hastings with a generative-model proposal).

Public: ``IMH`` (the sampler class, in ``lattgen_imh.imh``; imported lazily).
"""
