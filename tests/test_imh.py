"""Sampler ``imh`` and the reweighting estimator: exactness on the free field.

Proposals are exact-by-construction Gaussian flows phi = ifftn(sqrt(G'(p)) fftn(z)) (float64).
With G' = the action's propagator the model is exact (every log-weight equal, acceptance 1);
with a wrong mass the Metropolis correction must still give the exact susceptibility; with a
noisy (pseudo-marginal) density estimate too. Tolerances are n_sigma times the Gamma-method
(chains) or delta-method (reweighting) errors measured on the same data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lattgen_imh.imh import IMH
from lattgen_phi4 import Phi4Action, power_spectrum_at

from lattgen import ConfigError, Lattice, SamplingError
from lattgen.analysis import gamma_method
from lattgen.build import build_sampler, make_generator
from lattgen.fourier import apply_circulant
from lattgen.model import Bijection, FlowModel, GenerativeModel
from lattgen.reweight import (
    ReweightError,
    draw_weighted,
    ess,
    expected_imh_acceptance,
    normalised_weights,
    reweight,
)
from lattgen.sampler import run_chain

N_SIGMA = 4.0
SHAPE, BETA = [6, 6], 0.3
MOMENTA = [(0, 0), (1, 0), (1, 1)]


# -- stand-in models ------------------------------------------------------------------------------
class CirculantGaussian(Bijection):
    """phi = C^{1/2} z with C = F^-1 diag(G'(p)) F: log|det dphi/dz| = (1/2) sum_p log G'(p)."""

    z2_equivariant = True

    def __init__(self, lattice: Lattice, propagator: torch.Tensor):
        super().__init__()
        self.lattice = lattice
        self.register_buffer("sqrt_g", propagator.sqrt())
        self.register_buffer("half_log_det", 0.5 * propagator.log().sum())

    def forward_and_log_det(self, z):
        phi = apply_circulant(z, self.sqrt_g, self.lattice)
        return phi, self.half_log_det.to(z.dtype).expand(z.shape[0])

    def inverse_and_log_det(self, phi):
        z = apply_circulant(phi, 1.0 / self.sqrt_g, self.lattice)
        return z, -self.half_log_det.to(phi.dtype).expand(phi.shape[0])


def gaussian_model(action: Phi4Action, mass_shift: float = 0.0) -> FlowModel:
    """Float64 Gaussian flow with 1/G'(p) = 1/G~(p) + mass_shift (exact for mass_shift = 0)."""
    prop = 1.0 / (1.0 / action.exact()["propagator"] + mass_shift)
    return FlowModel(action.lattice, CirculantGaussian(action.lattice, prop)).double()


class NoisyDensity(GenerativeModel):
    """A pseudo-marginal stand-in: q_hat = q xi with a random factor xi of phi-dependent width.

    ``log_prob(phi)`` draws xi ~ LogNormal(-s^2/2, s^2) (mean one: q_hat unbiased for q), with
    s(phi)^2 = c V m^2 / chi. ``sample`` returns phi ~ q with xi from the size-biased law
    xi f(xi) = LogNormal(+s^2/2, s^2), the law a latent-variable model produces by keeping the
    generating latent among its importance samples; then E[1/xi | phi] = 1, the condition for
    an exact pseudo-marginal chain. ``tilted = False`` draws the untilted factor in ``sample``
    as well: E[1/xi | phi] = exp(s^2) and the chain targets exp(-S + s^2), i.e. chi / (1 - 2c):
    the negative control showing the test can see a wrong chain.
    """

    exact_density = False

    def __init__(self, base: FlowModel, c: float, chi: float, tilted: bool = True):
        super().__init__(base.lattice)
        self.base, self.c, self.chi, self.tilted = base, c, chi, tilted

    def _log_xi(self, phi, generator, tilt: float):
        m = phi.flatten(1).mean(1)
        s2 = self.c * phi[0].numel() * m * m / self.chi
        eps = torch.randn(phi.shape[0], generator=generator, device=phi.device, dtype=phi.dtype)
        return s2.sqrt() * eps + tilt * s2 / 2

    def sample(self, n, generator=None):
        phi, log_q = self.base.sample(n, generator)
        return phi, log_q + self._log_xi(phi, generator, 1.0 if self.tilted else -1.0)

    def log_prob(self, phi, generator=None):
        return self.base.log_prob(phi) + self._log_xi(phi, generator, -1.0)


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numerical]


