"""The flow models on physics: exact on the free field, model-level invariances, configuration errors."""

from __future__ import annotations

import math

import pytest
import torch

from lattgen import ConfigError, Lattice, LatticeError, LattgenError
from lattgen.fourier import power_spectrum
from lattgen.registry import get_registry
from lattgen_flows import FreeFieldLayer, LatticeFlowModel

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run

REG = get_registry()


def phi4(shape, beta, lam):
    return REG.get("action", "phi4").factory(Lattice(shape), beta=beta, lam=lam)


def model(name, action, **params):
    return REG.get("model", name).build(action, params=params).double()


def log_weights(m, action, n, seed=0):
    with torch.no_grad():
        phi, log_q = m.sample(n, torch.Generator().manual_seed(seed))
        return phi, -action(phi) - log_q


# -- exact on the free field ----------------------------------------------------------------------------
FREE = [((8, 8), 0.2), ((6,), 0.45), ((4, 4, 4), 0.25), ((4, 6), 0.4)]


@pytest.mark.parametrize("shape, beta", FREE)
@pytest.mark.parametrize("spectrum", ["kinetic", "momentum"])
def test_gaussian_model_is_exact_on_the_free_field(shape, beta, spectrum):
    """lam = 0: log w = -S - log q is the same number for every sample (acceptance 1 to rounding)."""
    action = phi4(shape, beta, 0.0)
    _, logw = log_weights(model("gaussian", action, spectrum=spectrum), action, 512)
    assert float(logw.max() - logw.min()) < 1e-9 * math.prod(shape)


def test_gaussian_model_is_exact_in_form_a():
    """The kinetic fit is exact for any nearest-neighbour free field, here phi4_standard with lamA = 0."""
    action = REG.get("action", "phi4_standard").factory(Lattice([6, 6]), m2=0.7, lamA=0.0)
    _, logw = log_weights(model("gaussian", action), action, 256)
    assert float(logw.max() - logw.min()) < 1e-8


def test_gaussian_model_gives_the_exact_susceptibility():
    """chi = V <m^2> of model samples agrees with the exact G~(0) within 4 standard errors."""
    action = phi4((8, 8), 0.22, 0.0)
    exact = action.exact()
    phi, _ = log_weights(model("gaussian", action), action, 20000, seed=3)
    chi_samples = phi.mean(dim=(1, 2)) ** 2 * 64
    chi, err = float(chi_samples.mean()), float(chi_samples.std() / math.sqrt(len(chi_samples)))
    assert abs(chi - exact["susceptibility"]) < 4 * err
    spectrum = power_spectrum(phi, action.lattice).mean(0)
    rel = (spectrum / exact["propagator"] - 1).abs().max()
    assert rel < 6 * math.sqrt(1 / 20000) * 2  # |phi~(p)|^2 is exponential (or chi^2_2): rel. error ~ 1/sqrt(N)


def test_gaussian_layer_propagator_matches_exact_one():
    action = phi4((4, 8), 0.3, 0.0)
    layer = model("gaussian", action).flow.layers[0]
    assert isinstance(layer, FreeFieldLayer)
    assert torch.allclose(layer.log_propagator().exp(), action.exact()["propagator"], rtol=1e-12)


@pytest.mark.parametrize("name", ["affine", "spline", "equivariant"])
def test_flow_models_with_free_field_start_exact(name):
    """Couplings start as the identity, so free_field = true starts exactly on the free field."""
    action = phi4((4, 4), 0.3, 0.0)
    _, logw = log_weights(model(name, action, free_field=True), action, 128)
    assert float(logw.max() - logw.min()) < 1e-9


def test_free_field_start_without_exact_results_is_a_sensible_kinetic_guess():
    """Interacting: 1/G~ = a p_hat^2 + b with a = beta from the Hessian, b > 0 (phi = 0 is unstable)."""
    action = phi4((8, 8), 0.577, 0.5)
    layer = model("equivariant", action).flow.layers[0]
    assert isinstance(layer, FreeFieldLayer)
    assert math.isclose(float(layer.a.detach()), 0.577, rel_tol=1e-9)
    assert float(layer.b.detach()) > 0


