"""The VAE baseline: its density estimate, the pseudo-marginal argument, and an exact chain.

Statistical checks use fixed seeds and pass at 4 standard errors measured in the same run.
"""

from __future__ import annotations

import math

import pytest
import torch
from training_helpers import adam_steps
from lattgen_generative.vae import GaussianVAE, gaussian_log_density

from lattgen import ConfigError, Lattice, LatticeError, make_training_data
from lattgen.analysis import gamma_method
from lattgen.fourier import sample_gaussian_field
from lattgen.sampler import metropolis_accept


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


def free_field(shape, beta):
    from lattgen.registry import get_registry

    return get_registry().get("action", "phi4").build(Lattice(shape), params={"beta": beta, "lam": 0.0})


def log_partition_function(action) -> float:
    """log Z of the free field S = 1/2 phi^T K phi: (V/2) log 2 pi - 1/2 sum_p log K(p)."""
    lat = action.lattice
    k_p = 1.0 / action.exact()["propagator"]
    return 0.5 * lat.volume * math.log(2 * math.pi) - 0.5 * float(torch.log(k_p).sum())


def tiny_vae(k: int, encoder_width: float, encoder_mean: bool = True, seed: int = 5) -> GaussianVAE:
    """A random VAE on a 2-site 1-D lattice (latent z in R^2, so q is a 2-D integral).

    Means random (the decoder's mu(z) really depends on z), widths fixed so that the estimators
    have finite variance, which depends on the estimator: a fresh q_hat needs r wider than the
    posterior (encoder width 1.5); the proposal's exp(-S)/q_hat contains r(z_0|phi)/p(z_0),
    z_0 ~ p, and exp(-S)/p(phi|z_0), which need r narrower than sqrt(2) (0.8) and a decoder
    wider than 1/2 (here 1). ``encoder_mean=False`` makes r ignore phi altogether.
    """
    model = GaussianVAE(Lattice([2]), hidden_channels=[4], n_importance=k).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for last, width in ((model.encoder[-1], encoder_width), (model.decoder[-1], 1.0)):
            last.weight[1:].zero_()
            last.bias[1:].fill_(math.log(width))
        if not encoder_mean:
            model.encoder[-1].weight.zero_()
            model.encoder[-1].bias[:1].zero_()
    return model


def brute_force_log_q(model: GaussianVAE, phi: torch.Tensor) -> float:
    """log q(phi) = log int p(phi|z) p(z) d^2z by the trapezoid rule on [-7, 7]^2 (401^2 nodes)."""
    zs = torch.linspace(-7, 7, 401, dtype=torch.float64)
    w = torch.full((401,), float(zs[1] - zs[0]), dtype=torch.float64)
    w[0] = w[-1] = w[0] / 2
    z1, z2 = torch.meshgrid(zs, zs, indexing="ij")
    z = torch.stack([z1.flatten(), z2.flatten()], -1).reshape(-1, 1, 2)
    log_w = torch.log(w[:, None] * w[None, :]).flatten()
    with torch.no_grad():
        mu, log_sigma = model.decode(z)
        log_joint = gaussian_log_density(phi.expand(z.shape[0], 2), mu, log_sigma, 1) + gaussian_log_density(
            z, torch.zeros_like(z), torch.zeros_like(z), 1)
        return float(torch.logsumexp(log_joint + log_w, 0))


# -- the estimator ----------------------------------------------------------------------------------
@pytest.mark.parametrize("phi", [[0.3, -0.5], [1.2, 0.9]])
def test_fresh_estimate_is_unbiased_in_q_not_in_log_q(phi):
    model = tiny_vae(k=2, encoder_width=1.5)
    phi = torch.tensor(phi, dtype=torch.float64)
    log_q = brute_force_log_q(model, phi)
    n = 100_000
    with torch.no_grad():
        log_q_hat = model.log_prob(phi.expand(n, 2).contiguous(), generator=torch.Generator().manual_seed(1))
    q_hat = torch.exp(log_q_hat)
    mean, err = float(q_hat.mean()), float(q_hat.std()) / math.sqrt(n)
    assert abs(mean - math.exp(log_q)) < 4 * err, (mean, err, math.exp(log_q))
    # the log of an unbiased estimate is biased low (Jensen): E[log q_hat] < log q
    log_mean, log_err = float(log_q_hat.mean()), float(log_q_hat.std()) / math.sqrt(n)
    assert log_mean < log_q - 4 * log_err


