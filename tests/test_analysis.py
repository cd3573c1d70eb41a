"""Gamma method (Wolff, hep-lat/0306017): exact AR(1) autocorrelations, pyerrors cross-check,
edge cases, property tests; reweighting ESS; analyse_chain output."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import lfilter

from lattgen.analysis import (
    AnalysisError,
    AnalysisWarning,
    analyse_chain,
    automatic_window,
    effective_sample_size,
    gamma_method,
    importance_weights_ess,
)
from lattgen.errors import LattgenError
from lattgen.observable import Observable
from lattgen.sampler import Chain

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run


def ar1(a: float, n_steps: int, n_chains: int, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) x_t = a x_{t-1} + sqrt(1 - a^2) eps_t, unit variance, (n_steps, n_chains).

    Exact tau_int = (1 + a) / (2 (1 - a)).
    """
    eps = rng.standard_normal((n_steps, n_chains))
    start = a * rng.standard_normal((1, n_chains))  # x_{-1} ~ N(0, 1): stationary from step 0
    return lfilter([math.sqrt(1 - a * a)], [1.0, -a], eps, axis=0, zi=start)[0]


def exact_tau(a: float) -> float:
    return (1 + a) / (2 * (1 - a))


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.fixture(scope="module")
def pe():
    with warnings.catch_warnings():  # pyerrors imports the deprecated scipy.odr
        warnings.simplefilter("ignore")
        return pytest.importorskip("pyerrors")


# -- AR(1): tau_int and errors against exact values -------------------------------------------------
@pytest.mark.parametrize("a", [0.0, 0.5, 0.8, 0.9])
@pytest.mark.parametrize("seed", range(4))
def test_ar1_tau_int_within_its_error(a, seed):
    rng = np.random.default_rng(1000 * seed + int(100 * a))
    x = ar1(a, 20_000, 4, rng)
    res = gamma_method(x)
    assert abs(res.tau_int - exact_tau(a)) <= 4 * res.tau_int_error
    assert res.n_eff == pytest.approx(x.size / (2 * res.tau_int))


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_ar1_error_of_mean_matches_asymptotic(a):
    rng = np.random.default_rng(7)
    x = ar1(a, 40_000, 3, rng)
    res = gamma_method(x)
    exact = math.sqrt(2 * exact_tau(a) * 1.0 / x.size)  # unit variance
    assert abs(res.error - exact) <= 4 * res.error_of_error
    assert abs(res.value) <= 4 * exact


def test_long_single_chain_is_fast_and_right():
    """10^6 steps (FFT autocorrelation): a = 0.99, tau_int = 99.5."""
    x = ar1(0.99, 1 << 20, 1, np.random.default_rng(3))
    res = gamma_method(x)
    assert abs(res.tau_int - exact_tau(0.99)) <= 4 * res.tau_int_error


def test_iid_replicas_error_is_naive_error():
    x = np.random.default_rng(11).standard_normal((500, 16))
    res = gamma_method(x)
    naive = x.std() / math.sqrt(x.size)
    assert abs(res.tau_int - 0.5) <= 4 * res.tau_int_error
    assert abs(res.error - naive) <= 4 * res.error_of_error + 4 * naive * res.tau_int_error


def test_disagreeing_replicas_inflate_the_error():
    """Fluctuations are taken about the overall mean (UWerr): offset chains are not hidden."""
    x = np.random.default_rng(5).standard_normal((1000, 4))
    shifted = x + np.array([0.0, 0.0, 1.0, 1.0])
    assert gamma_method(shifted).error > 3 * gamma_method(x).error


# -- derived quantities: cross-check with pyerrors --------------------------------------------------
def _pyerrors_rtol(window: int, n_chains: int, n_total: int) -> float:
    """pyerrors subtracts each replica's own mean and does not correct the bias this leaves
    in Gamma(t) (about -C_F R/N per lag), so its C_F, tau_int and error^2 are low by about
    R (2W + 1)/N relative to ours; allow twice that."""
    return 2 * n_chains * (2 * window + 1) / n_total


def _pyerrors_obs(pe, series: np.ndarray, ens: str = "ens"):
    return pe.Obs(
        [series[:, r] for r in range(series.shape[1])],
        [f"{ens}|r{r}" for r in range(series.shape[1])],
    )


