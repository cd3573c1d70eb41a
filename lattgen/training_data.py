"""Training configurations for models with ``requires_data`` (e.g. a VAE): decorrelated exact draws.

``make_training_data(action, n, seed, sampler=..., observable=...)`` runs an exact registered
sampler (the theory's ``data_sampler``) with many chains: it thermalises (tuning, then frozen),
measures the integrated autocorrelation time of the ``observable``'s first primary (the theory's
``data_observable``, its slowest watched mode) on a pilot stretch with the Gamma method
(lattgen.analysis, Wolff hep-lat/0306017), and then keeps one configuration per chain every
``spacing`` = ceil(2 tau_int) steps, so successive configurations of a chain are roughly
independent (that autocorrelation has decayed by e^-2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .action import Action
from .errors import ConfigError

#: steps per chain of the pilot stretch that measures tau_int
PILOT_STEPS = 100


def measure_spacing(sampler, primary: Callable[[torch.Tensor], torch.Tensor], n_steps: int = PILOT_STEPS) -> int:
    """ceil(2 tau_int) of ``primary(state)`` (batch,) from ``n_steps`` steps of every chain (>= 1)."""
    from .analysis import AnalysisWarning, gamma_method

    series = []
    for _ in range(n_steps):
        sampler.step(tune=False)
        series.append(primary(sampler.state).to(torch.float64))
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
    sampler: str | None = None,
    observable: str | None = None,
    n_chains: int = 64,
    n_therm: int = 200,
    spacing: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    sampler_params: Mapping[str, Any] | None = None,
    action_name: str | None = None,
    registry=None,
) -> torch.Tensor:
    """n decorrelated configurations of exp(-S), shape (n, *action.field_space.shape).

    ``sampler`` / ``observable`` default to the theory's ``data_sampler`` / ``data_observable``
    of the registered action ``action_name`` (default ``action.name``).
    ``spacing`` (steps between kept configurations of one chain) defaults to ceil(2 tau_int) of
    the observable measured on a pilot run; ``sampler_params`` go to the sampler.
    Cost: n_therm + pilot + spacing * n / n_chains steps of n_chains chains.
    """
    from .registry import get_registry
    from .rng import make_generator

    reg = registry or get_registry()
    if n < 1:
        raise ConfigError(f"make_training_data: need n >= 1 configurations, got {n}")
    if spacing is not None and spacing < 1:
        raise ConfigError(f"make_training_data: spacing must be >= 1 step, got {spacing}")
    if sampler is None or (observable is None and spacing is None):
        name = action_name or action.name
        if name not in reg.names("action"):
            raise ConfigError("make_training_data: the action is not a registered one (action.name "
                              f"{name!r}); name its sampler and observable")
        theory = reg.theory(name)
        sampler = sampler or theory.data_sampler
        observable = observable or theory.data_observable
        if sampler is None:
            raise ConfigError("make_training_data: the action's theory declares no data_sampler; name one")
    n_chains = max(1, min(int(n_chains), int(n)))
    generator = make_generator(seed, device)
    params = {"n_chains": n_chains, **(sampler_params or {})}
    chain_sampler = reg.get("sampler", sampler).build(
        action, params=params, where=f"make_training_data.{sampler}", device=device, dtype=dtype,
        generator=generator, model=None,
    )
    for _ in range(n_therm):
        chain_sampler.step(tune=True)
    if spacing is None:
        if observable is None:
            raise ConfigError("make_training_data: give spacing or an observable whose tau_int sets it")
        obs = reg.get("observable", observable, field=action.field_space.manifold).build(
            action.lattice, where=f"observable {observable}")
        spacing = measure_spacing(chain_sampler, lambda phi: obs.primaries(phi)[:, 0])
    kept = []
    for _ in range(-(-n // n_chains)):
        for _ in range(spacing):
            chain_sampler.step(tune=False)
        kept.append(chain_sampler.state.detach().clone())
    return torch.cat(kept)[:n]