def free_action(shape=SHAPE, beta=BETA) -> Phi4Action:
    return Phi4Action(Lattice(shape), beta=beta, lam=0.0)


def spectrum_chain(sampler, n_samples: int, n_therm: int = 50, extra=None):
    lat = sampler.lattice

    def measure(phi):
        out = {"spectrum": power_spectrum_at(phi, lat, MOMENTA)}
        if extra:
            out.update(extra(phi))
        return out

    return run_chain(sampler, measure, n_samples, n_therm=n_therm)


def assert_exact_spectrum(chain, action):
    """G~(p) at MOMENTA (p = 0 is chi) within N_SIGMA Gamma-method errors of the exact values."""
    res = gamma_method(chain.primaries["spectrum"], lambda means: means)
    exact = np.array([float(action.exact()["propagator"][p]) for p in MOMENTA])
    pulls = (res.value - exact) / res.error
    assert np.all(np.abs(pulls) < N_SIGMA), f"values {res.value} +- {res.error}, exact {exact}, pulls {pulls}"
    return res, pulls


# -- exactness ------------------------------------------------------------------------------------
def test_exact_model_accepts_everything_and_reproduces_chi():
    act = free_action()
    sampler = IMH(act, model=gaussian_model(act), n_chains=16, batch_size=32, generator=make_generator(1))
    chain = spectrum_chain(sampler, 16000)
    assert chain.acceptance == 1.0
    assert sampler.info()["longest_rejection_run"] == 0
    res, _ = assert_exact_spectrum(chain, act)
    # independent proposals, all accepted: the chain is i.i.d.
    assert res.tau_int[0] == pytest.approx(0.5, abs=4 * res.tau_int_error[0])
    assert res.value[0] == pytest.approx(act.exact()["susceptibility"], abs=N_SIGMA * res.error[0])


@pytest.mark.parametrize("mass_shift, z2_flip, translate, seed", [
    (0.6, False, False, 2),
    (-0.25, False, False, 3),
    (0.6, True, True, 4),
])
def test_wrong_mass_model_is_corrected_by_metropolis(mass_shift, z2_flip, translate, seed):
    act = free_action()
    sampler = IMH(act, model=gaussian_model(act, mass_shift), n_chains=16, batch_size=64,
                  z2_flip=z2_flip, translate=translate, generator=make_generator(seed))
    m = {"m": lambda phi: phi.flatten(1).mean(1, keepdim=True)}
    chain = spectrum_chain(sampler, 24000, extra=lambda phi: {k: f(phi) for k, f in m.items()})
    assert 0.2 < chain.acceptance < 0.95  # imperfect proposals: the correction has work to do
    assert_exact_spectrum(chain, act)
    mres = gamma_method(chain.primaries["m"])
    assert abs(mres.value) < N_SIGMA * mres.error


def test_proposals_alone_would_be_wrong():
    """Power check of the test above: the raw wrong-mass proposals miss chi by many sigma."""
    act = free_action()
    _, prim = draw_weighted(gaussian_model(act, 0.6), act, 16000, generator=make_generator(5),
                                measure=lambda phi: {"chi": phi.flatten(1).sum(1) ** 2 / phi[0].numel()})
    chi = prim["chi"].numpy()[:, 0]
    err = chi.std() / math.sqrt(chi.size)
    assert abs(chi.mean() - act.exact()["susceptibility"]) > 10 * err


def test_pseudo_marginal_chain_is_exact_with_a_noisy_density():
    act = free_action()
    chi = act.exact()["susceptibility"]
    model = NoisyDensity(gaussian_model(act, 0.3), c=0.15, chi=chi)
    sampler = IMH(act, model=model, n_chains=32, batch_size=64, generator=make_generator(6))
    chain = spectrum_chain(sampler, 32000, n_therm=200)
    assert sampler.info()["pseudo_marginal"] is True
    assert_exact_spectrum(chain, act)


def test_pseudo_marginal_with_untilted_noise_is_detectably_wrong():
    """Negative control: E[1/q_hat | phi] != 1/q makes the chain target chi / (1 - 2c)."""
    act = free_action()
    chi = act.exact()["susceptibility"]
    c = 0.2
    model = NoisyDensity(gaussian_model(act, 0.3), c=c, chi=chi, tilted=False)
    sampler = IMH(act, model=model, n_chains=64, batch_size=64, generator=make_generator(6))
    chain = spectrum_chain(sampler, 128000, n_therm=200)
    res = gamma_method(chain.primaries["spectrum"][..., :1])
    assert (res.value - chi) / res.error > N_SIGMA  # seeds 20-25 gave pulls 6 to 13
    assert res.value == pytest.approx(chi / (1 - 2 * c), abs=N_SIGMA * res.error)


