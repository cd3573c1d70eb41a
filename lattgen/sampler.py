"""The Sampler interface, the Chain it produces, and the Metropolis test in log space.

A sampler advances ``n_chains`` Markov chains at once (one ``step`` = one trajectory, sweep or
proposal per chain). ``run_chain`` is the one loop every sampler is measured by: thermalise
(the sampler may tune itself only then), then record observables' primary quantities at
every step, on the device, copied to the host once at the end.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .action import Action
from .errors import ConfigError


def metropolis_accept(log_ratio: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Boolean accept mask: accept with probability min(1, exp(log_ratio)), in log space.

    ``log_ratio`` should be float64 (log-weights differences of O(V) need the precision).
    """
    u = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device, dtype=torch.float64)
    return torch.log(u) < log_ratio.to(torch.float64)


class Sampler(abc.ABC):
    """Advances n_chains Markov chains targeting exp(-S) (exactly, if ``exact``)."""

    #: the chain's stationary distribution is exactly exp(-S)/Z
    exact: bool = True

    def __init__(
        self,
        action: Action,
        *,
        n_chains: int,
        device: str | torch.device = "cpu",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        if n_chains < 1:
            raise ConfigError(f"sampler.n_chains: must be >= 1, got {n_chains}")
        self.action = action
        self.lattice = action.lattice
        self.n_chains = int(n_chains)
        self.device = torch.device(device)
        self.dtype = dtype
        self.generator = generator
        self.state: torch.Tensor = torch.zeros(
            (self.n_chains, *self.lattice.shape), device=self.device, dtype=dtype
        )

    @abc.abstractmethod
    def step(self, tune: bool = False) -> torch.Tensor:
        """One Markov step of every chain; returns the per-chain acceptance (n_chains,) in [0, 1].

        ``tune`` is True only during thermalisation: adapt step sizes then, never after.
        """

    def info(self) -> dict[str, Any]:
        """Sampler settings and tuned values for results.json (e.g. the HMC step size)."""
        return {}

    def extras(self) -> dict[str, np.ndarray]:
        """Per-step arrays worth keeping beside the chain (e.g. IMH log-weights), for plots."""
        return {}


@dataclass
class Chain:
    """What a sampler run produced: primaries per step and chain, acceptance and timing."""

    #: observable name -> array (n_steps, n_chains, k) of float64 primary quantities
    primaries: dict[str, np.ndarray]
    #: (n_steps, n_chains) per-step acceptance (0/1 for Metropolis tests, probability otherwise)
    accepted: np.ndarray
    n_chains: int
    wall_time_s: float
    therm_time_s: float
    info: dict[str, Any] = field(default_factory=dict)
    #: per-step arrays from ``Sampler.extras`` (e.g. "log_weights"), not written to results.json
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(self.accepted.shape[0])

    @property
    def n_samples(self) -> int:
        return self.n_steps * self.n_chains

    @property
    def acceptance(self) -> float:
        return float(self.accepted.mean()) if self.accepted.size else float("nan")


def run_chain(
    sampler: Sampler,
    measure: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    n_samples: int,
    n_therm: int | None = None,
    measure_every: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Chain:
    """Thermalise, then record ``measure(state)`` every ``measure_every`` steps.

    ``n_samples`` counts measured configurations of all chains together;
    ``n_therm`` (steps per chain, tuning allowed) defaults to max(100, n_steps // 5).
    ``progress(done, total)`` is called with step counts (thermalisation included).
    """
    n_steps = -(-int(n_samples) // sampler.n_chains)  # ceil
    if n_steps < 2:
        raise ConfigError(
            f"run.n_samples: {n_samples} gives fewer than 2 steps per chain with "
            f"{sampler.n_chains} chains; raise n_samples or lower sampler.n_chains"
        )
    if n_therm is None:
        n_therm = max(100, n_steps // 5)
    total = n_therm + n_steps * measure_every
    done = 0
    t0 = time.perf_counter()
    for _ in range(n_therm):
        sampler.step(tune=True)
        done += 1
        if progress and done % 10 == 0:
            progress(done, total)
    _sync(sampler.device)
    t1 = time.perf_counter()
    records: dict[str, list[torch.Tensor]] = {}
    accepted: list[torch.Tensor] = []
    for _ in range(n_steps):
        acc = torch.zeros(sampler.n_chains, device=sampler.device, dtype=torch.float64)
        for _ in range(measure_every):
            acc = acc + sampler.step(tune=False).to(torch.float64)
            done += 1
        accepted.append(acc / measure_every)
        with torch.no_grad():
            for name, value in measure(sampler.state).items():
                records.setdefault(name, []).append(value.detach().to(torch.float64).reshape(sampler.n_chains, -1))
        if progress and done % 10 == 0:
            progress(done, total)
    _sync(sampler.device)
    t2 = time.perf_counter()
    if progress:
        progress(total, total)
    return Chain(
        primaries={k: torch.stack(v).cpu().numpy() for k, v in records.items()},
        accepted=torch.stack(accepted).cpu().numpy(),
        n_chains=sampler.n_chains,
        wall_time_s=t2 - t1,
        therm_time_s=t1 - t0,
        info=sampler.info(),
        extras=sampler.extras(),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
