"""The `sample` pipeline: build action and sampler, run the chain, analyse every observable.

The same function serves `lattgen sample` and the compare harness, so every chain is analysed
by the same code (same observables, same Gamma method, same thermalisation rule).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from . import __version__
from .analysis import analyse_chain
from .build import build_action, build_observables, build_sampler, make_generator
from .model import GenerativeModel
from .observable import measure_all
from .registry import Registry, get_registry
from .sampler import Chain, run_chain


def run_sampling(
    config: Mapping[str, Any],
    *,
    model: GenerativeModel | None = None,
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
    action=None,
) -> tuple[dict[str, Any], Chain]:
    """Sample with a resolved config (sections action, sampler, run); return (results, chain).

    ``results`` follows the results.json schema: action, sampler, n_samples, acceptance,
    wall_time_s, observables{name: value, error, tau_int, tau_int_error, ...}.
    """
    reg = registry or get_registry()
    run = config["run"]
    action = action if action is not None else build_action(config["action"], reg)
    generator = make_generator(run["seed"], run["device"])
    if model is not None:
        model = model.to(run["device"])
    sampler = build_sampler(config["sampler"], action, run=run, generator=generator, model=model, registry=reg)
    observables = build_observables(action.lattice, run["observables"], reg)
    t0 = time.perf_counter()
    chain = run_chain(
        sampler,
        measure_all(observables),
        n_samples=run["n_samples"],
        n_therm=run["n_therm"],
        measure_every=run["measure_every"],
        progress=progress,
    )
    t_total = time.perf_counter() - t0
    t_an = time.perf_counter()
    analysed = analyse_chain(chain, observables)
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
    }
    if "model" in config:
        results["model"] = dict(config["model"])
    return results, chain