# -- bookkeeping ----------------------------------------------------------------------------------
def longest_runs(accepted: np.ndarray) -> int:
    """Longest stretch of consecutive rejections of any chain in a (steps, chains) 0/1 array."""
    best = 0
    for col in accepted.T:
        run = 0
        for a in col:
            run = 0 if a else run + 1
            best = max(best, run)
    return best


def test_info_extras_and_state_dtype():
    act = free_action()
    sampler = IMH(act, model=gaussian_model(act, 0.6).float(), n_chains=8, batch_size=5,
                  generator=make_generator(7))
    chain = spectrum_chain(sampler, 8 * 300, n_therm=0)
    info = chain.info
    assert info["acceptance"] == pytest.approx(chain.acceptance, abs=1e-12)
    assert info["longest_rejection_run"] == longest_runs(chain.accepted)
    assert info["measured_steps"] == 300 and info["batch_size"] == 5 and info["nan_proposals"] == 0
    lw = chain.extras["log_weights"]
    assert lw.shape == (300, 8) and lw.dtype == np.float64 and np.all(np.isfinite(lw))
    assert sampler.state.dtype == torch.float64  # a float32 model, states in the sampler's dtype
    assert sampler.log_weight.dtype == torch.float64


def test_stored_log_weight_is_that_of_the_current_state():
    act = free_action()
    model = gaussian_model(act, 0.6)
    sampler = IMH(act, model=model, n_chains=8, batch_size=3, generator=make_generator(8))
    for _ in range(10):
        sampler.step()
    with torch.no_grad():
        recomputed = -act(sampler.state) - model.log_prob(sampler.state)
    torch.testing.assert_close(sampler.log_weight, recomputed, rtol=0, atol=1e-9)


def test_symmetry_moves_only_transform_the_output():
    act = free_action()
    sampler = IMH(act, model=gaussian_model(act, 0.6), n_chains=8, batch_size=4, z2_flip=True,
                  translate=True, generator=make_generator(9))
    flips = 0
    for _ in range(20):
        sampler.step()
        x, y = sampler._x, sampler.state
        same_values = torch.sort(y.flatten(1).abs(), 1).values == torch.sort(x.flatten(1).abs(), 1).values
        assert bool(same_values.all())
        flips += int((torch.sign(y.flatten(1).sum(1)) != torch.sign(x.flatten(1).sum(1))).sum())
        # Y is a translate of +-X: some shift of X matches Y exactly
        for c in range(8):
            matches = [torch.equal(torch.roll(s * x[c], (a, b), (0, 1)), y[c])
                       for s in (1, -1) for a in range(6) for b in range(6)]
            assert any(matches)
    assert 40 < flips < 120  # about half of 160 outputs flipped


def test_seeds_reproduce_and_differ():
    act = free_action()

    def run(seed):
        s = IMH(act, model=gaussian_model(act, 0.6), n_chains=4, batch_size=8, translate=True,
                generator=make_generator(seed))
        return spectrum_chain(s, 4 * 50, n_therm=10)

    a, b, c = run(11), run(11), run(12)
    assert np.array_equal(a.primaries["spectrum"], b.primaries["spectrum"])
    assert np.array_equal(a.accepted, b.accepted)
    assert not np.array_equal(a.primaries["spectrum"], c.primaries["spectrum"])


def test_errors_name_the_problem(registry):
    act = free_action()
    with pytest.raises(ConfigError, match="needs a generative model"):
        IMH(act, model=None)
    with pytest.raises(ConfigError, match="needs a generative model"):
        build_sampler({"name": "imh"}, act, run={"device": "cpu", "dtype": "float64"},
                      generator=make_generator(0), registry=registry)

    class NotSymmetric(Phi4Action):
        z2_symmetric = False

    asym = NotSymmetric(Lattice(SHAPE), beta=BETA, lam=0.0)
    with pytest.raises(ConfigError, match="z2_flip"):
        IMH(asym, model=gaussian_model(act), z2_flip=True)

    class WithSource(Phi4Action):
        translation_invariant = False

    sourced = WithSource(Lattice(SHAPE), beta=BETA, lam=0.0)
    with pytest.raises(ConfigError, match="translate"):
        IMH(sourced, model=gaussian_model(act), translate=True)
    other = free_action([4, 4])
    from lattgen import LatticeError

    with pytest.raises(LatticeError, match="lattice"):
        IMH(act, model=gaussian_model(other))