@pytest.mark.parametrize(
    "func", [lambda v: v[0] / v[1], lambda v: v[0] * v[1]], ids=["ratio", "product"]
)
def test_derived_quantity_agrees_with_pyerrors(pe, func):
    rng = np.random.default_rng(21)
    common = ar1(0.7, 20_000, 4, rng)
    num = 3.0 + common + 0.5 * ar1(0.3, 20_000, 4, rng)
    den = 2.0 + 0.5 * common + ar1(0.9, 20_000, 4, rng)
    ours = gamma_method(np.stack([num, den], axis=-1), lambda m: func(m), S=2.0)
    theirs = pe.derived_observable(
        lambda v, **kw: func(v), [_pyerrors_obs(pe, num), _pyerrors_obs(pe, den)]
    )
    theirs.gamma_method(S=2.0)
    rtol = _pyerrors_rtol(ours.window, num.shape[1], num.size)
    assert ours.value + ours.bias == pytest.approx(
        theirs.value, rel=1e-12
    )  # pyerrors: no bias correction
    assert abs(ours.bias) < ours.error / 4  # UWerr's threshold for a worrying bias
    assert ours.error == pytest.approx(theirs.dvalue, rel=rtol)
    assert ours.tau_int == pytest.approx(theirs.e_tauint["ens"], rel=rtol)


def test_primary_agrees_with_pyerrors(pe):
    x = ar1(0.8, 10_000, 3, np.random.default_rng(2))
    ours = gamma_method(x, S=2.0)
    theirs = _pyerrors_obs(pe, x)
    theirs.gamma_method(S=2.0)
    assert ours.value == pytest.approx(theirs.value, abs=1e-14)
    rtol = _pyerrors_rtol(ours.window, x.shape[1], x.size)
    assert ours.error == pytest.approx(theirs.dvalue, rel=rtol)
    assert ours.tau_int == pytest.approx(theirs.e_tauint["ens"], rel=rtol)


def test_vector_output_is_componentwise():
    rng = np.random.default_rng(4)
    data = np.stack([2.0 + ar1(0.6, 5000, 2, rng), 1.0 + ar1(0.2, 5000, 2, rng)], axis=-1)
    vec = gamma_method(data, lambda m: np.array([m[0] / m[1], m[0] * m[1]]))
    ratio = gamma_method(data, lambda m: m[0] / m[1])
    product = gamma_method(data, lambda m: m[0] * m[1])
    for field in ("value", "error", "tau_int", "window", "n_eff"):
        np.testing.assert_allclose(
            getattr(vec, field), [getattr(ratio, field), getattr(product, field)]
        )


def test_linear_derive_equals_analysis_of_the_combined_series():
    rng = np.random.default_rng(8)
    data = np.stack([ar1(0.5, 4000, 3, rng), ar1(0.8, 4000, 3, rng)], axis=-1)
    derived = gamma_method(data, lambda m: 2 * m[0] - 3 * m[1])
    direct = gamma_method(2 * data[..., 0] - 3 * data[..., 1])
    assert derived.value == pytest.approx(direct.value, rel=1e-9, abs=1e-12)
    assert derived.error == pytest.approx(direct.error, rel=1e-6)
    assert derived.tau_int == pytest.approx(direct.tau_int, rel=1e-6)


def test_replica_bias_estimate_matches_the_exact_bias():
    """F = 1/<x>, iid x ~ N(mu, s^2): E[F(mean)] - F(mu) = s^2/(N mu^3) + O(N^-2)."""
    rng = np.random.default_rng(9)
    mu, s, n_steps, n_chains = 1.0, 0.3, 20, 8
    biases = [
        gamma_method(mu + s * rng.standard_normal((n_steps, n_chains)), lambda m: 1 / m[0]).bias
        for _ in range(300)
    ]
    exact = s**2 / (n_steps * n_chains * mu**3)
    assert abs(np.mean(biases) - exact) <= 4 * np.std(biases) / math.sqrt(len(biases))


# -- edge cases -----------------------------------------------------------------------------------
def test_constant_series_gives_zero_error_without_warnings(no_warnings):
    res = gamma_method(np.full((100, 3), 0.1))
    assert (res.value, res.error, res.tau_int, res.tau_int_error, res.window) == (
        0.1,
        0.0,
        0.5,
        0.0,
        0,
    )
    assert res.n_eff == 300


