"""Pulls of many independent IMH runs of the untrained u1_tree flow against the exact values.

    python bench/bench_u1_tree_pulls.py L BETA N_SAMPLES N_SEEDS      # e.g. 16 6 16384 16

Each seed runs 16 IMH chains (batch 64) of N_SAMPLES proposals in all and records
(value - exact) / error for <cos P> and <Q^2>; the mean pull (with its error) tests the
flow + IMH for bias, the spread tests the Gamma-method errors.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from lattgen_u1.exact import exact_results

from lattgen import Lattice
from lattgen.config import resolve_config
from lattgen.registry import get_registry
from lattgen.sample import run_sampling

NAMES = ("plaquette", "topological_charge_squared")


def main(L: int, beta: float, n: int, seeds: int) -> None:
    torch.set_num_threads(1)
    reg = get_registry()
    action = reg.get("action", "u1").build(Lattice((L, L)), params={"beta": beta})
    exact = exact_results(Lattice((L, L)), beta)
    pulls: dict[str, list[float]] = {k: [] for k in NAMES}
    for seed in range(seeds):
        model = reg.get("model", "u1_tree").build(action).double()
        cfg = resolve_config({"action": {"name": "u1", "lattice": [L, L], "beta": beta},
                              "sampler": {"name": "imh", "n_chains": 16, "batch_size": 64},
                              "run": {"seed": seed, "n_samples": n, "observables": list(NAMES)}},
                             require=("action", "sampler"))
        results, _ = run_sampling(cfg, model=model)
        for name, values in pulls.items():
            o = results["observables"][name]
            values.append((o["value"] - exact[name]) / o["error"])
    for name, values in pulls.items():
        v = np.array(values)
        print(f"{name}: mean pull {v.mean():.2f} +- {v.std() / len(v) ** 0.5:.2f}, spread {v.std():.2f};",
              np.round(v, 1).tolist())


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