def test_built_through_the_registry(registry):
    act = free_action()
    s = build_sampler({"name": "imh", "n_chains": 4, "batch_size": 2, "z2_flip": True}, act,
                      run={"device": "cpu", "dtype": "float64"}, generator=make_generator(0),
                      model=gaussian_model(act), registry=registry)
    assert isinstance(s, IMH) and s.n_chains == 4 and s.z2_flip
    assert float(s.step().mean()) == 1.0


# -- acceptance estimate used by the trainer -------------------------------------------------------
def test_expected_acceptance_matches_the_chain():
    act = free_action()
    sampler = IMH(act, model=gaussian_model(act, 0.6), n_chains=32, batch_size=64,
                  generator=make_generator(12))
    chain = spectrum_chain(sampler, 32000, n_therm=100)
    acc = gamma_method(chain.accepted[..., None])
    lw = torch.as_tensor(chain.extras["log_weights"]).reshape(-1)
    groups = torch.stack([expected_imh_acceptance(g) for g in lw.chunk(16)]).numpy()
    est, est_err = groups.mean(), groups.std(ddof=1) / math.sqrt(groups.size)
    assert abs(est - acc.value) < N_SIGMA * math.hypot(acc.error, est_err)
    assert float(expected_imh_acceptance(torch.zeros(100))) == pytest.approx(1.0)


# -- reweighting ----------------------------------------------------------------------------------
def chi_primary(phi):
    return {"chi": phi.flatten(1).sum(1) ** 2 / phi[0].numel()}


def test_reweighting_reproduces_exact_chi_and_xi():
    act = free_action()
    exact = act.exact()
    # a wider proposal (G' > G~): bounded weights, so the delta-method error is reliable
    log_w, prim = draw_weighted(gaussian_model(act, -0.25), act, 40000, generator=make_generator(13),
                                measure=lambda phi: {"p": power_spectrum_at(phi, act.lattice, [(0, 0), (1, 0)])})
    chi = reweight(log_w, prim["p"][:, :1])
    assert abs(chi.value - exact["susceptibility"]) < N_SIGMA * chi.error
    assert 1 < chi.ess < 40000 * 0.95

    def xi(means):  # second-moment correlation length from G~(0), G~(p1)
        return math.sqrt((means[0] / means[1] - 1) / (4 * math.sin(math.pi / SHAPE[0]) ** 2))

    res = reweight(log_w, prim["p"], xi)
    assert isinstance(res.value, float)
    assert abs(res.value - exact["correlation_length"]) < N_SIGMA * res.error


def test_reweighting_error_is_calibrated():
    """The delta-method error matches the spread of 200 independent estimates of n = 500.

    The proposal is wider than the target (bounded weights); a narrower one has weights with
    heavy tails, whose variance estimate converges slowly (see docs/training.md).
    """
    act = free_action()
    log_w, prim = draw_weighted(gaussian_model(act, -0.25), act, 200 * 500, generator=make_generator(14),
                                measure=chi_primary)
    results = [reweight(lw, p) for lw, p in zip(log_w.chunk(200), prim["chi"].chunk(200))]
    values = np.array([r.value for r in results])
    errors = np.array([r.error for r in results])
    ratio = values.std(ddof=1) / np.sqrt(np.mean(errors**2))
    # the sample std of 200 estimates has relative error 1/sqrt(2*199) = 5%: 4 sigma = 20%
    assert 0.8 < ratio < 1.2, ratio
    pulls = (values - act.exact()["susceptibility"]) / errors
    assert abs(pulls.mean()) < N_SIGMA / math.sqrt(200) + 0.1  # O(1/n) ratio bias allowance