def test_partly_constant_primaries(no_warnings):
    x = ar1(0.5, 2000, 2, np.random.default_rng(1))
    data = np.stack([x, np.full_like(x, 2.0)], axis=-1)
    res = gamma_method(data, lambda m: m[0] * m[1])
    alone = gamma_method(x)
    assert res.error == pytest.approx(2 * alone.error, rel=1e-6)
    flat = gamma_method(data, lambda m: m[1] ** 2)
    assert (flat.value, flat.error, flat.tau_int) == (4.0, 0.0, 0.5)


def test_too_short_or_bad_data_is_a_clear_error():
    with pytest.raises(AnalysisError, match="at least 2 steps"):
        gamma_method(np.ones((1, 5, 1)))
    with pytest.raises(AnalysisError, match="non-finite"):
        gamma_method(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(AnalysisError, match="shape"):
        gamma_method(np.ones((4, 2, 2, 2)))
    with pytest.raises(AnalysisError, match="S must be"):
        gamma_method(np.ones(10), S=-1)
    assert issubclass(AnalysisError, LattgenError)


def test_many_short_correlated_chains_warn_that_windowing_failed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 5000)) + 0.01 * rng.standard_normal((10, 5000))
    with pytest.warns(AnalysisWarning, match="windowing failed"):
        res = gamma_method(x)
    assert res.window == 5


def test_automatic_window_rules():
    gamma = np.ones((11, 1))  # rho = 1: never decays
    window, failed = automatic_window(gamma, n_total=10**12, S=1.5)
    assert (window[0], failed[0]) == (10, True)
    white = np.zeros((11, 1))
    white[0] = 1.0  # rho(t) = 0: tau_W tiny, W = 1
    window, failed = automatic_window(white, n_total=100, S=1.5)
    assert (window[0], failed[0]) == (1, False)
    assert automatic_window(gamma, n_total=100, S=0.0)[0][0] == 0


def test_anticorrelated_series_error_is_nan_with_warning():
    with pytest.warns(AnalysisWarning, match="anti-correlated"):
        res = gamma_method(np.tile([1.0, -1.0], 50))
    assert math.isnan(res.error)


def test_undefined_derived_value_is_nan_not_a_crash(no_warnings):
    x = np.random.default_rng(0).standard_normal((100, 2))
    res = gamma_method(x, lambda m: np.array([np.sqrt(-1.0 - m[0] ** 2), m[0]]))
    assert math.isnan(res.value[0]) and math.isnan(res.error[0])
    assert np.isfinite(res.value[1]) and np.isfinite(res.error[1])


def test_effective_sample_size_is_n_over_two_tau():
    x = ar1(0.8, 20_000, 2, np.random.default_rng(6))
    res = gamma_method(x)
    assert effective_sample_size(x) == pytest.approx(x.size / (2 * res.tau_int))


def test_torch_input_is_accepted():
    x = ar1(0.5, 1000, 2, np.random.default_rng(6))
    assert gamma_method(torch.from_numpy(x)).value == pytest.approx(gamma_method(x).value)


# -- properties -----------------------------------------------------------------------------------
@given(seed=st.integers(0, 2**32 - 1), n_chains=st.integers(2, 6))
def test_chain_permutation_changes_nothing(seed, n_chains):
    rng = np.random.default_rng(seed)
    data = np.stack(
        [2.0 + ar1(0.6, 200, n_chains, rng), 1.0 + ar1(0.3, 200, n_chains, rng)], axis=-1
    )
    perm = rng.permutation(n_chains)
    a = gamma_method(data, lambda m: m[0] / m[1])
    b = gamma_method(data[:, perm], lambda m: m[0] / m[1])
    for field in ("value", "error", "tau_int", "n_eff"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9, abs=1e-12)
    assert a.window == b.window


@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
    shift=st.floats(-1e3, 1e3),
)
def test_affine_map_scales_value_and_error(seed, scale, shift):
    x = ar1(0.7, 300, 3, np.random.default_rng(seed))
    a = gamma_method(x)
    b = gamma_method(scale * x + shift)
    assert b.value == pytest.approx(
        scale * a.value + shift, rel=1e-9, abs=1e-9 * (abs(shift) + abs(scale))
    )
    assert b.error == pytest.approx(abs(scale) * a.error, rel=1e-6)
    assert b.tau_int == pytest.approx(a.tau_int, rel=1e-6)


