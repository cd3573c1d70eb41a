"""The multigrid flow's pieces (plugins/lattgen_flows/multigrid.py): decimated propagator, polyphase
split, Gaussian prolongation (exact on the free field), fine-site couplings, the coarse/fine structure
of the model, and its configuration errors.
(Bijectivity, log-det and Z2 of the model and of ``prolong`` are in test_flow_properties.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from lattgen_flows.coupling import fine_sites
from lattgen_flows.multigrid import (
    DecimatedFreeField,
    GaussianProlong,
    coarse_slices,
    decimate_propagator,
    polyphase,
    unpolyphase,
)
from lattgen_flows.zero_mode import ZeroModeSpline
from rounding import assert_close_to_rounding, scalar_condition

from lattgen import Lattice, LatticeError
from lattgen.fourier import power_spectrum
from lattgen.registry import get_registry

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run

REG = get_registry()


def phi4(shape, beta=0.6, lam=0.5):
    return REG.get("action", "phi4").factory(Lattice(shape), beta=beta, lam=lam)


@pytest.mark.parametrize("shape", [(8,), (4, 8), (4, 4, 4)])
def test_decimated_propagator_is_the_coarse_sites_covariance(shape):
    """G_c(m) = 2^-d sum_n G(m + n L/2) equals the spectrum of the covariance restricted to coarse sites."""
    lat = Lattice(shape)
    g = 1.0 / (0.7 * lat.p_hat_squared() + 0.3)
    dims = tuple(range(len(shape)))
    row = torch.fft.ifftn(g, dim=dims).real  # covariance C(x, 0) of the field
    coarse_row = row[tuple(slice(None, None, 2) for _ in shape)]
    expected = torch.fft.fftn(coarse_row, dim=dims).real
    assert torch.allclose(decimate_propagator(g), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(8,), (4, 6), (4, 4, 8)])
def test_polyphase_split_round_trips_and_puts_the_coarse_sites_first(shape):
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = polyphase(x, len(shape))
    assert p.shape == (3, 2 ** len(shape), *(n // 2 for n in shape))
    assert torch.equal(unpolyphase(p, len(shape)), x)
    assert torch.equal(p[:, 0], x[coarse_slices(len(shape))])
    assert torch.equal(p[:, 1], x[(slice(None),) + (slice(None, None, 2),) * (len(shape) - 1) + (slice(1, None, 2),)])


@pytest.mark.parametrize("shape, beta", [((8, 8), 0.2), ((16,), 0.45), ((4, 4, 8), 0.15)])
@pytest.mark.parametrize("levels", [2, 3])
def test_multigrid_gaussian_part_is_exact_on_the_free_field(shape, beta, levels):
    """lam = 0, identity couplings: decimated free field + Gaussian prolongations = the exact free field.

    log w = -S - log q is the same for every sample (acceptance 1 to rounding), and log q is the
    exact normalised density: log w = log Z of the free field.
    """
    if any(n % 2**levels for n in shape):
        pytest.skip("lattice too small for this many levels")
    action = phi4(shape, beta=beta, lam=0.0)
    model = REG.get("model", "multigrid").build(action, params={"levels": levels}).double()
    with torch.no_grad():
        phi, log_q = model.sample(256, torch.Generator().manual_seed(1))
    log_w = -action(phi) - log_q
    volume = math.prod(shape)
    assert float(log_w.max() - log_w.min()) < 1e-9 * volume
    g = torch.as_tensor(action.exact()["propagator"], dtype=torch.float64)
    log_z = 0.5 * float(torch.log(g).sum()) + 0.5 * volume * math.log(2 * math.pi)
    assert abs(float(log_w.mean()) - log_z) < 1e-9 * volume


def test_gaussian_prolong_draws_the_conditional_spectrum():
    """Coarse free field + prolongation on 20000 samples: the power spectrum is G~(p) within 5 sigma."""
    lat = Lattice([8, 8])
    a, b = 0.6, 0.3
    coarse = DecimatedFreeField(Lattice([4, 4]), a, b, depth=1).double()
    prolong = GaussianProlong(lat, a, b).double()
    n = 20000
    z = torch.randn(n, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        c, _ = coarse.forward_and_log_det(z[coarse_slices(2)])
        x = z.clone()
        x[coarse_slices(2)] = c
        phi, _ = prolong.forward_and_log_det(x)
    g = 1.0 / (a * lat.p_hat_squared() + b)
    spectrum = power_spectrum(phi, lat)
    pull = (spectrum.mean(0) - g) / (spectrum.std(0) / math.sqrt(n))
    assert float(pull.abs().max()) < 5


@pytest.mark.parametrize("layer", ["z2_spline_coupling", "affine_coupling"])
def test_fine_site_couplings_never_touch_the_coarse_sites(layer):
    lat = Lattice([4, 4])
    coupling = REG.get("layer", layer).build(lat, params={"sites": "fine", "parity": 0}).double()
    with torch.no_grad():
        for p in coupling.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    z = torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    phi, _ = coupling.forward_and_log_det(z)
    sl = coarse_slices(2)
    assert torch.equal(phi[sl], z[sl])
    changed = (phi != z) & fine_sites(lat)
    assert changed[:, 1, 1].all(), "the even-colour fine sites (1, 1) are updated"
    assert not changed[:, 0, 1].any(), "the odd colour is frozen in a parity-0 layer"


def test_without_smoothing_the_coarse_field_depends_on_coarse_latents_only():
    """The coarse sites of phi are the inner flow of z's coarse sites: fine latents cannot reach them."""
    action = phi4((8, 8))
    model = REG.get("model", "multigrid").build(action, params={"smooth_layers": 0}).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype))
    z = torch.randn(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z2 = z.clone()
    fine = fine_sites(Lattice([8, 8]))
    z2[:, fine] = torch.randn(2, int(fine.sum()), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    phi, _ = model.flow.forward_and_log_det(z)
    phi2, _ = model.flow.forward_and_log_det(z2)
    sl = coarse_slices(2)
    assert torch.equal(phi[sl], phi2[sl])
    assert not torch.equal(phi[:, fine], phi2[:, fine])


def test_three_levels_and_the_lattices_they_need():
    model = REG.get("model", "multigrid").build(phi4((16, 16)), params={"levels": 3})
    inner = model.flow.layers[0].inner.layers[0]
    assert inner.lattice.shape == (8, 8) and inner.inner.layers[0].lattice.shape == (4, 4)
    model.relattice(Lattice([32, 32]))
    assert model.flow.layers[0].inner.layers[0].inner.layers[0].lattice.shape == (8, 8)
    with pytest.raises(LatticeError, match="levels = 3 needs every extent divisible by 2\\^3 = 8"):
        REG.get("model", "multigrid").build(phi4((12, 12)), params={"levels": 3})
    one = REG.get("model", "multigrid").build(phi4((6, 6)), params={"levels": 1})
    assert isinstance(one.flow.layers[0], DecimatedFreeField) and one.flow.layers[0].depth == 0


def test_multigrid_trains_towards_the_target():
    """A few reverse-KL steps lower the loss (the model is trainable end to end, Prolong included)."""
    from lattgen.train import train

    action = phi4((8, 8), beta=0.5)
    model = REG.get("model", "multigrid").build(action, params={"hidden": [8], "coarse_layers": 2})
    b_before = model.flow.layers[1].delta_log_b.detach().clone()
    res = train(model, action, {"max_steps": 30, "batch_size": 64, "lr": 5e-3, "log_every": 30,
                                "eval_batch": 256}, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(model.flow.layers[1].delta_log_b, b_before), "the prolongation's spectrum learns"
    assert res.metrics["ess"] > 0.3


def test_multigrid_zero_mode_option_is_exact_z2_equivariant_and_tiles():
    """``zero_mode``: the identity at start (the model without it), then, with the spline moved, log|det|
    against the dense autograd Jacobian of the whole flow, f(-z) = -f(z), and a field tiled onto 2L maps
    to the tiled output (the layer's volume is a buffer, so relattice keeps the map)."""
    action = phi4((8, 8))
    params = {"hidden": [4], "coarse_layers": 2}
    torch.manual_seed(7)
    plain = REG.get("model", "multigrid").build(action, params=params).double()
    torch.manual_seed(7)
    model = REG.get("model", "multigrid").build(action, params={**params, "zero_mode": True}).double()
    z = torch.randn(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref, ref_ld = plain.flow.forward_and_log_det(z)
        out, out_ld = model.flow.forward_and_log_det(z)
    size = (z.abs().amax((1, 2)) + ref.abs().amax((1, 2))).view(-1, 1, 1)
    assert_close_to_rounding(out, ref, size, "zero mode at start: the plain model")
    assert_close_to_rounding(out_ld, ref_ld, scalar_condition(lambda v: plain.flow.forward_and_log_det(v)[1], z),
                             "zero mode at start: the plain model's log-det")
    spline = [m for m in model.modules() if isinstance(m, ZeroModeSpline)]
    assert len(spline) == 1 and spline[0].lattice.shape == (4, 4)
    with torch.no_grad():
        spline[0].raw.add_(torch.randn(spline[0].raw.shape, generator=torch.Generator().manual_seed(9),
                                       dtype=torch.float64))
        phi, log_det = model.flow.forward_and_log_det(z)
        minus, minus_ld = model.flow.forward_and_log_det(-z)
    assert not torch.allclose(phi.mean((1, 2)), ref.mean((1, 2))), "the moved spline changes the zero mode"
    assert torch.equal(minus, -phi) and torch.equal(minus_ld, log_det)
    jac = torch.autograd.functional.jacobian(lambda v: model.flow.forward_and_log_det(v.unsqueeze(0))[0][0], z[0])
    want = torch.linalg.slogdet(jac.reshape(64, 64))[1]
    assert torch.allclose(log_det[0], want, rtol=1e-8, atol=1e-8 * 64), (log_det[0], want)
    assert model.tiling_equivariant
    model.relattice(Lattice([16, 16]))
    with torch.no_grad():
        tiled, _ = model.flow.forward_and_log_det(z.repeat(1, 2, 2))
    assert_close_to_rounding(tiled, phi.repeat(1, 2, 2), size, "zero mode: tiling")
