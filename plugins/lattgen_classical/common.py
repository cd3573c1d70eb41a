"""Pieces shared by the classical samplers: initial states and acceptance statistics."""

from __future__ import annotations

import torch

from lattgen.errors import ConfigError

INIT_CHOICES = ("random", "cold")


def initial_state(shape: tuple[int, ...], init: str, *, generator, device, dtype) -> torch.Tensor:
    """Start fields: ``random`` = i.i.d. N(0, 1) per site (hot start), ``cold`` = all zeros."""
    if init == "random":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if init == "cold":
        return torch.zeros(shape, device=device, dtype=dtype)
    raise ConfigError(f"sampler.init: {init!r} is not valid; choose one of: {', '.join(INIT_CHOICES)}")


def acceptance_probability(log_ratio: torch.Tensor) -> torch.Tensor:
    """min(1, exp(log_ratio)) in float64, with NaN (a diverged proposal) counted as 0."""
    lr = torch.nan_to_num(log_ratio.to(torch.float64), nan=-torch.inf)
    return torch.exp(torch.clamp(lr, max=0.0))


def check_generator(generator, device: torch.device) -> None:
    """Random numbers come only from ``generator``; it must live on the sampler's device."""
    if generator is not None and torch.device(generator.device).type != device.type:
        raise ConfigError(
            f"the random generator is on {generator.device} but the sampler runs on {device}; "
            "create it with lattgen.build.make_generator(seed, device)"
        )
