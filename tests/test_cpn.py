"""CP^{N-1} plugin: action (force, symmetries, the CP^1 = O(3) map), observables (integer charge,
Berg-Luscher equality, beta = 0 exact values) and bad input (docs/physics.md#cpn)."""

from __future__ import annotations

import math

import pytest
import torch
from lattgen_cpn.action import CPNAction
from lattgen_cpn.geometry import su2_vector
from lattgen_cpn.observables import solid_angle_charge, topological_charge
from rounding import assert_close_to_rounding, scalar_condition

from lattgen import ConfigError, Lattice, LatticeError
from lattgen.registry import get_registry

pytestmark = pytest.mark.usefixtures("one_thread")
REG = get_registry()


def hot(shape, n_comp, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((batch, *shape, n_comp), generator=g, dtype=torch.complex128)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def smooth(shape, n_comp, batch=4, seed=0, scale=0.3):
    """Slowly varying fields (neighbours close): charges of small magnitude, not just noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((batch, *[max(s // 2, 1) for s in shape], n_comp), generator=g, dtype=torch.complex128)
    for axis, s in enumerate(shape):
        z = torch.repeat_interleave(z, 2, dim=1 + axis) if s > 1 else z
    z = z + scale * torch.randn(z.shape, generator=g, dtype=torch.complex128)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def real_view_action(action):
    """S as a function of the real coordinates (batch, *lattice, N, 2): for the condition number."""
    return lambda x: action.action(torch.view_as_complex(x))


def check_same_action(action, z1, z2, what):
    cond = scalar_condition(real_view_action(action), torch.view_as_real(z1))
    assert_close_to_rounding(action.action(z1), action.action(z2), cond, what)


@pytest.mark.numerical
@pytest.mark.parametrize("shape, n_comp", [((4, 4), 2), ((6, 4), 3), ((2, 2, 4), 4)])
def test_force_is_the_real_gradient(shape, n_comp):
    action = CPNAction(Lattice(shape), N=n_comp, beta=0.7)
    z = hot(shape, n_comp)
    x = torch.view_as_real(z).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(action.action(torch.view_as_complex(x)).sum(), x)
    f = torch.view_as_real(action.force(z))
    scale = float(g.abs().max())
    assert torch.allclose(f, g, rtol=0, atol=64 * torch.finfo(g.dtype).eps * scale * math.prod(shape) ** 0.5)


@pytest.mark.numerical
@pytest.mark.parametrize("n_comp", [2, 3, 5])
def test_action_invariant_under_global_un_and_local_u1(n_comp):
    shape = (4, 6)
    action = CPNAction(Lattice(shape), N=n_comp, beta=1.3)
    z = hot(shape, n_comp, seed=n_comp)
    g = torch.Generator().manual_seed(7)
    m = torch.randn((n_comp, n_comp), generator=g, dtype=torch.complex128)
    u, _ = torch.linalg.qr(m)  # Haar-ish unitary
    check_same_action(action, z, z @ u.T, "S(U z) = S(z)")
    phases = torch.rand((z.shape[0], *shape, 1), generator=g, dtype=torch.float64) * 2 * math.pi
    check_same_action(action, z, z * torch.exp(1j * phases), "S(e^{i a_x} z) = S(z)")
    diag = torch.exp(1j * torch.rand(n_comp, generator=g, dtype=torch.float64) * 6.0)
    check_same_action(action, z, z * diag, "S under U(1)^N")
    assert not torch.allclose(action.action(z), action.action(hot(shape, n_comp, seed=99)))


@pytest.mark.numerical
def test_cp1_is_o3_up_to_a_constant():
    """|z^dagger w|^2 = (1 + n.m)/2: S_CP1 = -2 beta sum (1+n.m)/2 = -beta sum_{x,mu} n_x.n_{x+mu} - beta d V."""
    shape, beta = (6, 4), 0.9
    lat = Lattice(shape)
    z = hot(shape, 2, seed=3)
    n = su2_vector(z)
    assert torch.allclose((n * n).sum(-1), torch.ones((), dtype=torch.float64), rtol=0, atol=1e-14)
    o3 = -beta * sum((n * torch.roll(n, -1, dims=1 + mu)).sum(-1) for mu in range(2)).sum((1, 2))
    o3 = o3 - beta * lat.ndim * lat.volume
    s = CPNAction(lat, N=2, beta=beta).action(z)
    tol = 32 * torch.finfo(torch.float64).eps * beta * 2 * lat.ndim * lat.volume
    assert torch.allclose(s, o3, rtol=0, atol=tol)


@pytest.mark.numerical
@pytest.mark.parametrize("n_comp", [2, 3, 4])
def test_geometric_charge_is_an_integer_on_every_configuration(n_comp):
    lat = Lattice((8, 6))
    for z in (hot(lat.shape, n_comp, batch=16, seed=n_comp), smooth(lat.shape, n_comp, batch=16, seed=n_comp)):
        q = topological_charge(z, lat)
        assert torch.allclose(q, q.round(), rtol=0, atol=1e-10), q
    q_hot = topological_charge(hot(lat.shape, n_comp, batch=64, seed=1), lat).round()
    assert (q_hot != 0).any(), "hot configurations carry charge"
    # parity (complex conjugation z -> z*) flips the charge
    z = hot(lat.shape, n_comp, batch=16, seed=5)
    assert torch.equal(topological_charge(z.conj(), lat).round(), -topological_charge(z, lat).round())
    # invariant under gauge transformations and U(N)
    phases = torch.exp(1j * torch.rand((16, *lat.shape, 1), generator=torch.Generator().manual_seed(2),
                                       dtype=torch.float64) * 6.3)
    assert torch.equal(topological_charge(z * phases, lat).round(), topological_charge(z, lat).round())


@pytest.mark.numerical
def test_berg_luscher_equals_the_geometric_charge_on_cp1():
    """For CP^1, arg tr(P1 P2 P3) is half the solid angle of (n1, n2, n3): the charges agree."""
    lat = Lattice((6, 6))
    for z in (hot(lat.shape, 2, batch=32, seed=11), smooth(lat.shape, 2, batch=32, seed=12)):
        q_bl = solid_angle_charge(z, lat)
        assert torch.allclose(q_bl, q_bl.round(), atol=1e-10)
        assert torch.equal(q_bl.round(), topological_charge(z, lat).round())
    with pytest.raises(LatticeError, match="N = 2"):
        solid_angle_charge(hot(lat.shape, 3), lat)


def test_beta_zero_exact_values():
    """At beta = 0 the z_x are independent and Haar: |z_x^dagger z_y|^2 ~ Beta(1, N-1), mean 1/N;
    G(x) = delta_{x,0} (1 - 1/N), so chi_m = G~(p) = 1 - 1/N and <Q> = 0."""
    lat = Lattice((6, 6))
    n_comp = 3
    z = hot(lat.shape, n_comp, batch=4000, seed=21)
    obs = {n: REG.get("observable", n, field="sphere").build(lat) for n in ("cpn_energy", "cpn_chi_m", "cpn_xi", "topological_charge_squared")}
    e = obs["cpn_energy"].primaries(z)[:, 0]
    var_t = 2 / (n_comp * (n_comp + 1)) - 1 / n_comp**2
    assert abs(float(e.mean()) - 1 / n_comp) < 4 * math.sqrt(var_t / (2 * lat.volume * len(e)))
    g = obs["cpn_xi"].primaries(z)
    se = g.std(0) / math.sqrt(len(g))
    assert ((g.mean(0) - (1 - 1 / n_comp)).abs() < 4 * se).all()


@pytest.mark.parametrize("params, match", [({"N": 1, "beta": 1.0}, "N"), ({"N": 3, "beta": math.inf}, "beta"),
                                           ({"N": 3, "beta": math.nan}, "beta")])
def test_bad_parameters_are_config_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        REG.get("action", "cpn").build(Lattice((4, 4)), params=params)


def test_loaded_fields_must_be_unit_and_finite():
    space = CPNAction(Lattice((4, 4)), N=3, beta=1.0).field_space
    z = hot((4, 4), 3)
    space.check(z)
    with pytest.raises(LatticeError, match="unit length"):
        space.check(1.01 * z)
    bad = z.clone()
    bad[0, 1, 1, 0] = complex(math.nan, 0)
    with pytest.raises(LatticeError, match="non-finite"):
        space.check(bad)


@pytest.mark.numerical
def test_link_form_is_the_link_marginal_and_its_force_the_gradient():
    """exp(-S_link(z)) = prod_links int dlambda/2pi exp(2 K Re(lambda w)) (quadrature), and dS/dz by autograd."""
    lat = Lattice((4, 4))
    action = REG.get("action", "cpn").build(lat, params={"N": 3, "beta": 0.7, "form": "link"})
    z = hot(lat.shape, 3, batch=2, seed=4)
    from lattgen_cpn.geometry import overlap, shift

    theta = torch.linspace(-math.pi, math.pi, 4097, dtype=torch.float64)[:-1]  # periodic: spectral accuracy
    k = 0.7 * 3
    total = torch.zeros(2, dtype=torch.float64)
    for mu in range(2):
        w = overlap(z, shift(z, mu)).flatten(1)  # (batch, V)
        integrand = torch.exp(2 * k * (torch.exp(1j * theta)[None, None] * w[..., None]).real)
        total += torch.log(integrand.mean(-1)).sum(-1)
    assert torch.allclose(action.action(z), -total, rtol=1e-12, atol=0)
    x = torch.view_as_real(z).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(action.action(torch.view_as_complex(x)).sum(), x)
    f = torch.view_as_real(action.force(z))
    assert torch.allclose(f, g, rtol=0, atol=64 * torch.finfo(g.dtype).eps * float(g.abs().max()) * 4)
    with pytest.raises(ConfigError, match="quartic"):
        REG.get("sampler", "cpn_local").build(action, params={}, device="cpu", dtype=torch.float64, generator=None)