def test_reweighting_exact_model_and_numerics():
    act = free_action()
    log_w, prim = draw_weighted(gaussian_model(act), act, 5000, generator=make_generator(15), measure=chi_primary)
    assert ess(log_w) == pytest.approx(5000, rel=1e-9)
    plain = prim["chi"].numpy()[:, 0]
    res = reweight(log_w, prim["chi"])
    assert res.value == pytest.approx(plain.mean(), rel=1e-9)
    assert res.error == pytest.approx(plain.std() / math.sqrt(plain.size), rel=1e-6)
    # a huge common offset changes nothing (stable from log-weights); vector primaries
    shifted = reweight(log_w.numpy() + 1e5, np.stack([plain, 2 * plain], 1))
    np.testing.assert_allclose(shifted.value, [res.value, 2 * res.value], rtol=1e-9)
    assert torch.allclose(normalised_weights(log_w + 700.0).sum(), torch.tensor(1.0, dtype=torch.float64))
    # zero weights are allowed, NaN / +inf / all -inf are not
    lw = torch.tensor([0.0, -math.inf, 0.0])
    assert reweight(lw, torch.tensor([1.0, 100.0, 3.0])).value == pytest.approx(2.0)
    for bad in ([0.0, math.nan], [0.0, math.inf], [-math.inf, -math.inf]):
        with pytest.raises(ReweightError):
            reweight(torch.tensor(bad), torch.zeros(2))
    with pytest.raises(ReweightError, match="shape"):
        reweight(torch.zeros(3), torch.zeros(4))


# -- non-finite proposals (issue 14) ----------------------------------------------------------------
class Overflowing(GenerativeModel):
    """The exact Gaussian model with log q = -inf (so log w = +inf) or NaN on the proposals whose
    phi at the origin exceeds ``t``: a model that overflows on a tail of its own samples."""

    def __init__(self, base: FlowModel, t: float, value: float):
        super().__init__(base.lattice)
        self.base, self.t, self.value = base, t, value

    def sample(self, n, generator=None):
        phi, log_q = self.base.sample(n, generator)
        return phi, torch.where(phi[:, 0, 0] > self.t, self.value, log_q)

    def log_prob(self, phi, generator=None):
        return self.base.log_prob(phi)


def site_sigma(action) -> float:
    return float(action.exact()["propagator"].mean()) ** 0.5


@pytest.mark.parametrize("value", [-math.inf, math.nan])
def test_non_finite_proposals_are_rejected_and_counted(value):
    """A +inf log-weight used to be accepted and freeze the chain (inf - inf = NaN ever after):
    now no flagged proposal is ever the state, the chain keeps accepting, and the count is in info."""
    act = free_action()
    t = 2.3 * site_sigma(act)  # ~1% of the proposals
    sampler = IMH(act, model=Overflowing(gaussian_model(act), t, value), n_chains=8, batch_size=16,
                  max_non_finite=0.05, generator=make_generator(3))
    chain = spectrum_chain(sampler, 8 * 400, n_therm=20, extra=lambda phi: {"origin": phi[:, 0, 0, None]})
    assert chain.primaries["origin"].max() <= t
    assert chain.accepted[-100:].mean() > 0.9  # the exact model accepts (almost) all finite ones
    info = chain.info
    drawn = info["proposals_drawn"]
    assert drawn >= 8 * 420 and 0 < info["non_finite_proposals"] < 0.05 * drawn
    assert info["nan_proposals"] == (info["non_finite_proposals"] if math.isnan(value) else 0)


def test_too_many_non_finite_proposals_stop_with_a_clear_error():
    act = free_action()
    model = Overflowing(gaussian_model(act), 0.5 * site_sigma(act), -math.inf)  # ~30% of them
    with pytest.raises(SamplingError, match=r"non-finite log-weight.*sampler.max_non_finite = 0.01"):
        IMH(act, model=model, n_chains=8, batch_size=16, generator=make_generator(3))


def test_non_finite_count_reaches_results_json(registry):
    from lattgen.sample import run_sampling

    act = free_action()
    config = {"action": {"name": "phi4", "lattice": SHAPE, "beta": BETA, "lam": 0.0},
              "sampler": {"name": "imh", "n_chains": 4, "batch_size": 8, "max_non_finite": 0.1},
              "run": {"n_samples": 200, "n_therm": 10, "measure_every": 1, "seed": 2, "device": "cpu",
                      "dtype": "float64", "observables": ["susceptibility"]}}
    model = Overflowing(gaussian_model(act), 2.0 * site_sigma(act), -math.inf)
    results, _ = run_sampling(config, model=model, registry=registry)
    assert results["sampler_info"]["non_finite_proposals"] > 0
    assert results["sampler_info"]["max_non_finite"] == 0.1
