"""The Observable interface: per-configuration primaries, then a derived function of their means.

Every observable is measured the same way: ``primaries(phi)`` gives, per configuration, the
quantities whose Monte Carlo averages are needed (shape (batch, k)); ``derive(means)`` turns
the k averages into the observable (scalar or vector). The Gamma method then propagates errors
through ``derive`` (Wolff, hep-lat/0306017), so derived quantities (chi, xi, Binder) get
honest errors rather than guessed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Observable:
    """A named observable: primaries per configuration and a derived function of their means."""

    name: str
    #: phi (batch, *lattice) -> (batch, k) primaries; float64 recommended
    primaries: Callable[[torch.Tensor], torch.Tensor]
    #: means (k,) -> value (scalar or 1-D array); None means the single primary's mean
    derive: Callable[[np.ndarray], np.ndarray | float] | None = None
    doc: str = ""
    #: name of the index of a vector observable (e.g. "t" or "x"), "" for scalars
    index: str = ""
    #: the index's values of a vector observable (ints or coordinates), () if not listed
    index_values: tuple = ()
    #: optional statistics of the chains' histories rather than of the mean: primaries
    #: (n_steps, n_chains, k) -> {name: number} (for example how often a sign flips), reported
    #: beside the Gamma-method results as ``chain_<name>``
    chain_statistics: Callable[[np.ndarray], Mapping[str, float]] | None = None

    def value(self, means: np.ndarray) -> np.ndarray:
        """The observable from the primaries' means, always as a 1-D array."""
        if self.derive is None:
            if means.shape != (1,):
                raise ValueError(f"observable {self.name!r} has {means.shape} primaries but no derive")
            return np.asarray(means, dtype=np.float64)
        return np.atleast_1d(np.asarray(self.derive(means), dtype=np.float64))


def measure_all(observables: Mapping[str, Observable]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A ``measure(phi)`` for ``run_chain`` evaluating every observable's primaries."""

    def measure(phi: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: obs.primaries(phi) for name, obs in observables.items()}

    return measure
