"""The phi^4 plugin: symmetries, analytic force, form A <-> form B, exact free field, bad parameters."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from lattgen_phi4 import (
    Phi4Action,
    Phi4StandardAction,
    action_offset,
    field_scale_b_to_a,
    form_a_to_b,
    form_b_to_a,
)

from lattgen import ConfigError, LattgenError, Lattice, LatticeError
from lattgen.build import build_action

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run

shapes = st.lists(st.integers(2, 5), min_size=1, max_size=3)
even_shapes = st.lists(st.sampled_from([2, 4]), min_size=1, max_size=3)
betas = st.floats(0.0, 1.0)
lams = st.floats(0.01, 3.0)
seeds = st.integers(0, 2**31 - 1)


def random_field(lattice: Lattice, seed: int, batch: int = 3, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((batch, *lattice.shape), generator=g, dtype=torch.float64)


def both_forms(lattice: Lattice, beta: float, lam: float):
    """The form-B action and a form-A action with unrelated couplings of the same size."""
    return [Phi4Action(lattice, beta=beta, lam=lam), Phi4StandardAction(lattice, m2=beta - 0.5, lamA=lam)]


def close(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> bool:
    """Equal up to float64 round-off of sums of O(V) terms of size ~scale."""
    return bool(torch.allclose(a, b, rtol=1e-12, atol=1e-10 * (1.0 + float(torch.as_tensor(scale).abs().max()))))


# -- symmetries -----------------------------------------------------------------------------------
@given(shape=shapes, beta=betas, lam=lams, seed=seeds)
def test_action_is_z2_symmetric(shape, beta, lam, seed):
    lat = Lattice(shape)
    phi = random_field(lat, seed)
    for act in both_forms(lat, beta, lam):
        assert act.z2_symmetric
        s = act(phi)
        assert close(act(-phi), s, s)


@given(shape=shapes, beta=betas, lam=lams, seed=seeds, data=st.data())
def test_action_is_translation_invariant(shape, beta, lam, seed, data):
    lat = Lattice(shape)
    phi = random_field(lat, seed)
    shifts = [data.draw(st.integers(0, L - 1)) for L in shape]
    moved = torch.roll(phi, shifts=shifts, dims=lat.dims)
    for act in both_forms(lat, beta, lam):
        s = act(phi)
        assert close(act(moved), s, s)


@given(ndim=st.integers(2, 3), L=st.integers(2, 5), beta=betas, lam=lams, seed=seeds, data=st.data())
def test_action_is_invariant_under_lattice_rotations(ndim, L, beta, lam, seed, data):
    lat = Lattice([L] * ndim)
    phi = random_field(lat, seed)
    mu, nu = data.draw(st.sampled_from([(a, b) for a in range(ndim) for b in range(ndim) if a < b]))
    rotated = torch.rot90(phi, k=data.draw(st.integers(1, 3)), dims=(1 + mu, 1 + nu))
    swapped = phi.transpose(1 + mu, 1 + nu)
    for act in both_forms(lat, beta, lam):
        s = act(phi)
        assert close(act(rotated), s, s)
        assert close(act(swapped.contiguous()), s, s)


@given(shape=shapes, beta=betas, lam=lams, seed=seeds, data=st.data())
def test_action_is_reflection_invariant(shape, beta, lam, seed, data):
    lat = Lattice(shape)
    phi = random_field(lat, seed)
    mu = data.draw(st.integers(0, lat.ndim - 1))
    for act in both_forms(lat, beta, lam):
        s = act(phi)
        assert close(act(torch.flip(phi, dims=(1 + mu,))), s, s)


def test_action_matches_the_written_formula_on_a_small_lattice():
    """S_B and S_A summed site by site with explicit neighbour indices (no roll)."""
    lat = Lattice([3, 4])
    phi = random_field(lat, 7, batch=1)[0]
    beta, lam, m2, lamA = 0.37, 0.8, -1.3, 0.6
    s_b = s_a = 0.0
    for x in range(3):
        for y in range(4):
            f = float(phi[x, y])
            nn = float(phi[(x + 1) % 3, y]) + float(phi[x, (y + 1) % 4])
            s_b += -beta * f * nn + f * f + lam * (f * f - 1.0) ** 2
            s_a += -2.0 * f * nn + (4 + m2) * f * f + lamA * f**4
    assert math.isclose(float(Phi4Action(lat, beta=beta, lam=lam)(phi[None])), s_b, rel_tol=1e-12)
    assert math.isclose(float(Phi4StandardAction(lat, m2=m2, lamA=lamA)(phi[None])), s_a, rel_tol=1e-12)


# -- force and local action -----------------------------------------------------------------------
@given(shape=shapes, beta=betas, lam=lams, seed=seeds)
def test_analytic_force_equals_autograd(shape, beta, lam, seed):
    lat = Lattice(shape)
    phi = random_field(lat, seed)
    for act in both_forms(lat, beta, lam):
        x = phi.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(act(x).sum(), x)
        force = act.force(phi)
        assert close(force, grad, grad)


@given(shape=even_shapes, beta=betas, lam=lams, seed=seeds, parity=st.integers(0, 1))
def test_local_action_gives_the_action_change_of_a_checkerboard_update(shape, beta, lam, seed, parity):
    """Changing every site of one colour changes S by the sum of per-site local-action changes."""
    lat = Lattice(shape)
    phi = random_field(lat, seed)
    mask = lat.checkerboard(parity, dtype=torch.bool)
    new = torch.where(mask, random_field(lat, seed + 1), phi)
    for act in both_forms(lat, beta, lam):
        delta_local = (act.local_action(new, mask) - act.local_action(phi, mask)).sum(dim=lat.dims)
        delta = act(new) - act(phi)
        assert close(delta_local, delta, act(phi))
        assert torch.all(act.local_action(phi, mask)[:, ~mask] == 0)


# -- form A <-> form B ----------------------------------------------------------------------------
@given(shape=shapes, beta=st.floats(0.01, 1.0), lam=st.floats(0.0, 3.0), seed=seeds)
def test_forms_give_identical_weights_after_rescaling(shape, beta, lam, seed):
    """S_A(sqrt(beta/2) phi_B) - S_B(phi_B) = -lam V for every configuration."""
    lat = Lattice(shape)
    m2, lamA = form_b_to_a(beta, lam, lat.ndim)
    assume(lam > 0 or m2 > 0)  # lam = 0 needs a stable free field
    act_b = Phi4Action(lat, beta=beta, lam=lam)
    act_a = Phi4StandardAction(lat, m2=m2, lamA=lamA)
    phi_b = random_field(lat, seed)
    diff = act_a(field_scale_b_to_a(beta) * phi_b) - act_b(phi_b)
    expected = torch.full_like(diff, -action_offset(lam, lat.volume))
    assert close(diff, expected, act_b(phi_b))
    assert close(act_b.field_to_standard(phi_b), field_scale_b_to_a(beta) * phi_b)
    assert close(act_a.field_to_seed_form(act_b.field_to_standard(phi_b)), phi_b)


@given(beta=st.floats(0.01, 2.0), lam=st.floats(0.0, 5.0), ndim=st.integers(1, 4))
def test_conversions_are_inverse(beta, lam, ndim):
    m2, lamA = form_b_to_a(beta, lam, ndim)
    beta2, lam2 = form_a_to_b(m2, lamA, ndim)
    assert math.isclose(beta2, beta, rel_tol=1e-9)
    assert math.isclose(lam2, lam, rel_tol=1e-9, abs_tol=1e-12)


@given(m2=st.floats(-8.0, 8.0), lamA=st.floats(0.01, 20.0), ndim=st.integers(1, 4))
def test_form_a_to_b_round_trip(m2, lamA, ndim):
    beta, lam = form_a_to_b(m2, lamA, ndim)
    assert beta > 0
    m2_back, lamA_back = form_b_to_a(beta, lam, ndim)
    assert math.isclose(m2_back, m2, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(lamA_back, lamA, rel_tol=1e-9)


def test_tutorial_point_is_lam_one_half_beta_one_half():
    """docs/physics.md, "The tutorial point": m2 = -4, lamA = 8 in d = 2 is lam = 0.5 and beta = sqrt(2/lamA) = 0.5."""
    beta, lam = form_a_to_b(-4.0, 8.0, 2)
    assert math.isclose(beta, 0.5, rel_tol=1e-12) and math.isclose(lam, 0.5, rel_tol=1e-12)
    act = Phi4StandardAction(Lattice([4, 4]), m2=-4.0, lamA=8.0).to_seed_form()
    assert act.params == pytest.approx({"beta": 0.5, "lam": 0.5})
    back = act.to_standard()
    assert back.params == pytest.approx({"m2": -4.0, "lamA": 8.0})


def test_impossible_conversions_say_why():
    with pytest.raises(ConfigError, match="beta > 0"):
        form_b_to_a(0.0, 0.5, 2)
    with pytest.raises(ConfigError, match="beta > 0"):
        form_b_to_a(-0.3, 0.5, 2)
    with pytest.raises(ConfigError, match="lamA = 0"):
        form_a_to_b(-4.5, 0.0, 2)
    with pytest.raises(ConfigError, match="lamA must be >= 0"):
        form_a_to_b(1.0, -1.0, 2)
    with pytest.raises(ConfigError):
        field_scale_b_to_a(0.0)


# -- exact free field -----------------------------------------------------------------------------
def direct_free_field(act) -> dict:
    """G = K^-1 from the Hessian K of S (S = phi^T K phi / 2 for the free field), by dense inversion."""
    lat = act.lattice
    zero = torch.zeros(lat.shape, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(lambda f: act(f[None]).sum(), zero)
    G = torch.linalg.inv(hess.reshape(lat.volume, lat.volume))
    g0x = G[0].reshape(lat.shape)  # <phi_0 phi_x> = G(x)
    return {"propagator_position": g0x, "propagator": torch.fft.fftn(g0x).real, "susceptibility": float(g0x.sum())}


@given(shape=st.lists(st.integers(2, 5), min_size=1, max_size=3), frac=st.floats(0.0, 0.95))
def test_exact_free_field_matches_direct_inversion(shape, frac):
    lat = Lattice(shape)
    beta = frac / lat.ndim  # stable range beta < 1/d
    m2 = 0.05 + 3.0 * frac
    for act in (Phi4Action(lat, beta=beta, lam=0.0), Phi4StandardAction(lat, m2=m2, lamA=0.0)):
        exact, direct = act.exact(), direct_free_field(act)
        assert torch.allclose(exact["propagator"], direct["propagator"], rtol=1e-10)
        assert torch.allclose(exact["propagator_position"], direct["propagator_position"], rtol=1e-10, atol=1e-12)
        assert math.isclose(exact["susceptibility"], direct["susceptibility"], rel_tol=1e-10)
        nn = [float(direct["propagator_position"][tuple(1 if i == mu else 0 for i in range(lat.ndim))])
              for mu in range(lat.ndim)]
        assert math.isclose(exact["ising_energy"], sum(nn) / len(nn), rel_tol=1e-10, abs_tol=1e-14)


@given(ndim=st.integers(1, 4), L=st.integers(2, 6), frac=st.floats(0.0, 0.95))
def test_free_field_closed_forms(ndim, L, frac):
    """Form B: chi = 1/(2 - 2 beta d), xi^2 = beta/(2 - 2 beta d); form A: chi = 1/(2 m2), xi^2 = 1/m2."""
    lat = Lattice([L] * ndim)
    beta = frac / ndim
    ex = Phi4Action(lat, beta=beta, lam=0.0).exact()
    assert math.isclose(ex["susceptibility"], 1.0 / (2.0 - 2.0 * beta * ndim), rel_tol=1e-12)
    assert math.isclose(ex["correlation_length"] ** 2, beta / (2.0 - 2.0 * beta * ndim), rel_tol=1e-9, abs_tol=1e-12)
    assert ex["propagator"].shape == lat.shape and ex["propagator"].dtype == torch.float64
    m2 = 0.1 + frac
    ex_a = Phi4StandardAction(lat, m2=m2, lamA=0.0).exact()
    assert math.isclose(ex_a["susceptibility"], 1.0 / (2.0 * m2), rel_tol=1e-12)
    assert math.isclose(ex_a["correlation_length"] ** 2, 1.0 / m2, rel_tol=1e-9)


def test_design_free_field_formula_in_two_dimensions():
    lat = Lattice([6, 6])
    ex = Phi4Action(lat, beta=0.3, lam=0.0).exact()
    p = lat.momenta()
    expected = 1.0 / (2.0 - 2.0 * 0.3 * torch.cos(p).sum(-1))
    assert torch.allclose(ex["propagator"], expected, rtol=1e-14)
    assert math.isclose(ex["susceptibility"], 1.0 / (2.0 - 4.0 * 0.3), rel_tol=1e-14)


def test_interacting_action_has_no_exact_results():
    assert Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5).exact() is None
    assert Phi4StandardAction(Lattice([4, 4]), m2=-4.0, lamA=8.0).exact() is None


# -- construction, registry and bad parameters ----------------------------------------------------
def test_registered_with_params(registry):
    spec = registry.get("action", "phi4")
    assert [p.name for p in spec.params] == ["beta", "lam"]
    spec_a = registry.get("action", "phi4_standard")
    assert [p.name for p in spec_a.params] == ["m2", "lamA"]
    act = build_action({"name": "phi4", "lattice": [4, 6], "beta": 0.5, "lam": 0.25}, registry)
    assert isinstance(act, Phi4Action) and act.params == {"beta": 0.5, "lam": 0.25}
    act_a = build_action({"name": "phi4_standard", "lattice": [4, 4, 4], "m2": -4, "lamA": 8}, registry)
    assert act_a.params == {"m2": -4.0, "lamA": 8.0} and act_a.lattice.shape == (4, 4, 4)


@pytest.mark.parametrize(
    "section, match",
    [
        ({"name": "phi4", "beta": 0.5, "lam": -0.1}, "lam"),
        ({"name": "phi4", "beta": -0.1, "lam": 0.5}, "beta"),
        ({"name": "phi4", "lam": 0.5}, "beta"),
        ({"name": "phi4", "beta": 0.5, "lam": 0.0}, "beta < 1/d"),  # free field at beta = 1/d
        ({"name": "phi4", "beta": 0.7, "lam": 0.0}, "unstable"),
        ({"name": "phi4", "beta": "x", "lam": 0.5}, "beta"),
        ({"name": "phi4", "beta": 0.5, "kappa": 0.5}, "kappa"),
        ({"name": "phi4_standard", "m2": -4.0, "lamA": -1.0}, "lamA"),
        ({"name": "phi4_standard", "m2": 0.0, "lamA": 0.0}, "m2 > 0"),
        ({"name": "phi4_standard", "m2": -1.0, "lamA": 0.0}, "unstable"),
    ],
)
def test_bad_parameters_raise_lattgen_errors(registry, section, match):
    with pytest.raises(LattgenError, match=match):
        build_action({"lattice": [4, 4], **section}, registry)


def test_free_field_stability_bound_depends_on_dimension():
    Phi4Action(Lattice([4, 4, 4]), beta=0.33, lam=0.0)  # 1/d = 1/3 in d = 3
    with pytest.raises(ConfigError, match="1/d = 0.333333"):
        Phi4Action(Lattice([4, 4, 4]), beta=0.34, lam=0.0)
    Phi4Action(Lattice([4, 4, 4]), beta=0.34, lam=0.1)  # the quartic term makes it normalisable


def test_wrong_field_shape_is_a_lattice_error():
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    with pytest.raises(LatticeError, match="does not fit"):
        act(torch.zeros(2, 4, 5))


def test_float32_fields_keep_their_dtype():
    act = Phi4Action(Lattice([4, 4]), beta=0.5, lam=0.5)
    phi = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert act(phi).dtype == torch.float32 and act.force(phi).dtype == torch.float32
    assert torch.allclose(act(phi).double(), act(phi.double()), rtol=1e-5)


def test_exact_results_of_an_unstable_free_field_raise():
    """The Gaussian is not normalisable when some K(p) <= 0; exact results say so."""
    from lattgen_phi4 import free_field_exact

    lat = Lattice([4, 4])
    with pytest.raises(ConfigError, match="not normalisable"):
        free_field_exact(lat, kappa=0.5, a=1.0)  # beta = 1/d: zero mode at p = 0
    assert free_field_exact(lat, kappa=0.49, a=1.0)["susceptibility"] == pytest.approx(1 / 0.04)
