"""The dual-tree plaquette flow of 2D U(1) (lattgen_u1.plaquette_tree): the tree, the von Mises
map, exactness up to the root plaquette, and the trained model with IMH against the exact results.
(Bijectivity, log-det against autograd and gauge equivariance of the layer and the model are in
test_flow_properties_circle.py, which finds them in the registry.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lattgen_u1.action import plaquette_angles
from lattgen_u1.dual_tree import dual_tree_levels
from lattgen_u1.plaquette_tree import PlaquetteTree
from lattgen_u1.von_mises_map import VonMisesMap, bessel_ratios, n_terms
from rounding import ROUNDING_OPS
from scipy.special import ive
from u1_checks import imh_reproduces_exact

from lattgen import ConfigError, Lattice, LatticeError, wrap_angle
from lattgen.registry import get_registry

EPS = torch.finfo(torch.float64).eps


def haar_links(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return wrap_angle(math.pi - 2 * math.pi * torch.rand((n, 2, *shape), generator=g, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 7), (1, 4), (6, 6), (16, 16)])
def test_dual_tree_is_a_spanning_tree_processed_leaf_first(shape):
    """Every plaquette but the root once; within a level no updated link touches another of its
    plaquettes; each updated link lies on its plaquette with the stated sign and on exactly one
    other plaquette (the parent), which is processed later or is the root."""
    l1, l2 = shape
    levels = dual_tree_levels(shape)
    one = torch.zeros((1, 2, l1, l2), dtype=torch.float64)
    seen, order = [], {}
    for i, level in enumerate(levels):
        for p in level.plaquettes.tolist():
            order[p] = i
        seen += level.plaquettes.tolist()
    assert sorted(seen) == list(range(1, l1 * l2)), "every plaquette but the root (0, 0) exactly once"
    for i, level in enumerate(levels):
        assert len(set(level.links.tolist())) == len(level.links)
        for p, link, sign, boundary in zip(level.plaquettes.tolist(), level.links.tolist(),
                                           level.signs.tolist(), level.boundary.tolist()):
            u = one.clone().reshape(-1)
            u[link] = 1.0
            touched = plaquette_angles(u.reshape(one.shape)).reshape(-1)  # the link's coefficient on each P
            coeff = {q: float(c) for q, c in enumerate(touched.tolist()) if c != 0}
            if l1 > 1 and l2 > 1:
                assert len(coeff) == 2 and coeff[p] == sign, (p, coeff)
                (parent,) = set(coeff) - {p}
                assert coeff[parent] == -sign
                assert parent == 0 or order[parent] > i, "the parent is processed after its child"
                assert all(order.get(q, -1) != i for q in coeff if q != p), "no other plaquette of the level"
    theta = haar_links(2, shape, 0)
    plaquettes = plaquette_angles(theta).reshape(2, -1)
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    for level in levels:  # the boundary links and signs give the plaquette (sums of 4 angles of size pi)
        from_boundary = theta.reshape(2, -1)[:, level.boundary] @ signs
        assert float((from_boundary - plaquettes[:, level.plaquettes]).abs().max()) <= \
            4 * ROUNDING_OPS * math.pi * EPS


@pytest.mark.numerical
@pytest.mark.parametrize("kappa", [0.05, 1.0, 6.0, 40.0])
def test_bessel_ratios_match_scipy(kappa):
    terms = n_terms(kappa)
    ours = bessel_ratios(torch.tensor(kappa, dtype=torch.float64), terms).numpy()
    ref = ive(np.arange(1, terms + 1), kappa) / ive(0, kappa)
    # the continued fraction and the product of ~terms ratios: a few ulp per ratio
    assert np.all(np.abs(ours - ref) <= 4 * terms * ROUNDING_OPS * EPS * ref)


@pytest.mark.numerical
@pytest.mark.parametrize("kappa", [0.05, 1.0, 6.0, 40.0, 199.0])
def test_von_mises_map_inverts_its_series_and_has_the_density_ratio_as_derivative(kappa):
    vm = VonMisesMap(torch.tensor(kappa, dtype=torch.float64), n_terms(kappa))
    x = torch.linspace(-math.pi, math.pi, 4001, dtype=torch.float64)
    theta = vm.forward(x)
    assert bool(((theta >= -math.pi) & (theta <= math.pi)).all())
    assert bool((theta[1:] >= theta[:-1]).all()), "monotone"
    # G(h(x)) = x up to the rounding of a series of terms of size ~pi
    assert float((vm.inverse(theta) - x).abs().max()) <= 8 * ROUNDING_OPS * math.pi * EPS
    # the series' derivative is the closed-form density ratio g where g is not below rounding
    t = torch.linspace(-3.0, 3.0, 61, dtype=torch.float64, requires_grad=True)
    (dg,) = torch.autograd.grad(vm.inverse(t).sum(), t)
    g = torch.exp(vm.log_g(t.detach()))
    resolved = g > 1e-6
    tol = n_terms(kappa) * ROUNDING_OPS * EPS * (1 + 2 * kappa) / g[resolved]
    assert bool(((dg[resolved] / g[resolved] - 1).abs() <= tol).all())


@pytest.mark.numerical
def test_kappa_gradient_matches_finite_differences():
    lay = PlaquetteTree(Lattice((4, 6)), kappa=2.5).double()
    z = haar_links(3, (4, 6), 1)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def f():
        phi, ld = lay.forward_and_log_det(z)
        return (torch.sin(phi) * w).sum() + ld.sum()

    f().backward()
    h = 1e-5
    with torch.no_grad():
        lay.kappa_shift += h
        up = float(f())
        lay.kappa_shift -= 2 * h
        down = float(f())
        lay.kappa_shift += h
    fd = (up - down) / (2 * h)
    # central difference: truncation ~h^2 f''', rounding ~|f| eps / h
    assert abs(float(lay.kappa_shift.grad) - fd) <= 1e-6 * (1 + abs(fd))


@pytest.mark.numerical
@pytest.mark.parametrize("shape, beta", [((6, 6), 3.0), ((5, 8), 6.0)])
def test_exact_up_to_the_root_plaquette(shape, beta):
    """At kappa = beta, on Haar links: log w = -S - log q = beta cos theta_root + constant (to
    rounding), so the flow is the exact trivialising map but for one plaquette."""
    reg = get_registry()
    action = reg.get("action", "u1").build(Lattice(shape), params={"beta": beta})
    model = reg.get("model", "u1_tree").build(action).double()
    with torch.no_grad():
        phi, log_q = model.sample(256, torch.Generator().manual_seed(4))
    log_w = -action.action_float64(phi) - log_q
    root = wrap_angle(plaquette_angles(phi)[:, 0, 0])
    rest = log_w - beta * torch.cos(root)
    scale = beta * math.prod(shape) + float(log_q.abs().max())
    assert float(rest.max() - rest.min()) <= ROUNDING_OPS * 64 * EPS * scale
    # and the non-root plaquettes are von Mises(beta): <cos P> = I_1 / I_0 within 4 sigma
    cosines = torch.cos(wrap_angle(plaquette_angles(phi))).reshape(256, -1)[:, 1:]
    mean, err = float(cosines.mean()), float(cosines.mean(1).std() / math.sqrt(256))
    assert abs(mean - ive(1, beta) / ive(0, beta)) < 4 * err


@pytest.mark.parametrize("beta", [2.0, 6.0])
def test_trained_tree_flow_with_imh_reproduces_the_exact_results(tmp_path, beta):
    """u1_tree (kappa trained a few steps) proposing for IMH on 8 x 8: <cos P> and <Q^2> within
    4 sigma of the exact values; at beta = 6 this is where u1_equivariant does not train on CPU."""
    imh_reproduces_exact(tmp_path / "run", (8, 8), beta, {"name": "u1_tree"},
                         {"max_steps": 5, "batch_size": 32, "lr": 1e-3, "eval_batch": 64, "log_every": 5},
                         n_samples=4096, min_acceptance=0.1)


def test_bad_input():
    from lattgen_u1.plugin import KAPPA_BOUNDS
    from lattgen_u1.von_mises_map import KAPPA_MAX

    assert KAPPA_BOUNDS["max"] == KAPPA_MAX  # the registered bound is the map's
    reg = get_registry()
    action = reg.get("action", "u1").build(Lattice((6, 6)), params={"beta": 2.0})
    for bad in (0.0, -1.0, 200.0, float("nan")):
        with pytest.raises(ConfigError, match="kappa"):
            reg.get("model", "u1_tree").build(action, params={"kappa": bad})
    strong = reg.get("action", "u1").build(Lattice((6, 6)), params={"beta": 250.0})
    with pytest.raises(ConfigError, match="model.kappa"):
        reg.get("model", "u1_tree").build(strong)
    assert reg.get("model", "u1_tree").build(strong, params={"kappa": 150.0}) is not None
    with pytest.raises(LatticeError, match="multiples of 4"):
        reg.get("model", "u1_tree").build(action, params={"n_layers": 2})
    with pytest.raises(LatticeError, match="2D"):
        PlaquetteTree(Lattice((4, 4, 4)))
    model = reg.get("model", "u1_tree").build(action)
    with pytest.raises(LatticeError, match="links"):
        model.flow.forward_and_log_det(torch.zeros(2, 2, 4, 4))
    with pytest.raises(LatticeError):
        model.relattice(Lattice((8, 8)))
