"""Shared check of the u1 flow tests: train briefly, sample with IMH, compare with the exact values."""

from __future__ import annotations

from lattgen_u1.exact import exact_results

from lattgen import Lattice
from lattgen.config import resolve_config
from lattgen.rundir import load_trained, train_run
from lattgen.sample import run_sampling

HEADLINE = ("plaquette", "topological_charge_squared")


def imh_reproduces_exact(run_dir, shape, beta, model, train, n_samples, min_acceptance, seed=3):
    """Train ``model`` on u1(shape, beta) with ``train``, sample 16 IMH chains, and assert <cos P>
    and <Q^2> within 4 sigma of the exact values (the acceptance floor keeps the test's power)."""
    cfg = resolve_config({"action": {"name": "u1", "lattice": list(shape), "beta": beta}, "model": model,
                          "train": train, "run": {"seed": seed}}, require=("action", "model", "train"))
    train_run(cfg, run_dir)
    config, _, trained = load_trained(run_dir)
    sample = resolve_config(dict(config, sampler={"name": "imh", "n_chains": 16},
                                 run=dict(config["run"], n_samples=n_samples, n_therm=20, observables=list(HEADLINE))),
                            require=("action", "sampler"))
    results, _ = run_sampling(sample, model=trained)
    assert results["acceptance"] > min_acceptance, "the chain moves: the test has power"
    exact = exact_results(Lattice(list(shape)), beta)
    for name in HEADLINE:
        o = results["observables"][name]
        assert abs(o["value"] - exact[name]) < 4 * o["error"], (name, o["value"], o["error"], exact[name])
