"""Coupling-dependent Gaussian layers (``KineticModulation``): exact log-det at each
configuration's couplings, bijectivity, and the unconditional spectrum at initialisation."""

from __future__ import annotations

import pytest
import torch
from lattgen_flows.conditioning import CouplingContext, modulate_gaussian_layers
from lattgen_flows.free_field import FreeFieldLayer
from lattgen_flows.multigrid import DecimatedFreeField, GaussianProlong
from lattgen_flows.zero_mode import ZeroModeSpline
from rounding import assert_close_to_rounding, scalar_condition

from lattgen import Lattice
from lattgen.build import build_action, build_model
from lattgen.registry import get_registry

REG = get_registry()
LAYERS = {
    "free_field": lambda lat: FreeFieldLayer(lat, "kinetic", True, a=0.4, b=0.3),
    "decimated": lambda lat: DecimatedFreeField(lat, 0.4, 0.3, depth=1),
    "prolong": lambda lat: GaussianProlong(lat, 0.4, 0.3, depth=0),
}
#: two points of the normalised couplings (beta, lam), far apart in [-1, 1]^2
POINTS = torch.tensor([[-0.7, 0.2], [0.9, -0.8]], dtype=torch.float64)


def modulated(kind: str, seed: int = 0, scale: float = 0.3):
    """A layer on 4x4 with its KineticModulation given random (non-zero) weights."""
    ctx = CouplingContext(["beta", "lam"])
    layer = LAYERS[kind](Lattice([4, 4]))
    torch.manual_seed(seed)
    assert modulate_gaussian_layers(layer, ctx) == 1
    layer = layer.double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in layer.modulation.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return ctx, layer


@pytest.mark.numerical
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_log_det_at_two_couplings_matches_the_autograd_jacobian(kind):
    """One batch with a field at each of two couplings: each log|det| is the dense Jacobian's at
    that field's own couplings, and the two differ (the couplings reach the spectrum)."""
    ctx, layer = modulated(kind)
    x = torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with ctx.using(POINTS):
        y, log_det = layer.forward_and_log_det(x)
    for i in range(2):
        with ctx.using(POINTS[i:i + 1]):
            yi, _ = layer.forward_and_log_det(x[i:i + 1])
            jac = torch.autograd.functional.jacobian(lambda v: layer.forward_and_log_det(v.unsqueeze(0))[0][0], x[i])
        want = torch.linalg.slogdet(jac.reshape(16, 16))[1]
        assert torch.allclose(log_det[i], want, rtol=1e-8, atol=1e-8 * 16), (kind, i, log_det[i], want)
        assert_close_to_rounding(y[i:i + 1], yi, y[i].abs().amax().detach() + x[i].abs().amax(), f"{kind}: row {i}")
    assert abs(float((log_det[0] - log_det[1]).detach())) > 1e-2, log_det


@pytest.mark.numerical
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_inverse_undoes_forward_at_per_configuration_couplings(kind):
    ctx, layer = modulated(kind, seed=2)
    x = torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with ctx.using(POINTS), torch.no_grad():
        y, ld_f = layer.forward_and_log_det(x)
        back, ld_i = layer.inverse_and_log_det(y)
    # FFTs and a triangular solve of well-conditioned 3x3 blocks: rounding of the fields' size
    size = (x.abs().amax((1, 2)) + y.abs().amax((1, 2))).view(-1, 1, 1)
    assert_close_to_rounding(back, x, size, f"{kind}: round trip")
    assert_close_to_rounding(ld_f + ld_i, torch.zeros_like(ld_f), ld_f.abs(), f"{kind}: log-dets cancel")


@pytest.mark.numerical
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_at_initialisation_every_coupling_gets_the_unconditional_spectrum(kind):
    """The modulation's last layer starts at zero: the modulated layer maps a field exactly as the
    same layer without modulation, at every coupling (shared point or per configuration)."""
    plain = LAYERS[kind](Lattice([4, 4])).double()
    ctx = CouplingContext(["beta", "lam"])
    layer = LAYERS[kind](Lattice([4, 4]))
    modulate_gaussian_layers(layer, ctx)
    layer = layer.double()
    x = torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with torch.no_grad():
        want, want_ld = plain.forward_and_log_det(x)
    for rows in (POINTS, POINTS[:1]):
        with ctx.using(rows), torch.no_grad():
            got, got_ld = layer.forward_and_log_det(x)
        assert_close_to_rounding(got, want, want.abs().amax() + x.abs().amax(), f"{kind}: field")
        assert_close_to_rounding(got_ld, want_ld, want_ld.abs() + 16, f"{kind}: log-det")


