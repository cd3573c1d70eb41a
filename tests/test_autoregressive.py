"""The autoregressive flow model: exact density, periodic causality, Z2 variants, training.

Statistical checks use fixed seeds and pass at 4 standard errors measured in the same run.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lattgen_generative.autoregressive import AutoregressiveModel
from lattgen_generative.masked import CausalNet, causal_mask, neighbour_table
from rounding import assert_close_to_rounding, scalar_condition
from training_helpers import adam_steps

from lattgen import ConfigError, Lattice
from lattgen.model import standard_normal_log_prob


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


def randomise(model: torch.nn.Module, scale: float, seed: int) -> None:
    """Overwrite every parameter with N(0, scale^2) draws (the zero-initialised last layer too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def model64(shape, seed=0, scale=0.3, **options) -> AutoregressiveModel:
    model = AutoregressiveModel(Lattice(shape), **options).double()
    randomise(model, scale, seed)
    return model


def free_field(shape, beta):
    from lattgen.registry import get_registry

    return get_registry().get("action", "phi4").build(Lattice(shape), params={"beta": beta, "lam": 0.0})


# -- the density ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [[5], [3, 4], [4, 4], [2, 3, 2]])
@pytest.mark.parametrize("transform", ["spline", "affine"])
@pytest.mark.parametrize("z2", ["none", "equivariant", "symmetrise"])
def test_log_q_of_sample_equals_log_prob(shape, transform, z2):
    model = model64(shape, seed=len(shape) + 7, transform=transform, z2=z2, hidden_channels=[6, 6])
    with torch.no_grad():
        phi, log_q = model.sample(16, torch.Generator().manual_seed(1))
        log_p = model.log_prob(phi)
    assert phi.shape == (16, *shape) and phi.dtype == torch.float64
    assert phi.std() > 0.1  # non-trivial weights: a spread-out, non-constant field
    # steep random splines make log q ill-conditioned (up to 3e7 eps here): rounding-level agreement
    assert_close_to_rounding(log_q, log_p, scalar_condition(model.log_prob, phi), "log q vs log_prob")


@pytest.mark.parametrize("z2", ["none", "equivariant"])
def test_cached_sampling_equals_full_passes(z2):
    """The cached single-site steps give the same phi and log-det as V full passes, to rounding.

    Both run V sequential conditional steps whose rounding propagates to later sites, so the
    tolerance is V times the one-evaluation bound: eps (|phi_i| + sum_j |dphi_i/dz_j| |z_j|) per
    site, and the same with the gradient of the log-det for the log-det.
    """
    model = model64([4, 3], seed=3, z2=z2)
    z = torch.randn(8, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        model.flow.sampling = "cached"
        phi_c, ld_c = model.flow.forward_and_log_det(z)
        model.flow.sampling = "full"
        phi_f, ld_f = model.flow.forward_and_log_det(z)
    v = z[0].numel()
    jac = torch.stack([torch.autograd.functional.jacobian(
        lambda x: model.flow.forward_and_log_det(x[None])[0][0], zi).reshape(v, v) for zi in z])
    phi_condition = phi_f.abs() + (jac.abs() @ z.abs().reshape(-1, v, 1)).reshape(z.shape)
    ld_condition = scalar_condition(lambda x: model.flow.forward_and_log_det(x)[1], z)
    assert_close_to_rounding(phi_c, phi_f, v * phi_condition, "cached vs full phi")
    assert_close_to_rounding(ld_c, ld_f, v * ld_condition, "cached vs full log-det")
    assert (phi_c - phi_f).abs().max() < 1e-6  # and the bound itself is still a tight test


def cauchy_draws(n, shape, gamma, generator):
    """n i.i.d. Cauchy(0, gamma) fields and their log-density (heavier tails than any model)."""
    u = torch.rand((n, *shape), generator=generator, dtype=torch.float64)
    x = gamma * torch.tan(math.pi * (u - 0.5))
    log_g = (-math.log(math.pi * gamma) - torch.log1p((x / gamma) ** 2)).flatten(1).sum(1)
    return x, log_g


@pytest.mark.parametrize("transform,z2", [("spline", "none"), ("spline", "equivariant"), ("affine", "none")])
def test_density_integrates_to_one_on_2x2(transform, z2):
    """int q(phi) d^4 phi = E_g[q/g] with a Cauchy proposal g: 1 within 4 standard errors.

    Moderate random weights (scale 0.1): the spline's conditionals are visibly non-Gaussian but
    not so spiky that the importance-sampling error explodes (the error bar is checked too).
    """
    model = model64([2, 2], seed=11, scale=0.1, transform=transform, z2=z2, hidden_channels=[8])
    g = torch.Generator().manual_seed(2)
    ratios = []
    with torch.no_grad():
        for _ in range(5):
            x, log_g = cauchy_draws(20000, (2, 2), 1.0, g)
            ratios.append(torch.exp(model.log_prob(x) - log_g))
    r = torch.cat(ratios)
    mean, err = float(r.mean()), float(r.std() / math.sqrt(r.numel()))
    assert err < 0.02, f"the quadrature is too noisy to test anything: {mean} +- {err}"
    assert abs(mean - 1.0) < 4 * err, f"int q = {mean} +- {err}"


def conditional_integral(conditional, theta: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Trapezoid int N(z(phi)) |dz/dphi| dphi per context theta (B, P), nodes T(z_k), z_k on [-10, 10].

    The adapted nodes resolve spiky conditionals; the integrand uses the inverse only, so a
    wrong inverse or log-det would show. N(z) outside [-10, 10] carries ~1e-23 of the mass.
    """
    z_nodes = torch.linspace(-10, 10, n_nodes, dtype=theta.dtype).expand(theta.shape[0], -1)
    th = theta[:, None, :].expand(-1, n_nodes, -1)
    nodes, _ = conditional.forward(z_nodes, th)
    z, log_det = conditional.inverse(nodes, th)
    density = torch.exp(-0.5 * z * z - 0.5 * math.log(2 * math.pi) + log_det)
    return torch.trapezoid(density, nodes, dim=-1)


def test_each_conditional_integrates_to_one_with_strong_weights():
    """1-D quadrature of q(phi_i | context) for every site i and strongly random weights.

    This reaches spiky conditionals (sigma from e^-4 to e^4, slopes down to 1e-3) that the 4-D
    Monte Carlo integral cannot. Tolerance: 4x the discretisation error estimate, the change from
    halving the node spacing (asymptotically the fine grid's error is 1/3 of it, for trapezoid
    error ~h^2; the spikiest conditionals are not yet asymptotic at these grids, ratio ~2).
    """
    model = model64([2, 3], seed=5, scale=0.5, transform="spline", hidden_channels=[8])
    with torch.no_grad():
        phi, _ = model.sample(4, torch.Generator().manual_seed(0))
        theta = model.flow.theta_all(phi.reshape(4, -1))  # (4, V, P): contexts from real samples
        for site in range(theta.shape[1]):
            coarse = conditional_integral(model.flow.conditional, theta[:, site], 50001)
            fine = conditional_integral(model.flow.conditional, theta[:, site], 100001)
            error = (coarse - fine).abs()
            assert torch.all(error < 1e-3), f"site {site}: the quadrature does not converge"
            assert torch.all((fine - 1).abs() <= 4 * error + 1e-10), f"site {site}: {fine} +- {error}"


# -- causality on the periodic lattice ------------------------------------------------------------
@pytest.mark.parametrize("shape", [[6], [4, 4], [3, 5], [2, 2, 3]])
def test_jacobians_are_triangular_in_raster_order(shape):
    model = model64(shape, seed=2, hidden_channels=[5, 5])
    v = Lattice(shape).volume
    z = torch.randn(1, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: model.flow.forward_and_log_det(x)[0], z)
    jac = jac.reshape(v, v)
    upper = torch.triu(jac, diagonal=1)
    assert torch.all(upper == 0), "phi_i depends on z_j for some j > i"
    assert torch.all(torch.diagonal(jac) > 0), "each conditional is increasing in its own z_i"
    phi, _ = model.flow.forward_and_log_det(z)
    jac_inv = torch.autograd.functional.jacobian(lambda x: model.flow.inverse_and_log_det(x)[0], phi)
    assert torch.all(torch.triu(jac_inv.reshape(v, v), diagonal=1) == 0)


def test_net_sees_exactly_the_earlier_sites_including_periodic_wraps():
    """d theta_i / d phi_j != 0 only for j < i, and the earlier wrap-around neighbours are seen."""
    lat = Lattice([4, 4])
    net = CausalNet(lat, 2, 3, [4, 4], 3).double()
    randomise(net, 0.5, 0)
    x = torch.randn(1, 2, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: net(t), x)  # (1, 3, 16, 1, 2, 16)
    dep = jac.abs().sum(dim=(0, 1, 3, 4)) > 0  # dep[i, j]: output site i depends on input site j
    site = torch.arange(16)
    assert not torch.any(dep & (site[None, :] >= site[:, None])), "a site sees itself or a later one"
    # site (3, 0) (raster 12) sees (0, 0) (raster 0) across the boundary: x + (1, 0) wraps to row 0
    assert dep[12, 0]
    # site (1, 3) (raster 7) sees (1, 0) (raster 4) through the periodic neighbour x + (0, 1)
    assert dep[7, 4]
    # the first site depends on nothing
    assert not torch.any(dep[0])


def test_masks_follow_raster_order_with_wrap_around():
    lat = Lattice([3, 3])
    offsets, nbr = neighbour_table(lat, 3)
    strict = causal_mask(nbr, strict=True)
    up = offsets.tolist().index([-1, 0])
    down = offsets.tolist().index([1, 0])
    # the neighbour above is earlier except on row 0 (wraps to the last row)
    assert strict[up].tolist() == [False] * 3 + [True] * 6
    # the neighbour below is later except on the last row (wraps to row 0: earlier)
    assert strict[down].tolist() == [False] * 6 + [True] * 3
    assert not torch.any(strict[offsets.tolist().index([0, 0])])
    assert torch.all(causal_mask(nbr, strict=False)[offsets.tolist().index([0, 0])])


# -- property tests ---------------------------------------------------------------------------------
shapes = st.lists(st.integers(2, 4), min_size=1, max_size=2).filter(lambda s: math.prod(s) <= 12)


@settings(deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), transform=st.sampled_from(["spline", "affine"]),
       z2=st.sampled_from(["none", "equivariant"]))
def test_round_trip_and_log_det_match_autograd(shape, seed, transform, z2):
    model = model64(shape, seed=seed, scale=0.3, transform=transform, z2=z2, hidden_channels=[4])
    v = math.prod(shape)
    z = torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    phi, log_det = model.flow.forward_and_log_det(z)
    z_back, log_det_inv = model.flow.inverse_and_log_det(phi)
    torch.testing.assert_close(z_back, z, rtol=0, atol=1e-8)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-8)
    jac = torch.autograd.functional.jacobian(lambda x: model.flow.forward_and_log_det(x)[0], z)
    sign, logabs = torch.linalg.slogdet(jac.reshape(v, v))
    assert sign > 0
    torch.testing.assert_close(log_det[0], logabs, rtol=0, atol=1e-8)


@settings(deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), transform=st.sampled_from(["spline", "affine"]))
def test_equivariant_variant_is_exactly_odd(shape, seed, transform):
    model = model64(shape, seed=seed, transform=transform, z2="equivariant", hidden_channels=[4])
    z = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        phi, ld = model.flow.forward_and_log_det(z)
        phi_neg, ld_neg = model.flow.forward_and_log_det(-z)
        torch.testing.assert_close(phi_neg, -phi, rtol=0, atol=1e-10)
        torch.testing.assert_close(ld_neg, ld, rtol=0, atol=1e-10)
    # log_prob inverts the network: rounding amplified by the spline's slopes (tests/rounding.py)
    assert_close_to_rounding(model.log_prob(-phi).detach(), model.log_prob(phi).detach(),
                             scalar_condition(model.log_prob, phi), "log q(-phi) vs log q(phi)")
    assert model.z2_equivariant


def test_symmetrised_variant_is_even_and_flips_both_signs():
    model = model64([3, 3], seed=4, z2="symmetrise")
    with torch.no_grad():
        phi, log_q = model.sample(400, torch.Generator().manual_seed(0))
    flipped = model.log_prob(-phi.detach())
    assert_close_to_rounding(flipped, log_q, scalar_condition(lambda x: model.log_prob(-x), phi),
                             "log q(-phi) vs log q(phi)")
    with torch.no_grad():
        # the base model is not even, so the symmetrisation is doing something
        assert (model.base_log_prob(phi) - model.base_log_prob(-phi)).abs().max() > 0.1
    # the global sign is a fair coin: fraction of positive magnetisation ~ 1/2 (binomial, 4 sigma)
    frac = float((phi.mean((1, 2)) > 0).double().mean())
    assert abs(frac - 0.5) < 4 * math.sqrt(0.25 / 400)


# -- training ---------------------------------------------------------------------------------------
def test_reverse_kl_training_approaches_the_free_energy():
    """On the 4x4 free field (beta = 0.2) the loss E_q[log q + S] >= -log Z falls toward -log Z."""
    torch.manual_seed(0)
    action = free_field([4, 4], beta=0.2)
    k_p = 2.0 * (1.0 - 0.2 * action.lattice.cos_sum(dtype=torch.float64))
    minus_log_z = -0.5 * 16 * math.log(2 * math.pi) + 0.5 * float(torch.log(k_p).sum())
    model = AutoregressiveModel(action.lattice, transform="affine", hidden_channels=[8]).double()

    def evaluate():
        with torch.no_grad():
            phi, log_q = model.sample(4000, torch.Generator().manual_seed(99))
            loss = log_q + action(phi)
        return float(loss.mean()), float(loss.std() / math.sqrt(loss.numel()))

    before, err_before = evaluate()
    adam_steps(model, action, n_steps=60, batch_size=64, lr=1e-2, seed=1)
    after, err_after = evaluate()
    assert before - after > 4 * math.hypot(err_before, err_after), (before, after)
    # variational bound: never below -log Z (beyond noise), and the trained gap is smaller
    assert after > minus_log_z - 4 * err_after
    assert after - minus_log_z < 0.5 * (before - minus_log_z)


# -- registry, options, dtype ----------------------------------------------------------------------
def test_registered_with_its_options(registry):
    spec = registry.get("model", "autoregressive")
    names = {p.name for p in spec.params}
    assert {"hidden_channels", "kernel_size", "transform", "n_bins", "tail_bound", "z2", "sampling"} <= names
    model = spec.build(free_field([4, 4], 0.2), params={"transform": "affine", "z2": "equivariant"})
    assert model.exact_density and not model.requires_data and model.z2_equivariant
    phi, log_q = model.sample(3)
    assert phi.shape == (3, 4, 4) and log_q.shape == (3,) and log_q.requires_grad


@pytest.mark.parametrize("params,word", [({"kernel_size": 4}, "odd"), ({"z2": "odd"}, "choose"),
                                         ({"transform": "cubic"}, "choose"), ({"hidden_channels": [0]}, ">= 1")])
def test_bad_options_raise_config_errors(registry, params, word):
    with pytest.raises(ConfigError, match=word):
        registry.get("model", "autoregressive").build(free_field([4, 4], 0.2), params=params)


def test_float32_model_and_wrong_shapes():
    model = AutoregressiveModel(Lattice([4, 4]))
    phi, log_q = model.sample(5)
    assert phi.dtype == torch.float32 and log_q.dtype == torch.float32
    torch.testing.assert_close(model.log_prob(phi), log_q, rtol=0, atol=1e-4)
    # zero-initialised last layer: the untrained model is exactly N(0, 1) per site
    torch.testing.assert_close(log_q, standard_normal_log_prob(phi), rtol=0, atol=1e-5)
    from lattgen import LatticeError

    with pytest.raises(LatticeError, match="does not fit"):
        model.log_prob(torch.zeros(2, 4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    model = model64([4, 4], seed=1).cuda()
    phi, log_q = model.sample(8, torch.Generator(device="cuda").manual_seed(0))
    assert phi.is_cuda
    torch.testing.assert_close(model.log_prob(phi), log_q, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_trained_model_in_imh_reproduces_free_field_susceptibility(registry):
    """8x8 free field, beta = 0.2: chi = 1/(2 - 4 beta) from IMH with a briefly trained model."""
    if "imh" not in registry.names("sampler"):
        pytest.skip("the imh sampler is not registered")
    from lattgen.analysis import gamma_method
    from lattgen.sampler import run_chain

    torch.manual_seed(0)
    action = free_field([8, 8], beta=0.2)
    model = AutoregressiveModel(action.lattice, hidden_channels=[8, 8])
    adam_steps(model, action, n_steps=100, batch_size=64, lr=3e-3, seed=1)
    sampler = registry.get("sampler", "imh").build(
        action, params={"n_chains": 64}, device="cpu", dtype=torch.float64,
        generator=torch.Generator().manual_seed(3), model=model.double(),
    )
    chain = run_chain(sampler, lambda phi: {"chi": 64 * phi.flatten(1).mean(1) ** 2}, 64 * 300, n_therm=30)
    chi = gamma_method(chain.primaries["chi"])
    assert chain.acceptance > 0.2, chain.acceptance
    assert abs(chi.value - 1.0 / 1.2) < 4 * chi.error, (chi.value, chi.error)
