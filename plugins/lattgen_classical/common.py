"""Pieces shared by the classical samplers: initial states and acceptance statistics."""

from __future__ import annotations

import torch

from lattgen import ConfigError, FieldSpace

INIT_CHOICES = ("random", "cold")


def initial_state(space: FieldSpace, n_chains: int, init: str, *, generator, device, dtype) -> torch.Tensor:
    """Start fields of the action's field space: ``random`` is its hot start (i.i.d. N(0, 1) per
    site on the real line), ``cold`` its ordered one (zeros on the real line)."""
    if init == "random":
        return space.random(n_chains, generator=generator, device=device, dtype=dtype)
    if init == "cold":
        return space.cold(n_chains, device=device, dtype=dtype)
    raise ConfigError(f"sampler.init: {init!r} is not valid; choose one of: {', '.join(INIT_CHOICES)}")


def acceptance_probability(log_ratio: torch.Tensor) -> torch.Tensor:
    """min(1, exp(log_ratio)) in float64, with NaN (a diverged proposal) counted as 0."""
    lr = torch.nan_to_num(log_ratio.to(torch.float64), nan=-torch.inf)
    return torch.exp(torch.clamp(lr, max=0.0))