@pytest.mark.numerical
def test_conditional_multigrid_with_zero_modulation_is_the_model_without_it():
    """``condition_gaussian = true`` with the modulations at zero has the density of
    ``condition_gaussian = false`` with the same other weights, at per-configuration couplings;
    non-zero modulations change it."""
    action = build_action({"name": "phi4", "lattice": [8, 8], "beta": 0.4, "lam": 0.5}, REG)
    spec = {"name": "conditional_multigrid", "couplings": {"beta": [0.3, 0.45]}, "hidden": [4]}
    torch.manual_seed(0)
    on = build_model({**spec, "condition_gaussian": True}, action, REG).double()
    off = build_model({**spec, "condition_gaussian": False}, action, REG).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in on.named_parameters():
            if ".modulation." not in n:
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    missing = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing.missing_keys and len(missing.unexpected_keys) == 2 * 4  # 2 Gaussian layers, 2 Linear
    c = on.draw_couplings(3, g)
    phi = torch.randn((3, 8, 8), generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = off.log_prob_at(phi, c)
        got = on.log_prob_at(phi, c)
    assert_close_to_rounding(got, want, scalar_condition(lambda x: off.log_prob_at(x, c), phi), "zero modulation")
    with torch.no_grad():
        for n, p in on.named_parameters():
            if ".modulation." in n:
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        moved = on.log_prob_at(phi, c)
    assert float((moved - want).abs().min()) > 1e-3, (moved, want)


def zero_mode_layer(seed: int = 0, scale: float = 0.5):
    ctx = CouplingContext(["beta", "lam"])
    torch.manual_seed(seed)
    layer = ZeroModeSpline(Lattice([4, 4]), ctx, bins=6, tail_bound=3.0).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return ctx, layer


@pytest.mark.numerical
def test_zero_mode_spline_is_exact_odd_and_invertible_at_two_couplings():
    """log|det| against the dense autograd Jacobian at each field's own couplings (and different
    at the two), f(-z) = -f(z) exactly, inverse undoes forward; only the mean of z moves."""
    ctx, layer = zero_mode_layer()
    x = 0.6 * torch.randn((2, 4, 4), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with ctx.using(POINTS), torch.no_grad():
        y, log_det = layer.forward_and_log_det(x)
        minus, minus_ld = layer.forward_and_log_det(-x)
        back, back_ld = layer.inverse_and_log_det(y)
    assert torch.equal(minus, -y) and torch.equal(minus_ld, log_det)
    size = (x.abs().amax((1, 2)) + y.abs().amax((1, 2))).view(-1, 1, 1)
    assert_close_to_rounding(back, x, size, "zero mode: round trip")
    with ctx.using(POINTS):
        cond = scalar_condition(lambda v: layer.inverse_and_log_det(v)[1], y)
    assert_close_to_rounding(back_ld, -log_det, cond, "zero mode: log-dets cancel")
    d = y - x  # a constant shift per configuration
    assert_close_to_rounding(d, d.mean((1, 2), keepdim=True), size, "zero mode: constant shift")
    for i in range(2):
        with ctx.using(POINTS[i:i + 1]):
            jac = torch.autograd.functional.jacobian(lambda v: layer.forward_and_log_det(v.unsqueeze(0))[0][0], x[i])
        want = torch.linalg.slogdet(jac.reshape(16, 16))[1]
        assert torch.allclose(log_det[i], want, rtol=1e-8, atol=1e-8 * 16), (i, log_det[i], want)
    assert abs(float(log_det[0] - log_det[1])) > 1e-3, log_det


def test_zero_mode_spline_starts_as_the_identity_and_in_the_conditional_models():
    ctx = CouplingContext(["beta"])
    layer = ZeroModeSpline(Lattice([4, 4]), ctx).double()
    x = torch.randn((3, 4, 4), generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        y, log_det = layer.forward_and_log_det(x)
    assert_close_to_rounding(y, x, x.abs().amax(), "identity at start")
    assert float(log_det.abs().max()) <= 64 * torch.finfo(torch.float64).eps
    action = build_action({"name": "phi4", "lattice": [8, 8], "beta": 0.4, "lam": 0.5}, REG)
    for name, shape in (("conditional_multigrid", (4, 4)), ("conditional_equivariant", (8, 8))):
        model = build_model({"name": name, "couplings": {"beta": [0.3, 0.45]}, "hidden": [4], "zero_mode": True},
                            action, REG)
        found = [m for m in model.modules() if isinstance(m, ZeroModeSpline)]
        assert len(found) == 1 and found[0].context is model.context, name
        assert found[0].lattice.shape == shape, name  # multigrid: the coarsest level's latent field
