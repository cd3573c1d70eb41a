"""Checkerboard Metropolis: exact free-field results, tuning, reproducibility, supported actions."""

from __future__ import annotations

import pytest
import torch
from lattgen_classical.metropolis import Metropolis
from lattgen_phi4 import Phi4Action, Phi4StandardAction

from lattgen import ConfigError, Lattice, LatticeError
from lattgen.action import Action
from lattgen.build import build_sampler, make_generator
from lattgen.sampler import run_chain

from free_field_checks import MOMENTA, assert_matches_exact, spectrum_chain

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run


# -- exact free-field results ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, beta, n_hits, seed",
    [([6, 6], 0.1, 1, 1), ([6, 6], 0.3, 1, 2), ([6, 6], 0.4, 3, 3), ([4, 4, 4], 0.15, 1, 4),
     ([4, 4, 4], 0.25, 2, 5)],
)
def test_free_field_propagator_and_susceptibility(shape, beta, n_hits, seed):
    lat = Lattice(shape)
    act = Phi4Action(lat, beta=beta, lam=0.0)
    momenta = MOMENTA[lat.ndim]
    sampler = Metropolis(act, n_chains=128, n_hits=n_hits, generator=make_generator(seed))
    chain = spectrum_chain(sampler, momenta, n_steps=600)
    res = assert_matches_exact(chain, act, momenta)
    assert res.value[0] == pytest.approx(act.exact()["susceptibility"], abs=4 * res.error[0])


def test_free_field_in_standard_form_float32_fixed_width():
    lat = Lattice([4, 8])
    act = Phi4StandardAction(lat, m2=0.5, lamA=0.0)
    momenta = [(0, 0), (1, 0), (0, 1), (2, 3)]
    sampler = Metropolis(act, n_chains=128, dtype=torch.float32, proposal_width=1.0,
                         generator=make_generator(9))
    assert sampler.state.dtype == torch.float32
    chain = spectrum_chain(sampler, momenta, n_steps=600)
    assert_matches_exact(chain, act, momenta)


# -- tuning, exactness, reproducibility -----------------------------------------------------------
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_width_tuning_reaches_target_acceptance(target):
    """The frozen width accepts ~target of the site proposals (tolerance: finite tuning run, 0.03)."""
    act = Phi4Action(Lattice([6, 6]), beta=0.536, lam=0.5)
    sampler = Metropolis(act, n_chains=64, target_acceptance=target, generator=make_generator(2))
    chain = run_chain(sampler, lambda phi: {}, 64 * 100, n_therm=150)
    assert chain.acceptance == pytest.approx(target, abs=0.03)
    assert chain.info["proposal_width_tuned"] and chain.info["proposal_width"] == sampler.proposal_width


def test_width_is_frozen_after_thermalisation():
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    sampler = Metropolis(act, n_chains=8, generator=make_generator(0))
    for _ in range(20):
        sampler.step(tune=True)
    t = sampler._tuner.t
    sampler.step()
    width = sampler.proposal_width
    assert width == sampler._tuner.final
    for _ in range(10):
        sampler.step()
    assert sampler.proposal_width == width and sampler._tuner.t == t


def test_fixed_width_is_never_tuned():
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    sampler = Metropolis(act, n_chains=8, proposal_width=0.7, generator=make_generator(0))
    for _ in range(5):
        sampler.step(tune=True)
    assert sampler.proposal_width == 0.7 and not sampler.info()["proposal_width_tuned"]


def run_states(seed):
    act = Phi4Action(Lattice([4, 6]), beta=0.5, lam=0.5)
    sampler = Metropolis(act, n_chains=8, n_hits=2, generator=make_generator(seed))
    acc = [sampler.step(tune=i < 5) for i in range(10)]
    return sampler.state, torch.stack(acc)


def test_chains_are_reproducible_with_the_same_seed():
    s1, a1 = run_states(3)
    s2, a2 = run_states(3)
    assert torch.equal(s1, s2) and torch.equal(a1, a2)
    assert not torch.equal(s1, run_states(4)[0])


def test_acceptance_is_a_fraction_per_chain():
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    acc = Metropolis(act, n_chains=6, generator=make_generator(1)).step()
    assert acc.shape == (6,) and acc.dtype == torch.float64 and bool(((acc >= 0) & (acc <= 1)).all())


# -- what Metropolis supports ---------------------------------------------------------------------
def test_odd_extents_are_refused_with_advice():
    act = Phi4Action(Lattice([5, 4]), beta=0.5, lam=0.5)
    with pytest.raises(LatticeError, match="even extents"):
        Metropolis(act, n_chains=2)


class NonLocalAction(Action):
    """An action with only action(): no site-local form."""

    def action(self, phi):
        return (phi.sum(dim=self.lattice.dims)) ** 2


def test_action_without_local_action_is_refused_with_advice():
    with pytest.raises(ConfigError, match="local_action.*use sampler 'hmc'"):
        Metropolis(NonLocalAction(Lattice([4, 4])), n_chains=2)


def test_built_through_the_registry(registry):
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    sampler = build_sampler({"name": "metropolis", "n_chains": 3, "n_hits": 2}, act,
                            run={"device": "cpu", "dtype": "float64"}, generator=make_generator(0),
                            registry=registry)
    assert isinstance(sampler, Metropolis) and sampler.n_hits == 2 and sampler.state.shape == (3, 4, 4)


@pytest.mark.parametrize(
    "params, match",
    [({"n_hits": 0}, "n_hits"), ({"proposal_width": -1.0}, "proposal_width"),
     ({"target_acceptance": 0.0}, "target_acceptance"), ({"init": "x"}, "init")],
)
def test_bad_parameters_raise_config_errors(registry, params, match):
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    with pytest.raises(ConfigError, match=match):
        build_sampler({"name": "metropolis", **params}, act, run={"device": "cpu", "dtype": "float64"},
                      generator=make_generator(0), registry=registry)
