"""2D U(1): the action and force, gauge invariance, the charge, von Mises draws, HMC on the circle,
and the heatbath and HMC against the exact <cos P> and <Q^2> (fixed seeds, 4 sigma)."""

from __future__ import annotations

import math

import pytest
import torch
from lattgen_classical.hmc import omelyan
from lattgen_u1 import U1Action
from lattgen_u1.exact import exact_results
from lattgen_u1.observables import OBSERVABLES, topological_charge_of
from lattgen_u1.von_mises import sample_von_mises
from rounding import assert_close_to_rounding, scalar_condition
from scipy.special import ive
from u1_checks import imh_reproduces_exact

from lattgen import ConfigError, Lattice, LatticeError, wrap_angle
from lattgen.config import resolve_config
from lattgen.sample import run_sampling

pytestmark = pytest.mark.usefixtures("one_thread")


def links(shape, seed, n=4, scale=math.pi):
    g = torch.Generator().manual_seed(seed)
    return wrap_angle(scale * (2 * torch.rand((n, 2, *shape), generator=g, dtype=torch.float64) - 1))


def gauge_transform(theta, seed):
    """theta_mu(x) -> alpha(x) + theta_mu(x) - alpha(x + mu), wrapped (a random U(1) gauge transformation)."""
    g = torch.Generator().manual_seed(seed)
    alpha = 2 * math.pi * torch.rand((theta.shape[0], *theta.shape[2:]), generator=g, dtype=torch.float64)
    out = torch.stack([alpha - torch.roll(alpha, -1, dims=1 + mu) for mu in (0, 1)], dim=1)
    return wrap_angle(theta + out)


@pytest.mark.numerical
def test_force_is_the_gradient():
    action = U1Action(Lattice([4, 6]), 1.3)
    theta = links((4, 6), 0)
    x = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(action.action(x).sum(), x)
    assert_close_to_rounding(action.force(theta), g, 1 + 4 * action.beta, "analytic force")
    assert torch.allclose(action.action_float64(theta), action.action(theta), rtol=0, atol=1e-12 * 24 * 1.3)


@pytest.mark.numerical
def test_action_and_observables_are_gauge_invariant():
    lat = Lattice([4, 4])
    action = U1Action(lat, 2.0)
    theta = links((4, 4), 1)
    rotated = gauge_transform(theta, 2)
    assert_close_to_rounding(action.action_float64(rotated), action.action_float64(theta),
                             scalar_condition(action.action_float64, theta), "S gauge invariant")
    for name, (factory, _) in OBSERVABLES.items():
        obs = factory(lat)
        a, b = obs.primaries(theta), obs.primaries(rotated)
        if name.startswith("topological"):
            assert torch.equal(a, b), f"{name}: an integer function, exactly invariant"
        else:  # cosines of sums of <= 9 plaquettes of 4 links: rounding of ~40 angles of size pi
            assert_close_to_rounding(a, b, torch.full_like(a, 40 * math.pi), name)


def test_charge_is_an_integer_and_odd_under_reflection():
    theta = links((6, 4), 3, n=64)
    q = wrap_angle(theta[:, 0] + torch.roll(theta[:, 1], -1, 1) - theta[:, 1] - torch.roll(theta[:, 0], -1, 2))
    raw = q.sum(dim=(1, 2)) / (2 * math.pi)
    assert float((raw - torch.round(raw)).abs().max()) < 1e-12, "sum_P wrap(theta_P) / 2 pi is an integer"
    charges = topological_charge_of(theta)
    assert torch.equal(charges, torch.round(raw)) and int(charges.abs().max()) >= 1
    assert torch.equal(topological_charge_of(-theta), -charges), "Q(-theta) = -Q(theta)"


def test_von_mises_moments():
    """<cos(theta - mu)> = I_1(kappa)/I_0(kappa) and <sin(theta - mu)> = 0, 4 sigma; outputs wrapped."""
    g = torch.Generator().manual_seed(5)
    n = 20000
    for kappa in (1e-3, 0.7, 4.0, 60.0):
        mu = torch.full((n,), 2.9, dtype=torch.float64)
        th = sample_von_mises(mu, torch.full((n,), kappa, dtype=torch.float64), g)
        assert bool(((th > -math.pi) & (th <= math.pi)).all())
        c, s = torch.cos(th - mu), torch.sin(th - mu)
        exact = float(ive(1, kappa) / ive(0, kappa))
        assert abs(float(c.mean()) - exact) < 4 * float(c.std()) / math.sqrt(n)
        assert abs(float(s.mean())) < 4 * float(s.std()) / math.sqrt(n)