# -- model-level invariances ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["affine", "spline", "equivariant", "gaussian"])
def test_density_is_invariant_under_even_translations(name):
    """Convolutions, checkerboards and the FFT layer commute with shifts by 2 sites: q(T phi) = q(phi)."""
    action = phi4((4, 6), 0.5, 0.5)
    m = model(name, action)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        phi, log_q = m.sample(4, torch.Generator().manual_seed(1))
        for mu, n in [(0, 2), (1, 2), (1, 4)]:
            shifted = torch.roll(phi, n, dims=1 + mu)
            assert torch.allclose(m.log_prob(shifted), log_q, rtol=1e-10, atol=1e-9)


def test_equivariant_model_density_is_z2_symmetric_after_training():
    action = phi4((4, 4), 0.5, 0.5)
    m = model("equivariant", action, hidden=[8], n_layers=2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        phi, log_q = m.sample(32, gen)
        loss = (log_q + action(phi)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        phi, _ = m.sample(8, gen)
        assert torch.equal(m.log_prob(-phi), m.log_prob(phi))


def test_reverse_kl_training_lowers_the_loss():
    """A few Adam steps of reverse KL on L = 4 lower mean(log q + S) (fixed seeds)."""
    torch.manual_seed(0)
    action = phi4((4, 4), 0.5, 0.5)
    m = REG.get("model", "equivariant").build(action, params={"hidden": [8], "n_layers": 2, "free_field": False})
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        phi, log_q = m.sample(128, gen)
        loss = (log_q + action(phi)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.1


# -- lattice-size transfer ----------------------------------------------------------------------------------
def test_relattice_moves_a_model_and_keeps_its_weights():
    small = model("equivariant", phi4((4, 4), 0.5, 0.5), hidden=[8], n_layers=2)
    state = {k: v.clone() for k, v in small.state_dict().items()}
    assert isinstance(small, LatticeFlowModel) and small.fully_convolutional
    small.relattice(Lattice([8, 8]))
    phi, log_q = small.sample(3)
    assert phi.shape == (3, 8, 8) and torch.allclose(small.log_prob(phi), log_q, atol=1e-10)
    assert all(torch.equal(state[k], v) for k, v in small.state_dict().items())


def test_a_model_tied_to_one_lattice_refuses_to_move():
    m = model("affine", phi4((4, 4), 0.5, 0.5), network="dense", n_layers=2)
    assert not m.fully_convolutional
    with pytest.raises(LatticeError, match="cannot move"):
        m.relattice(Lattice([8, 8]))


def test_wrong_field_shape_says_how_to_move():
    m = model("equivariant", phi4((4, 4), 0.5, 0.5), hidden=[4], n_layers=2)
    with pytest.raises(LatticeError, match="relattice"):
        m.log_prob(torch.zeros(2, 6, 6, dtype=torch.float64))


# -- layer stacks and configuration errors -----------------------------------------------------------------
def test_layer_stack_spec_builds_named_layers():
    action = phi4((4, 4), 0.3, 0.0)
    m = model("equivariant", action, layers=[
        {"name": "free_field"},
        {"name": "z2_spline_coupling", "repeat": 2, "hidden": [4], "bins": 4},
        {"name": "rescale"},
    ])
    kinds = [type(layer).__name__ for layer in m.flow.layers]
    assert kinds == ["FreeFieldLayer", "Z2SplineCoupling", "Z2SplineCoupling", "GlobalRescale"]
    assert [layer.parity for layer in m.flow.layers[1:3]] == [0, 1]
    _, logw = log_weights(m, action, 64)  # free field started from the action: exact at init
    assert float(logw.max() - logw.min()) < 1e-9


@pytest.mark.parametrize("layers, error, match", [
    ("free_field", ConfigError, "list of tables"),
    ([{"hidden": [4]}], ConfigError, "name"),
    ([{"name": "no_such_layer"}], LattgenError, "no_such_layer"),
    ([{"name": "affine_coupling"}], ConfigError, "Z2-equivariant"),
    ([{"name": "z2_affine_coupling", "repeat": 0}], ConfigError, "repeat"),
    ([{"name": "z2_affine_coupling", "hiden": [4]}], ConfigError, "hiden"),
])
def test_bad_layer_stacks_are_config_errors(layers, error, match):
    with pytest.raises(error, match=match):
        model("equivariant", phi4((4, 4), 0.5, 0.5), layers=layers)


@pytest.mark.parametrize("name, params, match", [
    ("equivariant", {"coupling": "maf"}, "coupling"),
    ("spline", {"bins": 1}, "bins"),
    ("affine", {"kernel_size": 4}, "odd"),
    ("affine", {"activation": "relu6"}, "activation"),
    ("gaussian", {"spectrum": "flat"}, "spectrum"),
])
def test_bad_model_parameters_are_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match):
        model(name, phi4((4, 4), 0.5, 0.5), **params)


def test_odd_extent_has_no_checkerboard():
    with pytest.raises(LatticeError, match="even extents"):
        model("affine", phi4((5, 4), 0.5, 0.5))


def test_dimension_four_needs_the_dense_network():
    with pytest.raises(LatticeError, match="dense"):
        model("affine", phi4((2, 2, 2, 2), 0.2, 0.5))
    m = model("affine", phi4((2, 2, 2, 2), 0.2, 0.5), network="dense", n_layers=2)
    phi, log_q = m.sample(2)
    assert torch.allclose(m.log_prob(phi), log_q, atol=1e-10)


# -- path gradient ------------------------------------------------------------------------------------------
def test_path_gradient_keeps_values_and_is_an_unbiased_reverse_kl_gradient():
    """Same (phi, log q); the gradient of mean(log q + S) agrees with the plain one on average."""
    action = phi4((4, 4), 0.5, 0.5)
    m = model("equivariant", action, hidden=[4], n_layers=2)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))

    def sample_and_grad(path: bool, n: int):
        m.path_gradient = path
        m.zero_grad()
        phi, log_q = m.sample(n, torch.Generator().manual_seed(1))
        (log_q + action(phi)).mean().backward()
        return phi, log_q, torch.cat([p.grad.flatten() for p in m.parameters()])

    phi_a, log_q_a, grad_a = sample_and_grad(False, 20000)
    phi_b, log_q_b, grad_b = sample_and_grad(True, 20000)
    assert torch.equal(phi_a, phi_b)
    assert torch.allclose(log_q_a, log_q_b, atol=1e-10)
    assert float((grad_a - grad_b).norm() / grad_a.norm()) < 0.1
    with torch.no_grad():  # evaluation needs no gradient: the plain path
        phi, log_q = m.sample(4)
        assert torch.allclose(m.log_prob(phi), log_q, atol=1e-10)


