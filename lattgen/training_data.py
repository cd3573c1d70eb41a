"""Training configurations for models with ``requires_data`` (the VAE): decorrelated HMC draws.

``make_training_data(action, n, seed)`` runs the registered ``hmc`` sampler (plugins/
lattgen_classical) with many chains: it thermalises (step size tuned, then frozen), measures the
integrated autocorrelation time of m^2 = (sum_x phi_x / V)^2 on a pilot stretch with the Gamma
method (lattgen.analysis, Wolff hep-lat/0306017), and then keeps one configuration per chain
every ``spacing`` = ceil(2 tau_int) trajectories, so successive configurations of a chain are
roughly independent (the autocorrelation of the slowest mode we watch has decayed by e^-2).
"""

from __future__ import annotations

import math
import warnings

import torch

from .action import Action
from .errors import ConfigError

#: trajectories per chain of the pilot stretch that measures tau_int(m^2)
PILOT_STEPS = 100


def magnetisation_squared(phi: torch.Tensor) -> torch.Tensor:
    """m^2 per configuration, float64, shape (batch,)."""
    return phi.to(torch.float64).flatten(1).mean(1) ** 2


def measure_spacing(sampler, n_steps: int = PILOT_STEPS) -> int:
    """ceil(2 tau_int(m^2)) from ``n_steps`` trajectories of every chain (at least 1)."""
    from .analysis import AnalysisWarning, gamma_method

    series = []
    for _ in range(n_steps):
        sampler.step(tune=False)
        series.append(magnetisation_squared(sampler.state))
    data = torch.stack(series).unsqueeze(-1).cpu().numpy()  # (steps, chains, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        tau = gamma_method(data).tau_int
    return max(1, math.ceil(2.0 * tau)) if math.isfinite(tau) else n_steps // 2


def make_training_data(
    action: Action,
    n: int,
    seed: int,
    *,
    n_chains: int = 64,
    n_therm: int = 200,
    spacing: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    hmc_params: dict | None = None,
) -> torch.Tensor:
    """n decorrelated configurations of exp(-S) from HMC, shape (n, *lattice.shape).

    ``spacing`` (trajectories between kept configurations of one chain) defaults to
    ceil(2 tau_int(m^2)) measured on a pilot run; ``hmc_params`` are passed to the ``hmc``
    sampler (e.g. ``{"trajectory_length": 1.0}``). Cost: n_therm + pilot + spacing * n / n_chains
    trajectories of n_chains chains.
    """
    from .build import make_generator
    from .registry import get_registry

    if n < 1:
        raise ConfigError(f"make_training_data: need n >= 1 configurations, got {n}")
    if spacing is not None and spacing < 1:
        raise ConfigError(f"make_training_data: spacing must be >= 1 trajectory, got {spacing}")
    n_chains = max(1, min(int(n_chains), int(n)))
    generator = make_generator(seed, device)
    params = {"n_chains": n_chains, **(hmc_params or {})}
    sampler = get_registry().get("sampler", "hmc").build(
        action, params=params, where="make_training_data.hmc", device=device, dtype=dtype,
        generator=generator, model=None,
    )
    for _ in range(n_therm):
        sampler.step(tune=True)
    if spacing is None:
        spacing = measure_spacing(sampler)
    kept = []
    for _ in range(-(-n // n_chains)):
        for _ in range(spacing):
            sampler.step(tune=False)
        kept.append(sampler.state.detach().clone())
    return torch.cat(kept)[:n]
