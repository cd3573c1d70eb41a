"""HMC: exact free-field results, integrator properties, step-size tuning, reproducibility, config."""

from __future__ import annotations

import math

import pytest
import torch
from lattgen_classical.hmc import HMC, INTEGRATORS, MDSchedule, kinetic_energy
from lattgen_phi4 import Phi4Action

from lattgen import ConfigError, Lattice
from lattgen.action import Action
from lattgen.analysis import gamma_method
from lattgen.build import build_sampler, make_generator
from lattgen.sampler import run_chain

from free_field_checks import MOMENTA, assert_matches_exact, spectrum_chain

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run


# -- exact free-field results ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, beta, seed",
    [([6, 6], 0.1, 1), ([6, 6], 0.3, 2), ([6, 6], 0.45, 3), ([4, 4, 4], 0.15, 4), ([4, 4, 4], 0.3, 5)],
)
def test_free_field_propagator_and_susceptibility(shape, beta, seed):
    lat = Lattice(shape)
    act = Phi4Action(lat, beta=beta, lam=0.0)
    momenta = MOMENTA[lat.ndim]
    hmc = HMC(act, n_chains=128, generator=make_generator(seed))
    chain = spectrum_chain(hmc, momenta, n_steps=600)
    res = assert_matches_exact(chain, act, momenta)
    assert res.value[0] == pytest.approx(act.exact()["susceptibility"], abs=4 * res.error[0])


@pytest.mark.parametrize("integrator", sorted(INTEGRATORS))
def test_leapfrog_and_omelyan_with_fixed_step_in_float32(integrator):
    lat = Lattice([6, 6])
    act = Phi4Action(lat, beta=0.35, lam=0.0)
    momenta = MOMENTA[2]
    hmc = HMC(act, n_chains=64, dtype=torch.float32, generator=make_generator(11), integrator=integrator,
              n_steps=6, step_size=0.3, trajectory_jitter=0.2)
    assert hmc.state.dtype == torch.float32
    chain = spectrum_chain(hmc, momenta, n_steps=300)
    assert_matches_exact(chain, act, momenta)


class GaussianAction(Action):
    """S = (m2 / 2) sum_x phi_x^2 with the default (autograd) force: <phi_x^2> = 1/m2."""

    z2_symmetric = True

    def __init__(self, lattice, m2):
        super().__init__(lattice)
        self.m2 = m2

    def action(self, phi):
        return 0.5 * self.m2 * (phi * phi).sum(dim=self.lattice.dims)


def test_hmc_works_with_any_action_through_the_autograd_force():
    lat = Lattice([3, 5])
    act = GaussianAction(lat, m2=2.5)
    hmc = HMC(act, n_chains=32, generator=make_generator(3))
    chain = run_chain(hmc, lambda phi: {"phi2": (phi * phi).mean(dim=(1, 2))[:, None]}, 32 * 200, n_therm=50)
    res = gamma_method(chain.primaries["phi2"])
    assert abs(res.value - 1 / 2.5) < 4 * res.error


# -- the integrators ------------------------------------------------------------------------------
def random_phase_space(lat, n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, *lat.shape), generator=g, dtype=torch.float64),
            torch.randn((n, *lat.shape), generator=g, dtype=torch.float64))


