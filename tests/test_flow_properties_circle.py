"""Property tests of EVERY registered flow layer and model on link angles (``field="circle"``).

The sibling of test_flow_properties.py for angle-valued fields (batch, 2, L1, L2) on the torus
(-pi, pi]^N, with seeded random non-trivial weights, float64:

* round trips z -> phi -> z and phi -> z -> phi, compared on the circle (wrap);
* log|det dphi/dz| against the autograd Jacobian, and the inverse's log-det is minus it;
* gauge equivariance: a random U(1) gauge transformation g before the flow gives g after it
  (to rounding) and leaves log|det| (so log q) unchanged (to rounding);
* wrap-around: a link at pi - d and at -pi + d' (the same point up to d + d') give the same output;
* models: the sample's log q equals log_prob of the sample; a model moved to a 2x larger lattice
  gives the periodically repeated output.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rounding import ROUNDING_OPS

from lattgen import Lattice, wrap_angle
from lattgen.model import Bijection, FlowModel
from lattgen.registry import get_registry

pytestmark = pytest.mark.numerical

REG = get_registry()
#: an action per manifold to build models for (the circle: compact U(1) links)
ACTIONS = {"circle": ("u1", {"beta": 2.0})}
SHAPES = [(4, 4), (4, 8), (8, 4)]
VARIANTS = {"u1_plaquette_coupling": [{"mu": 1, "offset": 3}, {"mu": 0, "offset": 2, "rectangles": False,
                                                                 "hidden": [8], "bins": 3}]}
LAYER_CASES = [
    pytest.param(spec.name, params, id=f"{spec.name}{'-' + str(i) if i else ''}")
    for spec in REG.specs("layer") if spec.meta.get("field") == "circle"
    for i, params in enumerate([{}] + VARIANTS.get(spec.name, []))
]
MODEL_NAMES = [s.name for s in REG.specs("model") if s.meta.get("field") == "circle"]
seeds = st.integers(0, 2**31 - 1)
few = settings(max_examples=4, deadline=None)


def perturb(module: torch.nn.Module, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def build_layer(name, params, shape, seed) -> Bijection:
    layer = REG.get("layer", name).build(Lattice(shape), params=params).double()
    perturb(layer, seed, 0.3)
    return layer


def action_for(shape):
    name, params = ACTIONS["circle"]
    return REG.get("action", name).build(Lattice(shape), params=params)


def build_model(name, shape, seed) -> FlowModel:
    model = REG.get("model", name).build(action_for(shape)).double()
    perturb(model, seed, 0.03)
    return model


def links(shape, seed, n=3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return wrap_angle(math.pi - 2 * math.pi * torch.rand((n, 2, *shape), generator=g, dtype=torch.float64))


def gauge(theta: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    alpha = 2 * math.pi * torch.rand((theta.shape[0], *theta.shape[2:]), generator=g, dtype=torch.float64)
    return wrap_angle(theta + torch.stack([alpha - torch.roll(alpha, -1, 1 + mu) for mu in (0, 1)], 1))


def jacobians(f, x: torch.Tensor) -> torch.Tensor:
    n = x[0].numel()
    return torch.stack([torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0))[0][0], xi,
                                                           vectorize=True).reshape(n, n) for xi in x])


def assert_on_circle(a, b, jac, what):
    """circle distance |wrap(a - b)| within 1e-9 or the rounding of inputs of size pi through |jac|."""
    eps = torch.finfo(a.dtype).eps
    amplification = (jac.abs() @ torch.full((jac.shape[-1], 1), math.pi, dtype=a.dtype)).squeeze(-1).view_as(a)
    tol = 1e-9 + ROUNDING_OPS * eps * amplification
    worst = float((wrap_angle(a - b).detach().abs() / tol).max())
    assert worst <= 1, f"{what}: error {worst:.3g} x its tolerance"


def log_det_condition(f, z):
    """|ld| + sum_i |d ld / d z_i| pi: how far rounding of inputs of size pi moves the log-det of f."""
    x = z.detach().requires_grad_(True)
    with torch.enable_grad():
        ld = f(x)[1]
        (g,) = torch.autograd.grad(ld.sum(), x)
    return ld.detach().abs() + math.pi * g.abs().flatten(1).sum(1)


def check_bijection(bij, shape, seed):
    z = links(shape, seed)
    phi, ld = bij.forward_and_log_det(z)
    assert phi.shape == z.shape and ld.shape == (z.shape[0],)
    assert bool(((phi > -math.pi) & (phi <= math.pi)).all()), "outputs wrapped into (-pi, pi]"
    z_back, ld_inv = bij.inverse_and_log_det(phi)
    assert_on_circle(z_back, z, jacobians(bij.inverse_and_log_det, phi.detach()), "z -> phi -> z")
    # the inverse's log-det at the rounded phi: its sensitivity to phi bounds the difference
    cond = log_det_condition(bij.forward_and_log_det, z) + log_det_condition(bij.inverse_and_log_det, phi)
    assert bool(((ld_inv + ld).abs() <= 1e-9 + ROUNDING_OPS * torch.finfo(ld.dtype).eps * cond).all()), \
        "inverse log-det = - forward log-det"
    z_inv = bij.inverse_and_log_det(z)[0]
    assert_on_circle(bij.forward_and_log_det(z_inv)[0], z, jacobians(bij.forward_and_log_det, z_inv.detach()),
                     "phi -> z -> phi")
    for zi, ldi in zip(z[:2], ld[:2]):
        jac = torch.autograd.functional.jacobian(lambda v: bij.forward_and_log_det(v[None])[0][0], zi,
                                                 vectorize=True)
        assert torch.allclose(torch.linalg.slogdet(jac.reshape(zi.numel(), -1))[1], ldi, rtol=1e-8, atol=1e-8)


def check_gauge_and_wrap(bij, shape, seed):
    z = links(shape, seed)
    phi, ld = bij.forward_and_log_det(z)
    gz = gauge(z, seed + 1)
    phi_g, ld_g = bij.forward_and_log_det(gz)
    g_phi = gauge(phi, seed + 1)  # the same transformation after the flow
    assert_on_circle(phi_g, g_phi, jacobians(bij.forward_and_log_det, z.detach()), "f(g z) = g f(z)")
    cond = log_det_condition(bij.forward_and_log_det, z)
    assert bool(((ld_g - ld).abs() <= ROUNDING_OPS * torch.finfo(ld.dtype).eps * cond).all()), \
        "log det gauge invariant"
    # the wrap: move one link of each configuration to +-pi (its two representatives)
    near = z.clone()
    near[:, 0, 0, 0] = math.pi - 1e-12
    across = near.clone()
    across[:, 0, 0, 0] = -math.pi + 1e-12
    with torch.no_grad():
        (a, lda), (b, ldb) = bij.forward_and_log_det(near), bij.forward_and_log_det(across)
    assert float(wrap_angle(a - b).abs().max()) < 1e-6 and float((lda - ldb).abs().max()) < 1e-6


@pytest.mark.parametrize("name, params", LAYER_CASES)
@settings(max_examples=3, deadline=None)
@given(seed=seeds)
def test_layer_bijection_and_log_det(name, params, seed):
    """On 4 x 4 (32 links: dense Jacobians stay cheap); the other shapes in the gauge test."""
    check_bijection(build_layer(name, params, (4, 4), seed), (4, 4), seed)


@pytest.mark.parametrize("name, params", LAYER_CASES)
@few
@given(shape=st.sampled_from(SHAPES), seed=seeds)
def test_layer_gauge_equivariance_and_wrap(name, params, shape, seed):
    check_gauge_and_wrap(build_layer(name, params, shape, seed), shape, seed)


def test_circle_layers_and_models_are_found():
    assert LAYER_CASES and MODEL_NAMES


@pytest.mark.parametrize("name", MODEL_NAMES)
@settings(max_examples=2, deadline=None)
@given(seed=seeds)
def test_model_density_equivariance_and_transfer(name, seed):
    shape = (4, 4)
    model = build_model(name, shape, seed)
    phi, log_q = model.sample(3, torch.Generator().manual_seed(seed))
    assert phi.shape == (3, 2, *shape) and phi.dtype == torch.float64
    lp = model.log_prob(phi)
    assert torch.allclose(lp, log_q, rtol=1e-9, atol=1e-9), "log_prob(sample) = sample's log q"
    lp_g = model.log_prob(gauge(phi, seed))
    assert torch.allclose(lp_g, lp, rtol=1e-9, atol=1e-9), "log q gauge invariant"
    if model.fully_convolutional:
        big = REG.get("model", name).build(action_for((8, 8))).double()
        big.load_state_dict(model.state_dict(), strict=True)
        z = links(shape, seed)
        with torch.no_grad():
            small_out = model.flow.forward_and_log_det(z)[0]
            big_out = big.flow.forward_and_log_det(z.repeat(1, 1, 2, 2))[0]
        assert float(wrap_angle(big_out - small_out.repeat(1, 1, 2, 2)).abs().max()) < 1e-9
    model = model.float()
    phi32, lq32 = model.sample(2, torch.Generator().manual_seed(1))
    assert phi32.dtype == torch.float32 and torch.isfinite(lq32).all()