@given(seed=st.integers(0, 2**32 - 1), repeat=st.integers(2, 4))
def test_error_shrinks_like_one_over_sqrt_n(seed, repeat):
    """Copies of the chains multiply N by `repeat` at fixed Gamma(0): with S = 0 (no
    autocorrelation assumed) error^2 = Gamma(0) (1 + 1/N) / N, eq. (49)'s bias correction included."""
    x = np.random.default_rng(seed).standard_normal((400, 4))
    a = gamma_method(x, S=0.0)
    b = gamma_method(np.concatenate([x] * repeat, axis=1), S=0.0)
    n = x.size
    expected = a.error * math.sqrt((1 + 1 / (repeat * n)) / (1 + 1 / n) / repeat)
    assert b.error == pytest.approx(expected, rel=1e-9)


# -- reweighting ESS --------------------------------------------------------------------------------
def test_importance_ess_limits_and_stability():
    assert importance_weights_ess(np.zeros(100)) == pytest.approx(100.0)
    assert importance_weights_ess(np.array([0.0, -1e4, -1e4])) == pytest.approx(1.0)
    lw = np.random.default_rng(0).standard_normal(1000)
    w = np.exp(lw)
    direct = w.sum() ** 2 / (w**2).sum()
    assert importance_weights_ess(lw) == pytest.approx(direct, rel=1e-12)
    assert importance_weights_ess(lw + 1e5) == pytest.approx(direct, rel=1e-9)  # no overflow
    assert importance_weights_ess(torch.tensor(lw, dtype=torch.float32)) == pytest.approx(
        direct, rel=1e-5
    )
    assert importance_weights_ess(np.array([0.0, 0.0, -np.inf])) == pytest.approx(2.0)


def test_importance_ess_rejects_bad_weights():
    for bad in (
        np.array([0.0, np.nan]),
        np.array([np.inf, 0.0]),
        np.array([-np.inf]),
        np.array([]),
    ):
        with pytest.raises(AnalysisError):
            importance_weights_ess(bad)


# -- analyse_chain ----------------------------------------------------------------------------------
def _chain(primaries: dict[str, np.ndarray]) -> Chain:
    n_steps, n_chains = next(iter(primaries.values())).shape[:2]
    return Chain(primaries, np.ones((n_steps, n_chains)), n_chains, 1.0, 0.1)


def test_analyse_chain_is_json_ready():
    rng = np.random.default_rng(0)
    x = 1.0 + ar1(0.5, 2000, 4, rng)
    vec = np.stack([x, 2 * x + ar1(0.1, 2000, 4, rng)], axis=-1)
    observables = {
        "m": Observable("m", lambda phi: phi),
        "ratio": Observable("ratio", lambda phi: phi, derive=lambda a: a[1] / a[0]),
        "g": Observable("g", lambda phi: phi, derive=lambda a: np.array(a), index="t"),
    }
    out = analyse_chain(_chain({"m": x[..., None], "ratio": vec, "g": vec}), observables)
    json.loads(json.dumps(out))
    keys = {"value", "error", "tau_int", "tau_int_error", "window", "n_eff"}
    assert keys <= set(out["m"]) and isinstance(out["m"]["value"], float)
    assert isinstance(out["ratio"]["window"], int)
    assert out["g"]["index"] == "t" and len(out["g"]["value"]) == 2 and len(out["g"]["window"]) == 2
    assert out["m"]["value"] == pytest.approx(x.mean())


def test_analyse_chain_marks_errors_from_too_short_chains_unreliable():
    """Many chains, each nearly constant over its 10 steps (far shorter than its autocorrelation),
    fail the window: ``reliable`` False (and one AnalysisWarning); white noise is reliable."""
    rng = np.random.default_rng(1)
    slow = rng.standard_normal((1, 2000)) + 0.01 * rng.standard_normal((10, 2000))
    fast = rng.standard_normal((10, 2000))
    observables = {"slow": Observable("slow", lambda p: p), "fast": Observable("fast", lambda p: p)}
    with pytest.warns(AnalysisWarning, match="slow"):
        out = analyse_chain(_chain({"slow": slow[..., None], "fast": fast[..., None]}), observables)
    assert out["slow"]["reliable"] is False and out["fast"]["reliable"] is True


def test_analyse_chain_names_missing_observables():
    with pytest.raises(AnalysisError, match="not measured"):
        analyse_chain(_chain({"m": np.ones((5, 2, 1))}), {"chi": Observable("chi", lambda p: p)})