@pytest.mark.parametrize("integrator", sorted(INTEGRATORS))
def test_integrator_is_reversible(integrator):
    lat = Lattice([4, 6])
    act = Phi4Action(lat, beta=0.6, lam=0.5)
    phi0, p0 = random_phase_space(lat, 8, 0)
    phi, p = phi0.clone(), p0.clone()
    eps = 0.1 * (1 + 0.1 * torch.rand(8, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    INTEGRATORS[integrator](phi, p, act.force, eps, 7)
    assert not torch.allclose(phi, phi0)
    p.neg_()
    INTEGRATORS[integrator](phi, p, act.force, eps, 7)
    assert torch.allclose(phi, phi0, atol=1e-12) and torch.allclose(-p, p0, atol=1e-12)


@pytest.mark.parametrize("integrator", sorted(INTEGRATORS))
def test_integrator_preserves_phase_space_volume(integrator):
    """det d(phi', p')/d(phi, p) = 1, Jacobian by central differences (float64, h = 1e-5)."""
    lat = Lattice([2, 2])
    act = Phi4Action(lat, beta=0.6, lam=0.5)
    phi0, p0 = random_phase_space(lat, 1, 2)
    x0 = torch.cat([phi0.reshape(-1), p0.reshape(-1)])
    V, h = lat.volume, 1e-5

    def flow(x):
        phi, p = x[:V].reshape(1, 2, 2).clone(), x[V:].reshape(1, 2, 2).clone()
        INTEGRATORS[integrator](phi, p, act.force, 0.2, 5)
        return torch.cat([phi.reshape(-1), p.reshape(-1)])

    eye = torch.eye(2 * V, dtype=torch.float64)
    jac = torch.stack([(flow(x0 + h * e) - flow(x0 - h * e)) / (2 * h) for e in eye], dim=1)
    assert float(torch.linalg.det(jac)) == pytest.approx(1.0, abs=1e-7)


def energy_violation(integrator, eps, tau=1.0):
    """Mean |Delta H| over 64 trajectories of length tau at step size eps."""
    lat = Lattice([6, 6])
    act = Phi4Action(lat, beta=0.55, lam=0.5)
    phi, p = random_phase_space(lat, 64, 4)
    h0 = act(phi) + kinetic_energy(p)
    INTEGRATORS[integrator](phi, p, act.force, eps, round(tau / eps))
    return float((act(phi) + kinetic_energy(p) - h0).abs().mean())


@pytest.mark.parametrize("integrator", sorted(INTEGRATORS))
def test_integrators_are_second_order(integrator):
    """|Delta H| ~ eps^2 at fixed trajectory length: halving eps divides it by ~4."""
    ratio = energy_violation(integrator, 0.05) / energy_violation(integrator, 0.025)
    assert 3.5 < ratio < 4.5


def test_omelyan_violates_energy_less_than_leapfrog():
    assert energy_violation("omelyan", 0.1) < energy_violation("leapfrog", 0.1) / 3


# -- tuning, exactness, reproducibility -----------------------------------------------------------
@pytest.mark.parametrize("target", [0.6, 0.9])
def test_step_size_tuning_reaches_target_acceptance(target):
    """After dual-averaging in thermalisation, the frozen step size accepts ~target of trajectories.

    The tolerance 0.05 allows for the finite tuning run (the averaged iterate converges like
    t^-1/2; its log-step noise maps onto the steep acceptance curve) plus the binomial error of
    256 x 100 trajectories (~0.003).
    """
    act = Phi4Action(Lattice([6, 6]), beta=0.536, lam=0.5)
    hmc = HMC(act, n_chains=256, target_acceptance=target, generator=make_generator(5))
    chain = run_chain(hmc, lambda phi: {}, 256 * 100, n_therm=200)
    assert chain.acceptance == pytest.approx(target, abs=0.05)
    info = chain.info
    assert info["step_size_tuned"] and info["step_size"] == hmc.step_size
    assert info["mean_acceptance_probability"] == pytest.approx(target, abs=0.05)


def test_step_size_is_frozen_after_thermalisation():
    """step(tune=False) never adapts: the measured chain is a time-homogeneous (exact) Markov chain."""
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    hmc = HMC(act, n_chains=16, generator=make_generator(0))
    for _ in range(30):
        hmc.step(tune=True)
    tuner_steps = hmc._tuner.t
    hmc.step(tune=False)
    frozen = hmc.step_size
    assert frozen == hmc._tuner.final
    for _ in range(20):
        hmc.step(tune=False)
    assert hmc.step_size == frozen and hmc._tuner.t == tuner_steps


def test_fixed_step_size_is_never_tuned():
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    hmc = HMC(act, n_chains=16, step_size=0.25, trajectory_length=1.0, generator=make_generator(0))
    for _ in range(10):
        hmc.step(tune=True)
    assert hmc.step_size == 0.25 and hmc.info()["n_md_steps"] == 4 and not hmc.info()["step_size_tuned"]


def run_states(seed, n=10):
    act = Phi4Action(Lattice([4, 6]), beta=0.5, lam=0.5)
    hmc = HMC(act, n_chains=8, generator=make_generator(seed))
    acc = [hmc.step(tune=i < n // 2) for i in range(n)]
    return hmc.state, torch.stack(acc), hmc.step_size


def test_chains_are_reproducible_with_the_same_seed():
    s1, a1, e1 = run_states(7)
    s2, a2, e2 = run_states(7)
    assert torch.equal(s1, s2) and torch.equal(a1, a2) and e1 == e2
    s3, _, _ = run_states(8)
    assert not torch.equal(s1, s3)


def test_state_replaced_from_outside_is_used():
    """The cached action is refreshed when someone replaces the state (e.g. a restart)."""
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    hmc = HMC(act, n_chains=4, generator=make_generator(0), step_size=0.2, trajectory_length=1.0)
    hmc.step()
    hmc.state = torch.zeros_like(hmc.state)
    assert torch.equal(hmc._current_action(), act(hmc.state))


# -- schedule and configuration -------------------------------------------------------------------
def test_md_schedule_combinations():
    assert MDSchedule.resolve(None, None, None) == MDSchedule(3.0, None, None)
    assert MDSchedule.resolve(2.0, None, None).tuned
    assert MDSchedule.resolve(1.0, 10, None) == MDSchedule(None, 10, 0.1)
    assert MDSchedule.resolve(None, 10, 0.1) == MDSchedule(None, 10, 0.1)
    assert MDSchedule.resolve(1.0, 10, 0.1) == MDSchedule(None, 10, 0.1)
    only_n = MDSchedule.resolve(None, 8, None)
    assert only_n.tuned and only_n.steps_for(0.37) == 8
    assert MDSchedule.resolve(2.0, None, 0.3).steps_for(0.3) == 7
    with pytest.raises(ConfigError, match="at most two"):
        MDSchedule.resolve(2.0, 10, 0.1)


def test_built_through_the_registry(registry):
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    run = {"device": "cpu", "dtype": "float32"}
    hmc = build_sampler({"name": "hmc", "n_chains": 5, "integrator": "leapfrog", "n_steps": 4},
                        act, run=run, generator=make_generator(0), registry=registry)
    assert isinstance(hmc, HMC) and hmc.state.shape == (5, 4, 4) and hmc.state.dtype == torch.float32
    assert hmc.step().shape == (5,)
    assert hmc.info()["integrator"] == "leapfrog" and hmc.info()["n_md_steps"] == 4


@pytest.mark.parametrize(
    "params, match",
    [
        ({"integrator": "euler"}, "integrator"),
        ({"trajectory_jitter": 1.0}, "trajectory_jitter"),
        ({"target_acceptance": 1.0}, "target_acceptance"),
        ({"step_size": 0.0}, "step_size"),
        ({"n_chains": 0}, "n_chains"),
        ({"init": "warm"}, "init"),
        ({"trajectory_length": 1.0, "n_steps": 4, "step_size": 0.1}, "at most two"),
    ],
)
def test_bad_sampler_parameters_raise_config_errors(registry, params, match):
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    with pytest.raises(ConfigError, match=match):
        build_sampler({"name": "hmc", **params}, act, run={"device": "cpu", "dtype": "float64"},
                      generator=make_generator(0), registry=registry)


def test_cold_start_is_zero_and_random_start_is_unit_gaussian():
    act = Phi4Action(Lattice([8, 8]), beta=0.5, lam=0.5)
    assert torch.count_nonzero(HMC(act, n_chains=4, init="cold").state) == 0
    hot = HMC(act, n_chains=64, init="random", generator=make_generator(0)).state
    assert float(hot.std()) == pytest.approx(1.0, abs=4 * math.sqrt(2 / hot.numel()))
