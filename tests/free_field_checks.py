"""Shared checks of a sampler against the exact free field: G~(p) at a few momenta."""

from __future__ import annotations

import torch
from lattgen_phi4 import power_spectrum_at

from lattgen.analysis import gamma_method
from lattgen.sampler import run_chain

#: momentum index tuples checked against the exact G~(p); (0, ..) is the susceptibility
MOMENTA = {2: [(0, 0), (1, 0), (1, 1), (3, 2)], 3: [(0, 0, 0), (1, 0, 0), (1, 1, 1), (2, 0, 1)]}


def spectrum_chain(sampler, momenta, n_steps: int, n_therm: int = 100):
    """run_chain measuring |phi~(p)|^2/V at the given momenta."""
    lat = sampler.lattice
    return run_chain(sampler, lambda phi: {"spectrum": power_spectrum_at(phi, lat, momenta)},
                     n_steps * sampler.n_chains, n_therm=n_therm)


def assert_matches_exact(chain, action, momenta, n_sigma: float = 4.0):
    """Every G~(p) within n_sigma of its Gamma-method error from the exact propagator."""
    res = gamma_method(chain.primaries["spectrum"], lambda means: means)
    exact = torch.stack([action.exact()["propagator"][p] for p in momenta]).numpy()
    pulls = (res.value - exact) / res.error
    assert all(abs(pulls) < n_sigma), (
        f"G~(p) at {momenta}: measured {res.value} +- {res.error}, exact {exact}, pulls {pulls}, "
        f"tau_int {res.tau_int}"
    )
    return res
