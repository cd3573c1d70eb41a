"""The `sample` pipeline: build action and sampler, run the chain, analyse every observable.

The same function serves `lattgen sample` and the compare harness, so every chain is analysed
by the same code (same observables, same Gamma method, same thermalisation rule).

Under torchrun (a torch.distributed group of W > 1 processes) the ``n_chains`` chains are
dealt over the ranks: rank r runs its share with its own random stream
(``rank_seed(run.seed, r)``) and the same number of steps per chain as one process would; the
chains' records are gathered into one chain set in rank order, rank 0 analyses it with the same
code, and every rank returns rank 0's results. With one process nothing changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import __version__, distributed
from .analysis import analyse_chain
from .build import (
    build_action,
    build_observables,
    build_sampler,
    default_observables,
    make_generator,
)
from .conditional import condition_on
from .errors import ConfigError
from .metadata import run_metadata
from .model import GenerativeModel
from .observable import measure_all
from .registry import Registry, get_registry
from .sampler import Chain, merge_chains, merge_infos, run_chain


def run_sampling(
    config: Mapping[str, Any],
    *,
    model: GenerativeModel | None = None,
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
    action=None,
    save_configs: str | Path | None = None,
    save_every: int = 1,
    compress: bool = True,
) -> tuple[dict[str, Any], Chain]:
    """Sample with a resolved config (sections action, sampler, run); return (results, chain).

    ``results`` follows the results.json schema: action, sampler, n_samples, acceptance,
    wall_time_s, observables{name: value, error, tau_int, tau_int_error, ...}.
    ``save_configs``: write every ``save_every``-th measured configuration to this HDF5 file
    while sampling (``lattgen.ensemble``; one process only), gzipped unless not ``compress``.

    Data-parallel (see the module docstring): every rank returns the same results and the
    gathered chain of all ranks; ``progress`` is called on rank 0 only.
    """
    reg = registry or get_registry()
    run = config["run"]
    action = action if action is not None else build_action(config["action"], reg)
    sampler_section, n_samples, seed = dict(config["sampler"]), run["n_samples"], run["seed"]
    world, rank = distributed.world(), distributed.rank()
    if world > 1:
        sampler_section, n_samples = _rank_share(sampler_section, n_samples, reg, world, rank)
        seed = distributed.rank_seed(seed, rank)
        progress = progress if rank == 0 else None
    generator = make_generator(seed, run["device"])
    if model is not None:
        model = model.to(run["device"])
        condition_on(model, action)  # a conditional model samples q(. | the action's couplings)
    sampler = build_sampler(sampler_section, action, run=run, generator=generator, model=model, registry=reg)
    sampler.across_ranks = world > 1
    observables = build_observables(action.lattice, run_observables(config, action, reg), reg,
                                   field=action.field_space.manifold)
    writer = None
    if save_configs is not None:
        if world > 1:
            raise ConfigError("--save-configs: saving an ensemble runs in one process (not under torchrun)")
        from .ensemble import EnsembleWriter

        n_steps = -(-int(n_samples) // sampler.n_chains)  # run_chain's steps and thermalisation rule
        n_therm = run["n_therm"] if run["n_therm"] is not None else max(100, n_steps // 5)
        writer = EnsembleWriter(save_configs, action.field_space, n_chains=sampler.n_chains, config=config,
                                dtype=sampler.dtype, device=sampler.device, save_every=save_every,
                                n_planned=-(-n_steps // int(save_every)), n_therm=n_therm,
                                metadata=run_metadata(run["device"]), compress=compress)
    t0 = time.perf_counter()
    try:
        chain = run_chain(
            sampler,
            measure_all(observables),
            n_samples=n_samples,
            n_therm=run["n_therm"],
            measure_every=run["measure_every"],
            progress=progress,
            record=writer,
        )
    except BaseException:
        if writer is not None:
            writer.abort()  # what was written stays readable, marked incomplete
        raise
    if writer is not None:
        writer.close(chain)
    if world > 1:
        parts = distributed.all_gather_object(chain)
        merge_info = getattr(type(sampler), "merge_info", merge_infos)  # duck-typed samplers: the default
        chain = merge_chains(parts, merge_info([c.info for c in parts], [c.n_chains for c in parts]))
    t_total = time.perf_counter() - t0
    t_an = time.perf_counter()
    analysed = distributed.run_on_main(analyse_chain, chain, observables) if world > 1 else \
        analyse_chain(chain, observables)
    results = {
        "lattgen_version": __version__,
        "action": dict(config["action"]),
        "sampler": dict(config["sampler"]),
        "run": dict(run),
        "n_samples": chain.n_samples,
        "n_chains": chain.n_chains,
        "n_steps": chain.n_steps,
        "acceptance": chain.acceptance,
        "wall_time_s": chain.wall_time_s,
        "therm_time_s": chain.therm_time_s,
        "total_time_s": t_total,
        "analysis_time_s": time.perf_counter() - t_an,
        "sampler_info": chain.info,
        "observables": analysed,
        "metadata": run_metadata(run["device"]),
    }
    if "model" in config:
        results["model"] = dict(config["model"])
    if writer is not None:
        results["ensemble"] = {"file": Path(save_configs).name, "save_every": int(save_every),
                               "n_steps": writer.n_written, "n_chains": writer.n_chains}
    if world > 1:
        results["processes"] = world
        results = distributed.broadcast_object(results)  # rank 0's times: one results.json
    return results, chain


def run_observables(config: Mapping[str, Any], action, registry: Registry) -> list[str]:
    """The observables a run measures: ``run.observables``, else the theory's (or every one
    registered for the action's field space)."""
    names = config["run"].get("observables")
    if names is None:
        names = default_observables(action, registry.theory(config["action"]["name"]).observables, registry)
    return list(names)


def _rank_share(section: Mapping[str, Any], n_samples: int, registry: Registry, world: int,
                rank: int) -> tuple[dict[str, Any], int]:
    """This rank's [sampler] section (its share of n_chains) and n_samples (its chains' share of
    the run's steps per chain, which stays ceil(n_samples / n_chains) as in one process)."""
    spec = registry.get("sampler", section["name"])
    if "n_chains" not in section or "n_chains" not in {p.name for p in spec.params}:
        raise ConfigError(f"sampler {section['name']!r} has no n_chains parameter: it cannot spread its "
                          "chains over torchrun's processes; run it in one process")
    total = int(section["n_chains"])
    if total < world:
        raise ConfigError(f"sampler.n_chains: {total} chains cannot be spread over {world} processes; "
                          f"use at least {world} (a multiple of {world} keeps the ranks equally busy)")
    steps = -(-int(n_samples) // total)
    if steps < 2:
        raise ConfigError(f"run.n_samples: {n_samples} gives fewer than 2 steps per chain with {total} "
                          "chains; raise n_samples or lower sampler.n_chains")
    count, _ = distributed.split(total, world, rank)
    return dict(section, n_chains=count), steps * count
