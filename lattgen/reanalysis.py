"""``lattgen analyse``: measure observables on a saved ensemble and run the same Gamma method.

The ensemble's own resolved config rebuilds its action; the configurations are checked against
the action's field space (an ensemble of another theory or lattice is refused) and validated
block by block (``lattgen.ensemble``). Each saved step is measured as one batch of all chains,
exactly the batch ``run_chain`` measured during sampling, and analysed by ``analyse_chain``: with
``--save-every 1`` the result equals the live analysis of the same run bit for bit (the stored
configurations are the sampler's states in the run's dtype, not a rounded copy).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .analysis import analyse_chain
from .build import build_action, build_observables
from .config import resolve_config
from .ensemble import Ensemble, EnsembleError
from .errors import LattgenError, LattgenWarning
from .metadata import run_metadata
from .observable import measure_all
from .registry import Registry, get_registry
from .sample import run_observables
from .sampler import Chain


def open_checked(path: str | Path, observables: Sequence[str] | None = None,
                 registry: Registry | None = None) -> tuple[Ensemble, dict[str, Any], Any, list[str]]:
    """(open ensemble, its resolved config, action, observable names) after every check that needs
    no configuration read: the format, the datasets, the config building here, the field space
    (another theory or lattice), the observables valid for that field space. EnsembleError else."""
    reg = registry or get_registry()
    ens = Ensemble(path)
    try:
        try:
            config = resolve_config(ens.config, reg, require=("action",))
            action = build_action(config["action"], reg)
        except LattgenError as exc:
            raise EnsembleError(f"{ens.path}: its config does not build here ({exc})") from None
        ens.check_space(action.field_space)
        names = list(observables) if observables else run_observables(config, action, reg)
        valid = reg.for_field("observable", action.field_space)
        wrong = [n for n in names if n not in valid]
        if wrong:
            raise EnsembleError(
                f"observable {wrong[0]!r} is not registered for the ensemble's field space "
                f"({action.field_space.manifold}, action {config['action']['name']!r}); available: "
                f"{', '.join(valid) or '(none)'}")
    except BaseException:
        ens.close()
        raise
    return ens, config, action, names


def analyse_ensemble(
    path: str | Path,
    observables: Sequence[str] | None = None,
    *,
    registry: Registry | None = None,
    device: str = "cpu",
    block_steps: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], Chain]:
    """(results, chain) of the ensemble file ``path``: results.json's schema plus ``ensemble``
    (file, steps, complete, save_every). ``observables``: names registered for the ensemble's
    field space (default: the ones the run measured). Bad input is an EnsembleError; the file
    is opened read-only."""
    reg = registry or get_registry()
    t0 = time.perf_counter()
    ens, config, action, names = open_checked(path, observables, reg)
    with ens:
        obs = build_observables(action.lattice, names, reg, field=action.field_space.manifold)
        if not ens.complete:
            warnings.warn(f"{ens.path} is incomplete (the run was interrupted): analysing the "
                          f"{ens.n_steps} steps it holds", LattgenWarning, stacklevel=2)
        measure = measure_all(obs)
        records: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for lo, phi in ens.blocks(action.field_space, block_steps):
                phi = phi.to(device)
                for t in range(phi.shape[0]):  # one batch of all chains per step, as run_chain
                    for name, value in measure(phi[t]).items():
                        records.setdefault(name, []).append(
                            value.detach().to(torch.float64).reshape(ens.n_chains, -1))
                if progress:
                    progress(lo + phi.shape[0], ens.n_steps)
        chain = Chain(
            primaries={k: torch.stack(v).cpu().numpy() for k, v in records.items()},
            accepted=ens.accepted(),
            n_chains=ens.n_chains,
            wall_time_s=float(ens.attrs.get("wall_time_s", float("nan"))),
            therm_time_s=0.0,
            info=ens.info(),
        )
        lw = ens.log_weight()
        if lw is not None:
            chain.extras["state_log_weights"] = lw
        ensemble = {"file": str(ens.path), "n_steps": ens.n_steps, "n_chains": ens.n_chains,
                    "complete": ens.complete, "save_every": int(ens.attrs.get("save_every", 1)),
                    "written_by": str(ens.attrs.get("lattgen_version", ""))}
    if chain.n_steps < 2:
        raise EnsembleError(f"{path} holds {chain.n_steps} step(s) per chain; the Gamma method needs at least 2")
    t_an = time.perf_counter()
    analysed = analyse_chain(chain, obs)
    results = {
        "lattgen_version": __version__,
        "action": dict(config["action"]),
        "sampler": dict(config.get("sampler", {})),
        "run": dict(config["run"]),
        "n_samples": chain.n_samples,
        "n_chains": chain.n_chains,
        "n_steps": chain.n_steps,
        "acceptance": chain.acceptance,
        "wall_time_s": chain.wall_time_s,
        "analysis_time_s": time.perf_counter() - t_an,
        "total_time_s": time.perf_counter() - t0,
        "sampler_info": chain.info,
        "observables": analysed,
        "ensemble": ensemble,
        #: measurements of the run between two analysed configurations (its --save-every): pyerrors
        #: numbers them 1, 1 + stride, ... so that they line up with the run's own measurements
        "measurement_stride": ensemble["save_every"],
        "metadata": run_metadata(device),
    }
    if "model" in config:
        results["model"] = dict(config["model"])
    return results, chain