@pytest.mark.numerical
def test_md_on_the_circle_is_reversible_and_area_preserving():
    """Omelyan MD with the u1 force, then wrapped: momentum flip returns to the start (to rounding),
    and the Jacobian of (theta, p) -> (theta', p') has determinant 1 (autograd, 2 x 2 torus)."""
    action = U1Action(Lattice([2, 2]), 1.5)
    theta0 = links((2, 2), 7, n=1)
    p0 = torch.randn(theta0.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)

    def md(x):
        th, p = x[:8].reshape(theta0.shape).clone(), x[8:].reshape(theta0.shape).clone()
        omelyan(th, p, action.force, 0.1, 10)
        return torch.cat([wrap_angle(th).reshape(-1), p.reshape(-1)])

    x0 = torch.cat([theta0.reshape(-1), p0.reshape(-1)])
    x1 = md(x0)
    back = md(torch.cat([x1[:8], -x1[8:]]))
    assert float(wrap_angle(back[:8] - x0[:8]).abs().max()) < 1e-12 and float((back[8:] + x0[8:]).abs().max()) < 1e-12
    jac = torch.autograd.functional.jacobian(md, x0)
    assert float(torch.linalg.det(jac)) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("sampler, params, beta, n_samples, n_therm", [
    ("u1_heatbath", {"n_chains": 32, "n_overrelax": 1}, 1.0, 6400, 50),
    ("u1_heatbath", {"n_chains": 32, "n_overrelax": 2}, 3.0, 6400, 50),
    ("hmc", {"n_chains": 32, "trajectory_length": 1.0}, 1.0, 8000, 200),
    ("hmc", {"n_chains": 32, "trajectory_length": 1.0}, 3.0, 8000, 200),
])
def test_samplers_reproduce_the_exact_results(sampler, params, beta, n_samples, n_therm):
    """<cos P> and <Q^2> on 4 x 4 within 4 sigma (Gamma-method errors) of the exact values.

    HMC's tau_int(Q^2) is ~9 trajectories at beta = 3 (length 1): a hot start needs ~20 tau of
    thermalisation (with 50 trajectories <Q^2> came out 0.057(10) against 0.106)."""
    cfg = resolve_config({"action": {"name": "u1", "lattice": [4, 4], "beta": beta},
                          "sampler": {"name": sampler, **params},
                          "run": {"n_samples": n_samples, "seed": 11, "n_therm": n_therm,
                                  "observables": ["plaquette", "topological_charge_squared"]}},
                         require=("action", "sampler"))
    results, _ = run_sampling(cfg)
    exact = exact_results(Lattice([4, 4]), beta)
    for name in ("plaquette", "topological_charge_squared"):
        o = results["observables"][name]
        assert abs(o["value"] - exact[name]) < 4 * o["error"], (name, o["value"], o["error"], exact[name])


@pytest.mark.parametrize("beta", [0.0, -1.0, math.inf])
def test_bad_beta_is_a_config_error(beta):
    with pytest.raises(ConfigError, match="beta"):
        U1Action(Lattice([4, 4]), beta)


def test_bad_lattices():
    with pytest.raises(LatticeError, match="two-dimensional"):
        U1Action(Lattice([4, 4, 4]), 1.0)
    from lattgen_u1.heatbath import U1Heatbath
    with pytest.raises(LatticeError, match="even"):
        U1Heatbath(U1Action(Lattice([4, 5]), 1.0))


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_trained_flow_with_imh_reproduces_the_exact_results(tmp_path, beta):
    """A briefly trained u1_equivariant flow proposing for IMH (exact whatever the training):
    <cos P> and <Q^2> on 4 x 4 within 4 sigma of the exact values."""
    imh_reproduces_exact(tmp_path / "run", (4, 4), beta, {"name": "u1_equivariant", "n_layers": 8, "hidden": [8]},
                         {"max_steps": 40, "batch_size": 32, "lr": 3e-3, "eval_batch": 128, "log_every": 40},
                         n_samples=2048, min_acceptance=0.05)
