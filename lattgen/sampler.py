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
    #: this sampler's chains are one share of a run spread over torch.distributed ranks
    #: (set by ``lattgen.sample``): tuners then average over every rank's chains (``chain_mean``)
    across_ranks: bool = False

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
        if generator is not None and torch.device(generator.device).type != self.device.type:
            raise ConfigError(
                f"the random generator is on {generator.device} but the sampler runs on {self.device}; "
                "create it with lattgen.make_generator(seed, device)"
            )
        #: (n_chains, *action.field_space.shape): the chains' current configurations
        self.state: torch.Tensor = action.field_space.cold(self.n_chains, device=self.device, dtype=dtype)

    @abc.abstractmethod
    def step(self, tune: bool = False) -> torch.Tensor:
        """One Markov step of every chain; returns the per-chain acceptance (n_chains,) in [0, 1].

        ``tune`` is True only during thermalisation: adapt step sizes then, never after.
        """

    def chain_mean(self, values: torch.Tensor) -> float:
        """Mean of ``values`` (per-chain statistics, e.g. acceptance probabilities) over every
        chain of the run, as a float for a tuner: this sampler's chains, or, ``across_ranks``,
        every rank's (one all-reduce), so that every rank tunes to the same step size."""
        if not self.across_ranks:
            return float(values.mean())
        from . import distributed

        return distributed.global_mean(values)

    def info(self) -> dict[str, Any]:
        """Sampler settings and tuned values for results.json (e.g. the HMC step size)."""
        return {}

    @staticmethod
    def merge_info(infos: Sequence[Mapping[str, Any]], n_chains: Sequence[int]) -> dict[str, Any]:
        """One ``info`` for a run whose chains were spread over ranks (``infos[r]``, with
        ``n_chains[r]`` chains, from rank r). Default: ``n_chains`` summed; a value every rank
        agrees on kept; differing numbers averaged with the chain counts as weights; anything
        else listed per rank. Samplers with counts or extremes in their info override this."""
        return merge_infos(infos, n_chains)

    def extras(self) -> dict[str, np.ndarray]:
        """Per-step arrays worth keeping beside the chain (e.g. IMH log-weights), for plots."""
        return {}


def merge_infos(infos: Sequence[Mapping[str, Any]], n_chains: Sequence[int],
                sums: Sequence[str] = ("n_chains",), maxima: Sequence[str] = ()) -> dict[str, Any]:
    """The default ``Sampler.merge_info``; keys in ``sums`` are added, in ``maxima`` maximised.

    Every value that differs between ranks is also listed, in rank order, under ``per_rank``.
    """
    out: dict[str, Any] = {}
    per_rank: dict[str, list[Any]] = {}
    weights = np.asarray(n_chains, dtype=np.float64)
    for key in infos[0]:
        values = [info.get(key) for info in infos]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        same = all(v == values[0] for v in values)
        if not same:
            per_rank[key] = list(values)
        if key in sums and numbers:
            out[key] = sum(values)
        elif key in maxima and numbers:
            out[key] = max(values)
        elif same:
            out[key] = values[0]
        elif numbers:
            out[key] = float(np.sum(weights * np.asarray(values, dtype=np.float64)) / weights.sum())
        else:
            out[key] = list(values)
    if per_rank:
        out["per_rank"] = per_rank
    return out


def merge_chains(chains: Sequence[Chain], info: Mapping[str, Any] | None = None) -> Chain:
    """One Chain from chains of equal length run side by side (e.g. on several ranks): the chain
    axis concatenated in order, the wall and thermalisation times the slowest part's. ``info``
    replaces the first chain's (see ``Sampler.merge_info``)."""
    first = chains[0]
    lengths = {c.n_steps for c in chains}
    if len(lengths) != 1:
        raise ValueError(f"chains to merge have different lengths {sorted(lengths)}")

    def cat(arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays, axis=1)

    extras = {}
    for key in first.extras:
        parts = [c.extras.get(key) for c in chains]
        if all(p is not None and np.ndim(p) >= 2 and np.shape(p)[1] == c.n_chains for p, c in zip(parts, chains)):
            extras[key] = cat(parts)
    return Chain(
        primaries={k: cat([c.primaries[k] for c in chains]) for k in first.primaries},
        accepted=cat([c.accepted for c in chains]),
        n_chains=sum(c.n_chains for c in chains),
        wall_time_s=max(c.wall_time_s for c in chains),
        therm_time_s=max(c.therm_time_s for c in chains),
        info=dict(info) if info is not None else dict(first.info),
        extras=extras,
    )


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
    record: Callable[[Sampler, torch.Tensor], None] | None = None,
) -> Chain:
    """Thermalise, then record ``measure(state)`` every ``measure_every`` steps.

    ``n_samples`` counts measured configurations of all chains together;
    ``n_therm`` (steps per chain, tuning allowed) defaults to max(100, n_steps // 5).
    ``progress(done, total)`` is called with step counts (thermalisation included).
    ``record(sampler, accepted)`` sees every measured configuration (``sampler.state``) with the
    step's acceptance (n_chains,), on the device: e.g. ``lattgen.ensemble.EnsembleWriter``, which
    buffers there and writes in blocks.
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
            if record is not None:
                record(sampler, accepted[-1])
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