def test_path_gradient_vanishes_at_the_exact_model():
    """q = p (free field, couplings at identity): the path gradient is 0, the plain one is noise."""
    action = phi4((4, 4), 0.3, 0.0)
    m = model("equivariant", action, hidden=[4], n_layers=2)
    norms = {}
    for path in (False, True):
        m.path_gradient = path
        m.zero_grad()
        phi, log_q = m.sample(64, torch.Generator().manual_seed(2))
        (log_q + action(phi)).mean().backward()
        norms[path] = float(torch.cat([p.grad.flatten() for p in m.parameters()]).norm())
    assert norms[True] < 1e-10 < 1e-3 < norms[False]


def test_a_zero_mode_model_moves_to_2L_and_commutes_with_tiling():
    """The zero-mode spline sees sqrt(V0) mean_x z_x with V0 the trained volume (a buffer in the
    state dict): its weights act at any L, and a tiled input gives the tiled output."""
    reg = get_registry()
    params = {"hidden": [4], "n_layers": 2}
    action = reg.get("action", "phi4").build(Lattice([4, 4]), params={"beta": 0.6, "lam": 0.5})
    model = reg.get("model", "conditional_equivariant").build(action, params=params).double()
    with torch.no_grad():  # non-trivial weights (the zero-mode spline starts as the identity)
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    assert model.fully_convolutional and model.tiling_equivariant
    big_action = reg.get("action", "phi4").build(Lattice([8, 8]), params={"beta": 0.6, "lam": 0.5})
    big = reg.get("model", "conditional_equivariant").build(big_action, params=params).double()
    big.load_state_dict(model.state_dict(), strict=True)
    z = torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        small = model.flow.forward_and_log_det(z)[0]
        tiled = big.flow.forward_and_log_det(z.repeat(1, 2, 2))[0]
    assert torch.allclose(tiled, small.repeat(1, 2, 2), rtol=1e-10, atol=1e-10 * float(small.abs().max()))
