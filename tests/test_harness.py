"""The compare harness end to end at tiny size, its JSON schema, resume, and the
consistency check catching a sampler that is not exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lattgen.harness import consistency, resolve_compare, run_compare
from lattgen.report import verdict_lines
from lattgen.registry import Registry

from wrong_model_plugin import WrongModelPlugin

FREE = {"name": "phi4", "lattice": [4, 4], "beta": 0.2, "lam": 0.0}


@pytest.fixture(scope="module")
def reg():
    return Registry([("wrongtest", WrongModelPlugin())])


def tiny(entries, **compare):
    c = {"train_steps": 2, "train_time_s": 20.0, "n_samples": 4000, "workers": 1, "seed": 3,
         "observables": ["susceptibility", "abs_magnetisation", "magnetisation", "correlation_length",
                         "zero_momentum_correlator"]}
    c.update(compare)
    return {"action": FREE, "compare": c, "entries": entries}


def check_schema(summary):
    for e in summary["entries"]:
        for key in ("label", "action", "sampler", "n_samples", "acceptance", "wall_time_s", "observables",
                    "performance", "consistency", "training"):
            assert key in e, key
        for obs in ("susceptibility", "abs_magnetisation"):
            assert set(e["observables"][obs]) >= {"value", "error", "tau_int", "tau_int_error"}
        for key in ("ess_per_s", "time_to_target_s", "tau_int_susceptibility", "tau_int_abs_magnetisation"):
            assert key in e["performance"]


def test_wrong_model_is_flagged_and_exact_ones_are_not(reg, tmp_path):
    entries = [
        {"label": "hmc", "sampler": {"name": "hmc"}},
        {"label": "exact", "model": {"name": "gaussian_exact"}, "train": {"lr": 1e-6}},
        {"label": "wrong", "model": {"name": "gaussian_wrong"}, "train": {"lr": 1e-6}},
    ]
    summary = run_compare(resolve_compare(tiny(entries), reg), tmp_path, registry=reg)
    check_schema(summary)
    by = {e["label"]: e for e in summary["entries"]}
    assert not by["wrong"]["consistency"]["consistent"]
    assert abs(by["wrong"]["consistency"]["pulls"]["susceptibility"]) > 3
    # the free field's exact values are the reference: hmc, the only classical entry, is pulled too
    assert summary["exact"]["susceptibility"] > 0
    assert abs(by["hmc"]["consistency"]["pulls"]["susceptibility"]) < 3 and by["hmc"]["consistency"]["consistent"]
    assert abs(by["exact"]["consistency"]["pulls"]["susceptibility"]) < 3
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert [e["label"] for e in on_disk["entries"]] == ["hmc", "exact", "wrong"]
    assert on_disk["verdicts"]["wrong"] == "NO" and on_disk["verdicts"]["hmc"] == "yes"
    assert (tmp_path / "config.toml").is_file()  # written with the results, at the end
    for png in ("tau_int.png", "histograms.png", "correlator.png", "training.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_resume_skips_finished_entries(reg, tmp_path):
    cfg = resolve_compare(tiny([{"label": "hmc", "sampler": {"name": "hmc"}}], n_samples=400), reg)
    first = run_compare(cfg, tmp_path, registry=reg)
    stamp = (tmp_path / "entries" / "hmc" / "results.json").stat().st_mtime_ns
    second = run_compare(cfg, tmp_path, registry=reg)
    assert (tmp_path / "entries" / "hmc" / "results.json").stat().st_mtime_ns == stamp
    assert second["entries"][0]["observables"] == first["entries"][0]["observables"]


def test_consistency_pulls_against_the_classical_reference():
    def entry(label, v, s, model=None):
        return {"label": label, "model": model, "observables": {"x": {"value": v, "error": s}}}

    out = consistency([entry("a", 1.0, 0.1), entry("b", 1.0, 0.1), entry("c", 2.0, 0.1, {"name": "m"})], sigma=3)
    # c against the pool of a and b: (2 - 1) / sqrt(0.1^2 + 0.1^2 / 2)
    assert not out["c"]["consistent"] and out["c"]["pulls"]["x"] == pytest.approx(1.0 / (0.1 * 1.5**0.5))
    # a against b alone (leave-one-out within the reference): the model entry does not pull it
    assert out["a"]["pulls"]["x"] == pytest.approx(0.0) and out["a"]["consistent"]
    lone = consistency([entry("a", 1.0, 0.1), entry("c", 1.1, 0.1, {"name": "m"})], sigma=3)
    assert lone["a"]["pulls"] == {} and lone["c"]["pulls"]["x"] == pytest.approx(0.1 / (0.1 * 2**0.5))
    models = consistency([entry("c", 1.0, 0.1, {"name": "m"}), entry("d", 1.3, 0.1, {"name": "n"})], sigma=3)
    assert models["d"]["pulls"]["x"] == pytest.approx(0.3 / (0.1 * 2**0.5))
    assert out["c"]["verdict"] == "NO" and out["a"]["verdict"] == "yes"


def test_consistency_pulls_against_the_exact_value_where_the_action_knows_it():
    """With an exact value every entry, classical ones included, is pulled against it (a frozen
    HMC chain off the exact value is caught, and a correct model is not blamed for it); an
    observable without one keeps the pooled classical reference."""
    def entry(label, x, y, model=None):
        return {"label": label, "model": model,
                "observables": {"x": {"value": x, "error": 0.1}, "y": {"value": y, "error": 0.1}}}

    entries = [entry("hmc", 2.0, 1.0), entry("flow", 1.05, 1.1, {"name": "m"})]
    out = consistency(entries, sigma=3, exact={"x": 1.0})
    assert out["hmc"]["pulls"]["x"] == pytest.approx(10.0) and out["hmc"]["verdict"] == "NO"
    assert out["flow"]["pulls"]["x"] == pytest.approx(0.5) and out["flow"]["verdict"] == "yes"
    assert out["flow"]["pulls"]["y"] == pytest.approx(0.1 / (0.1 * 2**0.5))  # y: against hmc
    assert "y" not in out["hmc"]["pulls"]  # a lone classical entry has nothing to pull y against
    without = consistency(entries, sigma=3)
    assert without["flow"]["verdict"] == "NO" and without["hmc"]["verdict"] == "yes"


def test_a_pull_with_an_unreliable_error_is_too_short_to_judge():
    """An entry whose Gamma window failed (``reliable`` False) is not called inconsistent on that
    observable: its error is an underestimate. A reliable failure still makes it NO."""
    def entry(label, v, s, model=None, reliable=True):
        return {"label": label, "model": model,
                "observables": {"x": {"value": v, "error": s, "reliable": reliable},
                                "y": {"value": 0.0, "error": 0.1}}}

    short = consistency([entry("a", 1.0, 0.1), entry("c", 2.0, 0.1, {"name": "m"}, reliable=False)], sigma=3)
    assert short["c"]["consistent"] and short["c"]["too_short"] == ["x"] and short["c"]["verdict"] == "too short"
    both = [entry("a", 1.0, 0.1), entry("c", 2.0, 0.1, {"name": "m"}, reliable=False)]
    both[1]["observables"]["y"] = {"value": 1.0, "error": 0.1}
    judged = consistency(both, sigma=3)
    assert not judged["c"]["consistent"] and judged["c"]["verdict"] == "NO"


def test_an_entry_whose_every_error_is_unreliable_is_too_short():
    """Small pulls prove nothing when every error is an underestimate (a wrong model trained 5 s
    used to pass as `yes`); a pull beyond sigma even against the between-chain spread is NO."""
    def entry(label, v, model=None, reliable=True, replica=None):
        obs = {n: {"value": v, "error": 0.1, "reliable": reliable} for n in ("x", "y")}
        for o in obs.values():
            if replica is not None:
                o["replica_error"] = replica
        return {"label": label, "model": model, "observables": obs}

    ref = [entry("a", 1.0), entry("b", 1.0)]
    out = consistency([*ref, entry("short", 1.1, {"name": "m"}, reliable=False)], sigma=3)
    assert out["short"]["verdict"] == "too short" and out["short"]["too_short"] == []
    assert out["short"]["unreliable"] == ["x", "y"] and out["a"]["verdict"] == "yes"
    within = consistency([*ref, entry("c", 1.5, {"name": "m"}, reliable=False, replica=0.3)], sigma=3)
    assert within["c"]["verdict"] == "too short" and within["c"]["too_short"] == ["x", "y"]
    beyond = consistency([*ref, entry("d", 3.0, {"name": "m"}, reliable=False, replica=0.3)], sigma=3)
    assert beyond["d"]["verdict"] == "NO" and not beyond["d"]["consistent"]
    summary = {"compare": {"sigma": 3.0}, "entries": [
        {"label": k, "consistency": v} for k, v in {**out, "d": beyond["d"]}.items()]}
    lines = verdict_lines(summary)
    assert any(line.startswith("NOT consistent") and "d" in line for line in lines)
    assert any(line.startswith("too short to judge: short") for line in lines)


def test_replica_error_is_the_spread_of_independent_chains():
    """For independent chains the jackknife over chains estimates the error of the mean whatever
    the autocorrelation within a chain: on AR(1) chains with tau_int = 20 it matches the exact
    error sigma sqrt(2 tau_int / N) within its own statistical error (about 1/sqrt(2 n_chains))."""
    from lattgen.analysis import MIN_REPLICAS, replica_error

    rng = np.random.default_rng(5)
    n_steps, n_chains, rho = 400, 64, 39 / 41  # tau_int = (1 + rho) / (2 (1 - rho)) = 20
    x = np.empty((n_steps, n_chains))
    x[0] = rng.normal(size=n_chains)
    for t in range(1, n_steps):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=n_chains)
    exact = np.sqrt(2 * 20 / (n_steps * n_chains))
    err = replica_error(x[..., None], lambda m: m[0])
    assert abs(err / exact - 1) < 4 / np.sqrt(2 * n_chains)
    assert replica_error(x[:, : MIN_REPLICAS - 1, None], lambda m: m[0]) is None


def test_default_entries_cover_models_and_classical(registry):
    cfg = resolve_compare({}, registry)
    labels = [e["label"] for e in cfg["entries"]]
    assert {"hmc", "metropolis"} <= set(labels)
    for name in registry.names("model"):
        spec = registry.get("model", name)
        if spec.meta.get("compare", True) and spec.meta.get("field", "real") == "real":  # the default: phi^4
            assert name in labels
    assert cfg["action"]["lattice"] == [8, 8] and cfg["action"]["beta"] == 0.577


@pytest.mark.parametrize("bad,needle", [
    ({"entries": []}, "entries"),
    ({"entries": [{"sampler": {"name": "hmc"}, "colour": 1}]}, "entries[0].colour"),
    ({"entries": [{"sampler": {"name": "hmc"}}, {"sampler": {"name": "hmc"}}]}, "used twice"),
    ({"entries": [{"sampler": {"name": "hmc"}, "train": {}}]}, "entries[0].train"),
    ({"compare": {"n_samples": 1}}, "compare.n_samples"),
    ({"compare": {"train_time_s": -1.0}}, "compare.train_time_s"),
    ({"comparison": {}}, "comparison"),
])
def test_bad_compare_configs(registry, bad, needle):
    from lattgen.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        resolve_compare(bad, registry)
    assert needle in str(exc.value)
