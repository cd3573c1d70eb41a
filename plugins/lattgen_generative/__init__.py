"""lattgen built-in plugin: generative: the autoregressive flow and the VAE baseline.

Public helpers: ``make_training_data(action, n, seed)`` (decorrelated HMC configurations for a
model with ``requires_data``), ``train_reverse_kl`` and ``train_on_data`` (small training loops).
"""

from lattgen.training_data import make_training_data
from .training import train_on_data, train_reverse_kl

__all__ = ["make_training_data", "train_on_data", "train_reverse_kl"]
