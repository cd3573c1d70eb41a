"""`lattgen scale`: the power-law fit of tau_int against xi, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lattgen.errors import ConfigError
from lattgen.scaling import fit_power_law, resolve_scale, run_scale


def test_fit_recovers_an_exact_power_law():
    xi = np.array([1.5, 2.0, 2.5, 3.0, 4.0])
    tau = 0.7 * xi**2.1
    fit = fit_power_law(xi, tau, 0.05 * tau)
    assert fit["z"] == pytest.approx(2.1, abs=1e-10) and fit["c"] == pytest.approx(0.7)
    # error of z from the weights alone: sigma(log tau) = 0.05 on every point
    lx = np.log(xi)
    assert fit["z_error"] == pytest.approx(0.05 / math.sqrt(np.sum((lx - lx.mean()) ** 2)))


def test_fit_inflates_the_error_of_a_poor_fit():
    xi = np.array([1.0, 2.0, 3.0, 4.0])
    tau = np.array([1.0, 5.0, 6.0, 20.0])
    good = fit_power_law(xi, tau, 0.5 * tau)
    bad = fit_power_law(xi, tau, 0.01 * tau)
    assert bad["chi2_dof"] > 1 and bad["z_error"] > 0.01 / 0.5 * good["z_error"]


def test_fit_needs_two_points():
    assert math.isnan(fit_power_law([2.0], [3.0], [0.1])["z"])


def test_tiny_scale_run(registry, tmp_path):
    raw = {"scale": {"points": [[4, 0.45], [6, 0.536]]},
           "compare": {"n_samples": 2048, "workers": 1, "train_steps": 1,
                       "observables": ["susceptibility", "abs_magnetisation", "correlation_length"]},
           "entries": [{"sampler": {"name": "hmc", "n_chains": 32}},
                       {"sampler": {"name": "metropolis", "n_chains": 32}}]}
    result = run_scale(resolve_scale(raw, registry), tmp_path, registry=registry)
    assert {r["L"] for r in result["rows"]} == {4, 6}
    for label in ("hmc", "metropolis"):
        assert math.isfinite(result["fits"][label]["z"]) and result["fits"][label]["z_error"] >= 0
    xis = sorted(r["xi"] for r in result["rows"] if r["label"] == "hmc")
    assert xis[0] < xis[1]
    assert json.loads((tmp_path / "results.json").read_text())["fits"].keys() == {"hmc", "metropolis"}
    assert (tmp_path / "scale.png").stat().st_size > 1000


@pytest.mark.parametrize("points", [[[8, 0.5]], "L8", [[8]], [[8.5, 0.5], [6, 0.5]]])
def test_bad_points(registry, points):
    with pytest.raises(ConfigError, match="scale.points"):
        resolve_scale({"scale": {"points": points}}, registry)