def test_extended_space_identity_makes_the_weights_exact():
    """E over model samples of exp(-S)/q_hat equals Z when q_hat includes the generating latent.

    That identity (int Q_bar(phi, u) / q_hat(phi, u) du = 1) is what makes independence
    Metropolis with the estimate exact. With fresh encoder draws instead, E[1/q_hat] > 1/q and
    the same average overshoots Z: here by many standard errors. The encoder is deliberately
    poor, r(z|phi) = N(0, 0.8^2) whatever phi, which keeps r(z_0)/p(z_0) <= 1.25 (finite variance)
    while the fresh estimate is far from the posterior.
    """
    action = free_field([2], beta=0.2)
    log_z = log_partition_function(action)
    n = 100_000
    for k in (1, 4):
        model = tiny_vae(k=k, encoder_width=0.8, encoder_mean=False)
        with torch.no_grad():
            phi, log_q_hat = model.sample(n, torch.Generator().manual_seed(3 + k))
            ratio = torch.exp(-action(phi) - log_q_hat - log_z)
            fresh = torch.exp(-action(phi) - model.log_prob(phi, generator=torch.Generator().manual_seed(9)) - log_z)
        mean, err = float(ratio.mean()), float(ratio.std()) / math.sqrt(n)
        assert err < 0.05, f"K = {k}: too noisy to test ({mean} +- {err})"
        assert abs(mean - 1.0) < 4 * err, f"K = {k}: E[exp(-S)/q_hat]/Z = {mean} +- {err}"
        fresh_mean, fresh_err = float(fresh.mean()), float(fresh.std()) / math.sqrt(n)
        assert fresh_mean > 1.0 + 4 * fresh_err, f"K = {k}: fresh draws {fresh_mean} +- {fresh_err}"


def test_iwae_bound_is_tighter_than_the_elbo():
    """-IWAE_8 <= -ELBO on average (Burda et al.), both >= -log q: on a tiny random VAE."""
    model = tiny_vae(k=1, encoder_width=1.0)
    phi = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        model.n_train_importance = 1
        elbo = model.data_loss(phi, generator=torch.Generator().manual_seed(1))
        model.n_train_importance = 8
        iwae = model.data_loss(phi, generator=torch.Generator().manual_seed(1))
    assert iwae < elbo


# -- the chain --------------------------------------------------------------------------------------
def pseudo_marginal_imh(model, action, n_chains, n_steps, n_therm, generator):
    """Independence Metropolis with estimated proposal densities, vectorised over chains.

    Each state keeps the estimate it was proposed with (never recomputed): the pseudo-marginal
    chain on (phi, u). Returns V m^2 per step and chain, shape (n_steps, n_chains, 1), and the
    acceptance rate.
    """
    volume = action.lattice.volume
    with torch.no_grad():
        phi, log_q = model.sample(n_chains, generator)
        log_w = (-action(phi) - log_q).to(torch.float64)
        records, accepted = [], []
        for step in range(n_therm + n_steps):
            prop, log_q_prop = model.sample(n_chains, generator)
            log_w_prop = (-action(prop) - log_q_prop).to(torch.float64)
            accept = metropolis_accept(log_w_prop - log_w, generator)
            phi = torch.where(accept.reshape(-1, *[1] * action.lattice.ndim), prop, phi)
            log_w = torch.where(accept, log_w_prop, log_w)
            if step >= n_therm:
                records.append(volume * phi.to(torch.float64).flatten(1).mean(1) ** 2)
                accepted.append(accept.to(torch.float64))
    return torch.stack(records).unsqueeze(-1).numpy(), float(torch.stack(accepted).mean())


