"""Property tests of EVERY registered flow layer and flow model on real fields (``field="real"``;
a new plugin's are picked up here; those on link angles in test_flow_properties_circle.py).

For each layer (built with its declared defaults, plus a few variants of the built-ins) and each
model that is a ``FlowModel``, with random non-trivial weights (the zero-initialised couplings
would be the identity), in float64 on small lattices of dimensions 1, 2 and 3:

* round trips z -> phi -> z and phi -> z -> phi;
* log|det dphi/dz| equals the log-determinant of the autograd Jacobian;
* the inverse's log-det is minus the forward one at the corresponding point;
* exact Z2 equivariance f(-z) = -f(z) where ``z2_equivariant`` is claimed;
* finite outputs for |z| up to 1e3;
* lattice-size transfer: built at another L, the trained state_dict loads, and on a periodically
  repeated field the flow gives the periodically repeated output.

A model is tested on the shapes of ``MODEL_SHAPES`` it can be built for (a multigrid model needs
extents divisible by 2^levels); every model must accept at least two of them.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lattgen import Lattice, LatticeError
from lattgen.model import Bijection, FlowModel
from lattgen.registry import get_registry
from rounding import ROUNDING_OPS

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run

REG = get_registry()
SHAPES = [(4,), (4, 4), (2, 6), (2, 2, 4)]
#: extra parameter sets of built-in layers, so their options are tested as well as their defaults
VARIANTS = {
    "affine_coupling": [{"network": "dense"}, {"parity": 1, "activation": "leaky_relu", "hidden": [4]},
                        {"sites": "fine"}],
    "prolong": [{"a": 0.4, "b": 2.5}],
    "spline_coupling": [{"parity": 1, "tail_bound": 2.0, "bins": 3}],
    "z2_spline_coupling": [{"parity": 1, "network": "dense"}, {"sites": "fine"}],
    "z2_affine_coupling": [{"kernel_size": 5, "hidden": [4, 4, 4]}],
    "free_field": [{"spectrum": "momentum"}, {"learnable": False, "a": 0.3, "b": 2.0}],
}
LAYER_CASES = [
    pytest.param(spec.name, params, id=f"{spec.name}{'-' + str(i) if i else ''}")
    for spec in REG.specs("layer") if spec.meta.get("field", "real") == "real"
    for i, params in enumerate([{}] + VARIANTS.get(spec.name, []))
]
#: models of real fields (angle-valued ones in test_flow_properties_circle.py, CP^{N-1} ones in test_cpn_flow.py)
MODEL_NAMES = [s.name for s in REG.specs("model") if s.meta.get("field", "real") == "real"]
#: shapes offered to models: the layer shapes plus lattices a two-level multigrid model accepts
MODEL_SHAPES = [*SHAPES, (8,), (4, 8), (4, 4, 4)]
seeds = st.integers(0, 2**31 - 1)
shapes = st.sampled_from(SHAPES)
few = settings(max_examples=6, deadline=None)


# -- building ----------------------------------------------------------------------------------------
def perturb(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Add seeded Gaussian noise to every parameter: couplings stop being the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def build_layer(name: str, params: dict, shape, seed: int) -> Bijection:
    spec = REG.get("layer", name)
    if any(p.required and p.name not in params for p in spec.params):
        pytest.skip(f"layer {name} has required parameters; no defaults to test with")
    layer = spec.build(Lattice(shape), params=params).double()
    perturb(layer, seed)
    return layer


def phi4(shape, lam: float = 0.5):
    """A phi^4 action on ``shape`` in the ordered-but-stable range of every dimension tested."""
    return REG.get("action", "phi4").factory(Lattice(shape), beta=0.8 / len(shape), lam=lam)


@functools.cache
def model_shapes(name: str) -> tuple[tuple[int, ...], ...]:
    """The shapes of MODEL_SHAPES the model builds on with its defaults (LatticeError excludes one)."""
    ok = []
    for shape in MODEL_SHAPES:
        try:
            REG.get("model", name).build(phi4(shape))
        except LatticeError:
            continue
        ok.append(shape)
    return tuple(ok)


def draw_shape(data, name: str, small: bool = False):
    """A shape the model accepts (``small``: at most 16 sites, for the doubled-lattice test)."""
    options = [s for s in model_shapes(name) if not small or math.prod(s) <= 16]
    return data.draw(st.sampled_from(options), label="shape")


def build_model(name: str, shape, seed: int) -> FlowModel:
    model = REG.get("model", name).build(phi4(shape))
    if not isinstance(model, FlowModel):
        pytest.skip(f"model {name} is not a FlowModel (no bijection to test)")
    model = model.double()
    perturb(model, seed, scale=0.03)  # deep stacks: keep them well conditioned
    return model


def field(shape, seed: int, batch: int = 3, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn((batch, *shape), generator=g, dtype=torch.float64)


def close(a, b, tol=1e-9):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def jacobian_log_det(f, z: torch.Tensor) -> torch.Tensor:
    """log|det df/dz| per configuration from the dense autograd Jacobian."""
    out = []
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda x: f(x.unsqueeze(0))[0][0], zi)
        n = zi.numel()
        out.append(torch.linalg.slogdet(jac.reshape(n, n))[1])
    return torch.stack(out)


def tile(x: torch.Tensor, reps) -> torch.Tensor:
    """Periodic repetition of fields (batch, *shape) by ``reps`` along each lattice axis."""
    return x.repeat(1, *reps)


def jacobians(f, z: torch.Tensor) -> torch.Tensor:
    """Dense autograd Jacobians d f(z)_i / d z_j per configuration, shape (batch, V, V)."""
    n = z[0].numel()
    return torch.stack([
        torch.autograd.functional.jacobian(lambda x: f(x.unsqueeze(0))[0][0], zi).reshape(n, n) for zi in z
    ])


def assert_round_trip(x_back: torch.Tensor, x: torch.Tensor, y: torch.Tensor, inverse_jac: torch.Tensor,
                      what: str) -> None:
    """|x_back - x| within 1e-9 (relative and absolute), or the conditioning bound if larger.

    Rounding y = f(x) by eps |y| moves the recovered x by up to eps (|d f^-1/dy| |y|) per site,
    whatever the inverse does (a spline bin of slope 1e-6 loses six digits of x): an error
    the inverse cannot avoid. Random weights make such maps; for well-conditioned layers the
    bound is far below 1e-9 and the tolerance is the plain 1e-9.
    """
    eps = torch.finfo(y.dtype).eps
    amplification = (inverse_jac.abs() @ y.detach().abs().flatten(1).unsqueeze(-1)).squeeze(-1).view_as(x)
    tol = 1e-9 + 1e-9 * x.abs() + ROUNDING_OPS * eps * amplification
    worst = float(((x_back - x).detach().abs() / tol).max())
    assert worst <= 1, f"{what}: round-trip error {worst:.3g} x its tolerance"


def check_bijection(bij: Bijection, shape, seed: int) -> None:
    """Round trips, Jacobian log-det and inverse log-det of one bijection on ``shape``."""
    z = field(shape, seed)
    phi, ld = bij.forward_and_log_det(z)
    assert phi.shape == z.shape and ld.shape == (z.shape[0],)
    z_back, ld_inv = bij.inverse_and_log_det(phi)
    assert_round_trip(z_back, z, phi, jacobians(bij.inverse_and_log_det, phi.detach()), "z -> phi -> z")
    assert close(ld_inv, -ld), "inverse log-det = - forward log-det"
    z_inv = bij.inverse_and_log_det(z)[0]
    phi2, _ = bij.forward_and_log_det(z_inv)
    assert_round_trip(phi2, z, z_inv, jacobians(bij.forward_and_log_det, z_inv.detach()), "phi -> z -> phi")
    assert close(jacobian_log_det(bij.forward_and_log_det, z[:2]), ld[:2], 1e-8), "log-det vs autograd"
    assert close(jacobian_log_det(bij.inverse_and_log_det, z[:2]), bij.inverse_and_log_det(z[:2])[1], 1e-8)


def check_z2(bij: Bijection, shape, seed: int) -> None:
    if not getattr(bij, "z2_equivariant", False):
        return
    z = field(shape, seed)
    phi, ld = bij.forward_and_log_det(z)
    phi_m, ld_m = bij.forward_and_log_det(-z)
    assert torch.equal(phi_m, -phi), "f(-z) = -f(z) exactly"
    assert torch.equal(ld_m, ld), "log-det even under z -> -z"
    z_m, _ = bij.inverse_and_log_det(-phi)
    assert torch.equal(z_m, -bij.inverse_and_log_det(phi)[0])


def check_extreme(bij: Bijection, shape, seed: int) -> None:
    for scale in (1e2, 1e3):
        z = field(shape, seed, scale=scale)
        for f in (bij.forward_and_log_det, bij.inverse_and_log_det):
            y, ld = f(z)
            assert torch.isfinite(y).all() and torch.isfinite(ld).all(), f"finite at |z| ~ {scale}"


# -- layers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", LAYER_CASES)
@few
@given(shape=shapes, seed=seeds)
def test_layer_bijection_and_log_det(name, params, shape, seed):
    check_bijection(build_layer(name, params, shape, seed), shape, seed)


@pytest.mark.parametrize("name, params", LAYER_CASES)
@few
@given(shape=shapes, seed=seeds)
def test_layer_z2_and_extremes(name, params, shape, seed):
    layer = build_layer(name, params, shape, seed)
    check_z2(layer, shape, seed)
    check_extreme(layer, shape, seed)


@pytest.mark.parametrize("name, params", LAYER_CASES)
@few
@given(shape=shapes, seed=seeds, reps=st.sampled_from([2, 4]))
def test_layer_runs_at_another_lattice_size(name, params, shape, seed, reps):
    layer = build_layer(name, params, shape, seed)
    if not getattr(layer, "fully_convolutional", True):
        pytest.skip(f"{name} {params} declares fully_convolutional = False (weights tied to one lattice)")
    big_shape = tuple(s * (reps if i == 0 else 1) for i, s in enumerate(shape))
    big = REG.get("layer", name).build(Lattice(big_shape), params=params).double()
    big.load_state_dict(layer.state_dict(), strict=True)
    z = field(shape, seed)
    reps_all = (reps,) + (1,) * (len(shape) - 1)
    phi_big, _ = big.forward_and_log_det(tile(z, reps_all))
    if layer.tiling_equivariant:
        assert close(phi_big, tile(layer.forward_and_log_det(z)[0], reps_all)), "periodic extension commutes"
    if math.prod(big_shape) <= 32:
        check_bijection(big, big_shape, seed)


# -- models ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_accepts_test_shapes(name):
    assert len(model_shapes(name)) >= 2, f"model {name} builds on none or one of {MODEL_SHAPES}"


@pytest.mark.parametrize("name", MODEL_NAMES)
@settings(max_examples=3, deadline=None)
@given(data=st.data(), seed=seeds)
def test_model_flow_properties(name, data, seed):
    shape = draw_shape(data, name)
    model = build_model(name, shape, seed)
    check_bijection(model.flow, shape, seed)
    check_z2(model.flow, shape, seed)
    check_extreme(model.flow, shape, seed)


@pytest.mark.parametrize("name", MODEL_NAMES)
@settings(max_examples=3, deadline=None)
@given(data=st.data(), seed=seeds)
def test_model_density_is_consistent(name, data, seed):
    shape = draw_shape(data, name)
    model = build_model(name, shape, seed)
    phi, log_q = model.sample(4, torch.Generator().manual_seed(seed))
    assert phi.shape == (4, *shape) and phi.dtype == torch.float64
    assert close(model.log_prob(phi), log_q), "log_prob(sample) = sample's log q"
    if getattr(model, "z2_equivariant", False):
        assert torch.equal(model.log_prob(-phi), model.log_prob(phi)), "q(-phi) = q(phi)"


@pytest.mark.parametrize("name", MODEL_NAMES)
@settings(max_examples=3, deadline=None)
@given(data=st.data(), seed=seeds)
def test_model_runs_at_another_lattice_size(name, data, seed):
    shape = draw_shape(data, name, small=True)
    model = build_model(name, shape, seed)
    if not getattr(model, "fully_convolutional", True):
        pytest.skip(f"model {name} is not fully convolutional")
    big_shape = tuple(2 * s for s in shape)
    big = REG.get("model", name).build(phi4(big_shape)).double()
    big.load_state_dict(model.state_dict(), strict=True)
    z = field(shape, seed)
    reps = (2,) * len(shape)
    phi_big, _ = big.flow.forward_and_log_det(tile(z, reps))
    if model.tiling_equivariant:  # else (a zero-mode layer) the same weights act, but not by tiling
        assert close(phi_big, tile(model.flow.forward_and_log_det(z)[0], reps)), "periodic extension commutes"
    if hasattr(model, "relattice"):  # in place: same weights, masks/momenta rebuilt
        model.relattice(Lattice(big_shape))
        assert close(model.flow.forward_and_log_det(tile(z, reps))[0], phi_big)
        phi, log_q = model.sample(2, torch.Generator().manual_seed(seed))
        assert phi.shape == (2, *big_shape) and close(model.log_prob(phi), log_q)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_moves_between_dtypes(name):
    model = build_model(name, (4, 4), 0)
    model = model.float()
    phi32, log_q32 = model.sample(2, torch.Generator().manual_seed(1))
    assert phi32.dtype == torch.float32 and log_q32.dtype == torch.float32
    assert torch.isfinite(phi32).all() and torch.isfinite(log_q32).all()
