"""CP^{N-1} samplers: the geodesic integrator (norm, reversibility, O(eps^2) energy error) and both
samplers against the strong-coupling series and each other (fixed seeds, 4 sigma from the Gamma method)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from lattgen_cpn.action import CPNAction
from lattgen_cpn.sphere_hmc import kinetic, leapfrog_on_spheres, tangent_momenta
from lattgen_cpn.strong_coupling import link_energy_series

from lattgen import Lattice
from lattgen.analysis import analyse_chain
from lattgen.observable import measure_all
from lattgen.registry import get_registry
from lattgen.sampler import run_chain

pytestmark = pytest.mark.usefixtures("one_thread")
REG = get_registry()


def start(action, seed=0, batch=4):
    g = torch.Generator().manual_seed(seed)
    z = action.field_space.random(batch, generator=g)
    return z, tangent_momenta(z, g)


@pytest.mark.numerical
def test_geodesic_leapfrog_keeps_norms_and_is_reversible():
    action = CPNAction(Lattice((4, 6)), N=3, beta=1.2)
    z0, p0 = start(action)
    z1, p1, _ = leapfrog_on_spheres(z0, p0, action.force, 0.05, 40)
    assert torch.allclose(torch.linalg.vector_norm(z1, dim=-1), torch.ones((), dtype=torch.float64),
                          rtol=0, atol=1e-14)
    assert float((z1.conj() * p1).sum(-1).real.abs().max()) < 1e-12, "p stays tangent"
    z2, p2, _ = leapfrog_on_spheres(z1, -p1, action.force, 0.05, 40)
    scale = 40 * 64 * torch.finfo(torch.float64).eps
    assert float((z2 - z0).abs().max()) < scale * 100, "back to the start"
    assert float((p2 + p0).abs().max()) < scale * 100 * float(p0.abs().max())


@pytest.mark.numerical
def test_geodesic_leapfrog_energy_error_is_second_order():
    action = CPNAction(Lattice((4, 4)), N=2, beta=0.8)
    z0, p0 = start(action, seed=3, batch=8)
    h0 = action.action_float64(z0) + kinetic(p0)
    errs = []
    for n in (20, 40, 80):
        z1, p1, _ = leapfrog_on_spheres(z0, p0, action.force, 1.0 / n, n)
        errs.append(float((action.action_float64(z1) + kinetic(p1) - h0).abs().max()))
    for coarse, fine in itertools.pairwise(errs):
        assert 2.5 < coarse / fine < 6.0, errs  # 4 for an O(eps^2) error


def measure(sampler_name, params, n_samples, n_therm=100, names=("cpn_energy", "cpn_chi_m", "topological_charge_squared"), seed=1):
    lat = Lattice(params.pop("lattice"))
    action = REG.get("action", "cpn").build(lat, params=params)
    obs = {n: REG.get("observable", n, field="sphere").build(lat) for n in names}
    sampler = REG.get("sampler", sampler_name).build(
        action, params={"n_chains": 32}, device="cpu", dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed))
    return analyse_chain(run_chain(sampler, measure_all(obs), n_samples, n_therm=n_therm), obs)


@pytest.mark.parametrize("sampler", ["sphere_hmc", "cpn_local"])
def test_strong_coupling_energy(sampler):
    """<|z_x^dagger z_{x+mu}|^2> = 1/N + beta N k2 + (beta N)^2 k3 / 2 + O(beta^3) (docs/physics.md#cpn)."""
    n_comp, beta = 3, 0.1
    res = measure(sampler, {"lattice": [4, 4], "N": n_comp, "beta": beta}, 32 * 250)
    series, bound = link_energy_series(n_comp, beta, ndim=2)
    e = res["cpn_energy"]
    assert abs(e["value"] - series) < 4 * e["error"] + bound, (e, series)


def test_samplers_agree_at_moderate_coupling():
    params = {"lattice": [6, 6], "N": 2, "beta": 0.8}
    a = measure("sphere_hmc", dict(params), 32 * 300, seed=2)
    b = measure("cpn_local", dict(params), 32 * 300, seed=3)
    for name in ("cpn_energy", "cpn_chi_m", "topological_charge_squared"):
        diff = abs(a[name]["value"] - b[name]["value"])
        assert diff < 4 * math.hypot(a[name]["error"], b[name]["error"]), (name, a[name], b[name])


def test_link_form_strong_coupling_energy():
    """The link form at small beta: <t> = 1/N + K^2 k_2 + K^4 (k_3/2 - (m_3 - m_1 m_2)/4) + O(K^6)."""
    from lattgen_cpn.strong_coupling import link_form_energy_series

    n_comp, beta = 2, 0.2
    res = measure("sphere_hmc", {"lattice": [4, 4], "N": n_comp, "beta": beta, "form": "link"}, 32 * 250)
    series, bound = link_form_energy_series(n_comp, beta)
    e = res["cpn_energy"]
    assert abs(e["value"] - series) < 4 * e["error"] + bound, (e, series)
    quartic, _ = link_energy_series(n_comp, beta)
    assert abs(quartic - series) > 8 * e["error"], "the test tells the two forms apart"


@pytest.mark.numerical
def test_phase_heatbath_keeps_every_local_energy_and_moves_the_projectors():
    """The eigenbasis phase draw preserves z^+ A z per site (a Gibbs step of the phases only) yet changes P_x."""
    from lattgen_cpn.local import CPNLocal, quadratic_form

    action = CPNAction(Lattice((4, 4)), N=3, beta=0.9)
    sampler = CPNLocal(action, n_chains=4, generator=torch.Generator().manual_seed(0))
    z = sampler.state
    mask = sampler._masks[0]
    a = action.local_field(z)[:, mask]
    zc = z[:, mask]
    new = sampler._phases(zc, a)
    before, after = quadratic_form(zc, a), quadratic_form(new, a)
    assert torch.allclose(after, before, rtol=0, atol=64 * torch.finfo(torch.float64).eps * float(a.abs().max()))
    overlap2 = (zc.conj() * new).sum(-1).abs() ** 2
    assert float(overlap2.min()) < 0.99, "the projectors move"