def trained_free_field_vae(action, seed=0):
    """A VAE fitted briefly (100 Adam steps, ELBO) to exact free-field samples."""
    exact = action.exact()
    data = sample_gaussian_field(exact["propagator"], action.lattice, 4096, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = GaussianVAE(action.lattice, hidden_channels=[8], n_importance=8)
    losses = adam_steps(model, action, data=data.float(), n_steps=100, batch_size=128, lr=3e-3, seed=seed + 1)
    return model.double(), losses


def test_pseudo_marginal_chain_reproduces_free_field_susceptibility():
    """4x4 free field, beta = 0.2: chi = V <m^2> = 1/(2 - 4 beta) from the VAE's PM-IMH chain."""
    action = free_field([4, 4], beta=0.2)
    chi_exact = 1.0 / (2.0 - 4.0 * 0.2)
    model, losses = trained_free_field_vae(action)
    assert sum(losses[-10:]) < sum(losses[:10]), "the ELBO did not improve"
    data, acceptance = pseudo_marginal_imh(model, action, n_chains=64, n_steps=300, n_therm=30,
                                           generator=torch.Generator().manual_seed(7))
    chi = gamma_method(data)
    assert acceptance > 0.3, f"acceptance {acceptance}: the test would say little"
    assert abs(chi.value - chi_exact) < 4 * chi.error, (chi.value, chi.error, chi_exact)


def test_registered_imh_sampler_runs_the_vae_exactly(registry):
    """The plugin sampler ``imh`` (where present) is pseudo-marginal with this model's estimates."""
    if "imh" not in registry.names("sampler"):
        pytest.skip("the imh sampler is not registered yet")
    from lattgen.sampler import run_chain

    action = free_field([4, 4], beta=0.2)
    model, _ = trained_free_field_vae(action)
    sampler = registry.get("sampler", "imh").build(
        action, params={"n_chains": 64}, device="cpu", dtype=torch.float64,
        generator=torch.Generator().manual_seed(3), model=model,
    )
    chain = run_chain(sampler, lambda phi: {"chi": 16 * phi.flatten(1).mean(1) ** 2}, 64 * 300, n_therm=30)
    chi = gamma_method(chain.primaries["chi"])
    assert abs(chi.value - 1.0 / 1.2) < 4 * chi.error, (chi.value, chi.error)


def test_generic_trainer_fits_the_vae_by_forward_kl(tmp_path):
    """lattgen.train.train with loss = "forward_kl" calls the VAE's data_loss (-ELBO) on saved data."""
    from lattgen.config import TRAIN_PARAMS
    from lattgen.params import validate_params
    from lattgen.train import train

    action = free_field([4, 4], beta=0.2)
    g = torch.Generator().manual_seed(0)
    data = sample_gaussian_field(action.exact()["propagator"], action.lattice, 2048, g)
    torch.save(data[:1024].float(), tmp_path / "configs.pt")
    held_out = data[1024:].float()
    cfg = validate_params(TRAIN_PARAMS, {
        "max_steps": 60, "loss": "forward_kl", "data": str(tmp_path / "configs.pt"), "batch_size": 128,
        "lr": 3e-3, "log_every": 60, "checkpoint_every": 60, "eval_batch": 256}, "train")
    torch.manual_seed(1)
    model = GaussianVAE(action.lattice, hidden_channels=[8], n_importance=4)

    def held_out_loss():
        with torch.no_grad():
            per_config = -model.log_weights(held_out, 1, torch.Generator().manual_seed(5))[0]
        return float(per_config.mean()), float(per_config.std()) / math.sqrt(per_config.numel())

    before, err_before = held_out_loss()
    result = train(model, action, cfg, generator=torch.Generator().manual_seed(2))
    after, err_after = held_out_loss()
    assert result.step == 60
    assert before - after > 4 * math.hypot(err_before, err_after), (before, after)


# -- training data ----------------------------------------------------------------------------------
def test_make_training_data_gives_decorrelated_exact_configurations():
    """HMC data on the 4x4 free field: shape, dtype, and chi within 4 sigma of 1/(2 - 4 beta).

    For independent Gaussian m, V m^2 has variance 2 chi^2, so the error of the mean is
    chi sqrt(2/n) (the configurations are ~independent by construction; the check is loose on
    purpose to survive residual correlation and remains a check of exactness).
    """
    action = free_field([4, 4], beta=0.2)
    n = 512
    data = make_training_data(action, n, seed=3, n_chains=64, n_therm=100)
    assert data.shape == (n, 4, 4) and data.dtype == torch.float64
    chi_hat = float(16 * (data.flatten(1).mean(1) ** 2).mean())
    chi = 1.0 / 1.2
    assert abs(chi_hat - chi) < 4 * chi * math.sqrt(2.0 / n), chi_hat
    with pytest.raises(ConfigError, match="n >= 1"):
        make_training_data(action, 0, seed=0)


# -- interface ------------------------------------------------------------------------------------
def test_registered_with_flags_and_options(registry):
    spec = registry.get("model", "vae")
    assert {"latent_channels", "hidden_channels", "kernel_size", "n_importance", "n_train_importance"} <= {
        p.name for p in spec.params}
    assert {p.name: p.default for p in spec.params}["n_importance"] == 4
    model = spec.build(free_field([4, 4], 0.2), params={"n_importance": 4})
    assert not model.exact_density and model.requires_data
    phi, log_q = model.sample(3)
    assert phi.shape == (3, 4, 4) and log_q.shape == (3,) and log_q.requires_grad
    assert model.log_prob(phi).shape == (3,)
    loss = model.data_loss(phi.detach())
    loss.backward()
    assert loss.dim() == 0 and all(p.grad is not None for p in model.decoder.parameters())


def test_untrained_vae_is_standard_normal_and_its_estimate_exact():
    """Zero-initialised last layers: decoder N(0, 1) whatever z, encoder = prior, so q_hat = q."""
    model = GaussianVAE(Lattice([3, 3]), n_importance=4).double()
    phi, log_q = model.sample(5, torch.Generator().manual_seed(0))
    expected = gaussian_log_density(phi, torch.zeros_like(phi), torch.zeros_like(phi), 1)
    torch.testing.assert_close(log_q, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.log_prob(phi), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("params,error,word", [
    ({"n_importance": 0}, ConfigError, "n_importance"),
    ({"kernel_size": 2}, ConfigError, "odd"),
])
def test_bad_options(registry, params, error, word):
    with pytest.raises(error, match=word):
        registry.get("model", "vae").build(free_field([4, 4], 0.2), params=params)


def test_four_dimensional_lattice_is_refused():
    with pytest.raises(LatticeError, match="dimension 1, 2 or 3"):
        GaussianVAE(Lattice([2, 2, 2, 2]))
