"""Monte Carlo error analysis: the Gamma method with automatic windowing, ESS, reweighting ESS.

The Gamma method follows U. Wolff, "Monte Carlo errors with less errors", Comput. Phys. Commun.
156 (2004) 143, hep-lat/0306017, and his UWerr with replicas:

* every chain is a replica; the mean of a primary is the replica-weighted mean (all chains of a
  ``Chain`` have the same length, so it is the plain mean over steps and chains);
* a derived quantity F = f(A_1..A_k) is linearised with a finite-difference gradient
  (step = half the naive error of each primary, as in UWerr) and the autocorrelation function of
  the projected fluctuations, Gamma_F(t) = sum_r sum_i d_{i,r} d_{i+t,r} / (N - R t), is summed over
  the R replicas (computed by FFT, so 10^6 steps are cheap);
* the window W is the smallest W with g(W) = exp(-W/tau_W) - tau_W/sqrt(W N) < 0 where
  tau_W = S / log((2 tau_int(W) + 1) / (2 tau_int(W) - 1)), and tau_W -> 0 when
  tau_int(W) <= 1/2;
* Gamma_F(t) is corrected for the bias of the subtracted mean, Gamma -> Gamma + C_F(W)/N (eq. 49),
  and with R >= 2 replicas the value of F is corrected for its O(1/N) bias from the spread of the
  per-replica values F(A_r), as in UWerr;
* tau_int's error is the Madras-Sokal approximation tau_int sqrt(2 (2W + 1)/N), the error's own
  error is error sqrt((W + 1/2)/N).

Fluctuations are taken about the overall mean, as in UWerr (pyerrors subtracts each replica's
own mean), so replicas that disagree raise the error instead of hiding.

Vector-valued derived quantities are analysed component by component (each with its own
window). Everything is float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import torch

from .errors import LattgenError
from .jsonio import to_python
from .numerics import finite_difference_jacobian, kish_ess
from .observable import Observable
from .sampler import Chain

#: complex elements per FFT chunk in the autocorrelation (bounds the memory to ~256 MB)
_FFT_CHUNK_ELEMENTS = 1 << 24


class AnalysisError(LattgenError):
    """The data cannot be analysed (wrong shape, too few steps, NaN in the primaries)."""


class AnalysisWarning(UserWarning):
    """The analysis ran but a result is unreliable (windowing failed, negative Gamma sum)."""


@dataclass(frozen=True)
class GammaResult:
    """Gamma-method result: floats for a scalar quantity, 1-D arrays for a vector one.

    ``n_eff`` = N / (2 tau_int) with N = n_steps * n_chains; ``error_of_error`` = error *
    sqrt((W + 1/2)/N) (Wolff eq. 42); ``bias`` is the replica bias correction already subtracted
    from ``value`` (0 where none was applied).
    """

    value: Any
    error: Any
    tau_int: Any
    tau_int_error: Any
    window: Any
    n_eff: Any
    error_of_error: Any
    bias: Any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: floats (ints for window) or lists of them; NaN stays NaN."""
        return {name: to_python(getattr(self, name)) for name in _RESULT_FIELDS}


_RESULT_FIELDS = (
    "value",
    "error",
    "tau_int",
    "tau_int_error",
    "window",
    "n_eff",
    "error_of_error",
    "bias",
)


# -- input handling -----------------------------------------------------------------------------
def _as_data(data: Any) -> np.ndarray:
    """Float64 array of shape (n_steps, n_chains, k); 1-D is one chain and one primary,
    2-D is (n_steps, n_chains) of one primary."""
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None, None]
    elif arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise AnalysisError(
            f"data must have shape (n_steps, n_chains, k primaries), got shape {arr.shape}"
        )
    n_steps, n_chains, k = arr.shape
    if n_chains < 1 or k < 1:
        raise AnalysisError(f"data of shape {arr.shape} has no chains or no primaries")
    if n_steps < 2:
        raise AnalysisError(
            f"the Gamma method needs at least 2 steps per chain, got {n_steps} "
            f"(data shape {arr.shape}); run the sampler for more steps"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        step, chain, prim = np.argwhere(bad)[0]
        raise AnalysisError(
            f"data contains {int(bad.sum())} non-finite values (first at step {step}, chain {chain}, "
            f"primary {prim}); the chain probably diverged: check the sampler's step size"
        )
    return arr


def _primary_means(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replica means (R, k), overall means (k,) and a mask of exactly constant primaries.

    A constant primary gets its exact value as mean, so its fluctuations are exactly zero.
    """
    per_replica = data.mean(axis=0)
    overall = per_replica.mean(axis=0)
    constant = np.all(data == data[:1, :1, :], axis=(0, 1))
    overall = np.where(constant, data[0, 0, :], overall)
    per_replica = np.where(constant, data[0, 0, :], per_replica)
    return per_replica, overall, constant


# -- derived function ---------------------------------------------------------------------------
def _evaluate(derive: Callable[[np.ndarray], Any], means: np.ndarray) -> np.ndarray:
    """derive(means) as a 1-D float64 array; numpy warnings (NaN from sqrt(<0)) are silenced."""
    with np.errstate(all="ignore"):
        out = np.asarray(derive(np.array(means, dtype=np.float64)), dtype=np.float64)
    if out.ndim > 1:
        raise AnalysisError(f"derive must return a scalar or a 1-D array, got shape {out.shape}")
    return np.atleast_1d(out)


def _jacobian(derive: Callable, means: np.ndarray, steps: np.ndarray, n_out: int) -> np.ndarray:
    """d f_j / d A_alpha, shape (m, k), by central differences with steps h_alpha (0: constant)."""
    return finite_difference_jacobian(lambda x: _evaluate(derive, x), means, steps, n_out)


def _replica_bias(derive: Callable, per_replica: np.ndarray, value: np.ndarray) -> np.ndarray:
    """UWerr's replica bias: b_F = (mean_r F(A_r) - F(A)) / (R - 1), equal replica lengths; 0 where
    some replica's F is not finite (too short replicas for the expansion to mean anything)."""
    n_rep = per_replica.shape[0]
    f_rep = np.stack([_evaluate(derive, a) for a in per_replica])
    ok = np.all(np.isfinite(f_rep), axis=0) & np.isfinite(value)
    with np.errstate(all="ignore"):
        bias = (f_rep.mean(axis=0) - value) / (n_rep - 1)
    return np.where(ok, bias, 0.0)


# -- autocorrelation and windowing ----------------------------------------------------------------
def autocorrelation(deltas: np.ndarray, t_max: int) -> np.ndarray:
    """Gamma(t) for t = 0..t_max of fluctuations (n_steps, n_chains, m), summed over chains.

    Gamma(t) = sum_r sum_{i} d_{i,r} d_{i+t,r} / (N - R t), N = n_steps * R, by zero-padded FFT
    (Wiener-Khinchin); returns shape (t_max + 1, m).
    """
    n_steps, n_rep, m = deltas.shape
    nfft = scipy.fft.next_fast_len(n_steps + t_max + 1, real=True)
    chunk = max(1, _FFT_CHUNK_ELEMENTS // ((nfft // 2 + 1) * n_rep))
    gamma = np.empty((t_max + 1, m))
    for lo in range(0, m, chunk):
        spec = scipy.fft.rfft(deltas[:, :, lo : lo + chunk], n=nfft, axis=0)
        power = (spec.real**2 + spec.imag**2).sum(axis=1)
        gamma[:, lo : lo + chunk] = scipy.fft.irfft(power, n=nfft, axis=0)[: t_max + 1]
    pairs = n_steps * n_rep - n_rep * np.arange(t_max + 1)
    return gamma / pairs[:, None]


def automatic_window(gamma: np.ndarray, n_total: int, S: float) -> tuple[np.ndarray, np.ndarray]:
    """Wolff's window per column of Gamma (t_max + 1, m) with Gamma(0) > 0: (W, failed).

    W is the smallest t >= 1 with g(t) = exp(-t/tau_W) - tau_W/sqrt(t N) < 0,
    tau_W = S / log((2 tau + 1)/(2 tau - 1)), tau = 1/2 + sum_{s=1}^t rho(s); tau_W is tiny when
    tau <= 1/2. Where no t qualifies, W = t_max and ``failed`` is True. S = 0 gives W = 0.
    """
    t_max, m = gamma.shape[0] - 1, gamma.shape[1]
    if S == 0.0 or t_max == 0:
        return np.zeros(m, dtype=np.int64), np.full(m, t_max == 0 and S != 0.0)
    t = np.arange(1, t_max + 1)[:, None]
    g_int = np.cumsum(gamma[1:] / gamma[:1], axis=0)  # tau_int(t) - 1/2
    with np.errstate(all="ignore"):
        tau_w = np.where(
            g_int > 0, S / np.log1p(1.0 / np.where(g_int > 0, g_int, 1.0)), np.finfo(float).tiny
        )
        g = np.exp(-t / tau_w) - tau_w / np.sqrt(t * n_total)
    negative = g < 0
    found = negative.any(axis=0)
    window = np.where(found, negative.argmax(axis=0) + 1, t_max)
    return window.astype(np.int64), ~found


@dataclass(frozen=True)
class _Errors:
    error: np.ndarray
    tau_int: np.ndarray
    window: np.ndarray
    failed: np.ndarray
    pathological: np.ndarray
    constant: np.ndarray


def _errors_from_deltas(deltas: np.ndarray, S: float) -> _Errors:
    """Error, tau_int and window per column of projected fluctuations (n_steps, n_chains, m)."""
    n_steps, n_rep, m = deltas.shape
    n_total = n_steps * n_rep
    gamma = autocorrelation(deltas, n_steps // 2)
    zero = gamma[0] <= 0.0
    error = np.zeros(m)
    tau = np.full(m, 0.5)
    window = np.zeros(m, dtype=np.int64)
    failed = np.zeros(m, dtype=bool)
    pathological = np.zeros(m, dtype=bool)
    live = ~zero
    if live.any():
        g = gamma[:, live]
        w, fail = automatic_window(g, n_total, S)
        upto = np.arange(g.shape[0])[:, None] <= w[None, :]
        c_first = 2.0 * (g * upto).sum(axis=0) - g[0]  # Gamma(0) + 2 sum_{t=1}^W Gamma(t)
        bad = c_first <= 0
        c_first = np.where(bad, np.nan, c_first)
        g0 = g[0] + c_first / n_total  # eq. (49): Gamma(t) + C_F/N
        c_opt = c_first * (1.0 + (2 * w + 1) / n_total)
        error[live] = np.sqrt(c_opt / n_total)
        tau[live] = c_opt / (2.0 * g0)
        window[live] = w
        failed[live] = fail
        pathological[live] = bad
    return _Errors(error, tau, window, failed, pathological, zero)


def _warn(errs: _Errors, n_steps: int) -> None:
    if errs.failed.any():
        warnings.warn(
            f"Gamma method: automatic windowing failed for {int(errs.failed.sum())} component(s): no "
            f"window below n_steps/2 = {n_steps // 2}; the chains are too short for their "
            "autocorrelation, so errors and tau_int are underestimates. Run longer chains.",
            AnalysisWarning,
            stacklevel=3,
        )
    if errs.pathological.any():
        warnings.warn(
            f"Gamma method: the summed autocorrelation is <= 0 for {int(errs.pathological.sum())} "
            "component(s) (strongly anti-correlated data); their error is NaN.",
            AnalysisWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class _Linearised:
    """F at the means, the projected fluctuations d_F = grad F . (a - A) and the replica bias."""

    value: np.ndarray
    deltas: np.ndarray
    bias: np.ndarray
    scalar: bool


def _linearise(derive: Callable | None, data: np.ndarray, bias_correction: bool) -> _Linearised:
    """Means of the primaries, F(means), and the fluctuations of F to first order (UWerr)."""
    n_steps, n_rep, k = data.shape
    n_total = n_steps * n_rep
    per_replica, means, constant = _primary_means(data)
    fluct = data - means
    fluct[:, :, constant] = 0.0
    if derive is None:
        return _Linearised(means.copy(), fluct, np.zeros(k), k == 1)
    with np.errstate(all="ignore"):
        scalar = np.ndim(derive(means.copy())) == 0
    value = _evaluate(derive, means)
    # UWerr's step: half the naive error of each primary
    steps = np.where(constant, 0.0, data.reshape(n_total, k).std(axis=0) / math.sqrt(n_total) / 2.0)
    deltas = fluct @ _jacobian(derive, means, steps, value.size).T
    if bias_correction and n_rep >= 2:
        bias = _replica_bias(derive, per_replica, value)
    else:
        bias = np.zeros(value.size)
    return _Linearised(value, deltas, bias, scalar)


# -- public API -----------------------------------------------------------------------------------
def gamma_method(
    data: Any,
    derive: Callable[[np.ndarray], Any] | None = None,
    S: float = 1.5,
    bias_correction: bool = True,
) -> GammaResult:
    """Value, error and tau_int of F = derive(means) from primaries (n_steps, n_chains, k).

    ``derive`` maps the k primary means to a scalar or 1-D array (each component analysed with
    its own window); None means the means themselves (a scalar when k = 1). Every chain is a
    replica (Wolff's UWerr): fluctuations are taken about the overall mean, so disagreeing chains
    inflate the error, as they should. ``S`` sets the window (Wolff: 1 to 2; pyerrors uses 2;
    0 assumes no autocorrelation). A constant series gives error 0, tau_int 0.5, window 0.
    Fewer than 2 steps per chain or non-finite data raise ``AnalysisError``. Components where F
    is undefined (e.g. sqrt of a negative) come out NaN. ``AnalysisWarning`` flags a failed
    window (chains short compared with tau_int: W = n_steps // 2 is used and the error is an
    underestimate) and anti-correlated data whose summed Gamma is <= 0 (error NaN).
    """
    if not (isinstance(S, (int, float)) and S >= 0 and math.isfinite(S)):
        raise AnalysisError(f"S must be a finite number >= 0 (Wolff suggests 1 to 2), got {S!r}")
    arr = _as_data(data)
    n_steps, n_rep, _ = arr.shape
    n_total = n_steps * n_rep
    lin = _linearise(derive, arr, bias_correction)
    finite = np.isfinite(lin.value) & np.all(np.isfinite(lin.deltas), axis=(0, 1))
    errs = _errors_from_deltas(np.where(finite, lin.deltas, 0.0), float(S))
    _warn(errs, n_steps)
    error = np.where(finite, errs.error, np.nan)
    tau = np.where(finite, errs.tau_int, np.nan)
    window = errs.window
    with np.errstate(all="ignore"):
        tau_error = np.where(
            errs.constant, 0.0, tau * np.sqrt(2.0 * (2 * window + 1) / n_total)
        )  # Madras-Sokal
        n_eff = n_total / (2.0 * tau)
        eoe = error * np.sqrt((window + 0.5) / n_total)
    out = {
        "value": lin.value - lin.bias,
        "error": error,
        "tau_int": tau,
        "tau_int_error": tau_error,
        "window": window,
        "n_eff": n_eff,
        "error_of_error": eoe,
        "bias": lin.bias,
    }
    if lin.scalar:
        out = {key: (int(v[0]) if key == "window" else float(v[0])) for key, v in out.items()}
    return GammaResult(**out)


def projected_fluctuations(data: Any, derive: Callable[[np.ndarray], Any] | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(F(means) (m,), d_F (n_steps, n_chains, m)): a derived quantity's value before the replica
    bias correction and its linearised fluctuations d_F = grad F . (a - A) about the overall mean,
    exactly the series ``gamma_method`` analyses (exported to pyerrors by ``lattgen.export``)."""
    arr = _as_data(data)
    lin = _linearise(derive, arr, bias_correction=False)
    return np.atleast_1d(lin.value), lin.deltas


def effective_sample_size(
    data: Any, derive: Callable[[np.ndarray], Any] | None = None, S: float = 1.5
):
    """N_eff = N / (2 tau_int) of derive(means) for primaries (n_steps, n_chains, k), 1-D or 2-D."""
    return gamma_method(data, derive, S=S).n_eff


def analyse_chain(
    chain: Chain, observables: Mapping[str, Observable], S: float = 1.5
) -> dict[str, dict[str, Any]]:
    """Gamma-method analysis of every observable of a chain, JSON-ready.

    Per observable: ``value, error, tau_int, tau_int_error, window, n_eff, error_of_error`` as
    floats (scalar observables) or lists (vector observables, which also carry ``index``, the
    index name, and ``index_values`` where the observable provides them), and ``reliable``:
    False when the Gamma method warned (a failed window: chains too short for their
    autocorrelation, so error and tau_int are underestimates); a scalar observable that is not
    reliable also gets ``replica_error`` (``replica_error``: the spread over the chains).
    """
    missing = [name for name in observables if name not in chain.primaries]
    if missing:
        raise AnalysisError(
            f"observables {missing} were not measured in this chain (measured: "
            f"{sorted(chain.primaries)}); measure them with the sampler run"
        )
    results: dict[str, dict[str, Any]] = {}
    troubled: dict[str, str] = {}
    for name, obs in observables.items():
        derive = obs.derive if obs.derive is not None else _single_primary(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AnalysisWarning)
            res = gamma_method(chain.primaries[name], derive, S=S).to_dict()
        for w in caught:
            if issubclass(w.category, AnalysisWarning):
                troubled[name] = str(w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        res.pop("bias")
        res["reliable"] = name not in troubled
        if not res["reliable"] and not isinstance(res["value"], list):
            res["replica_error"] = replica_error(chain.primaries[name], derive)
        if obs.index or isinstance(res["value"], list):
            res = {key: (v if isinstance(v, list) or key == "reliable" else [v]) for key, v in res.items()}
            res["index"] = obs.index
            if obs.index_values:
                res["index_values"] = to_python(np.asarray(obs.index_values))
        if obs.chain_statistics is not None:
            for key, v in obs.chain_statistics(np.asarray(chain.primaries[name])).items():
                res[f"chain_{key}"] = float(v)
        results[name] = res
    if troubled:  # one warning per chain, naming the observables, instead of one per observable
        first = next(iter(troubled.values()))
        warnings.warn(
            f"Gamma method on {chain.n_steps} steps x {chain.n_chains} chains: trouble with "
            f"{', '.join(troubled)}: {first.split(': ', 1)[-1]}",
            AnalysisWarning,
            stacklevel=2,
        )
    return results


#: fewest chains for a between-chain error (``replica_error``)
MIN_REPLICAS = 8


def replica_error(data: np.ndarray, derive: Callable[[np.ndarray], Any]) -> float | None:
    """Jackknife error of derive(means) over the chains, each left out in turn.

    The chains are independent, so the spread of their means bounds the error whatever the
    autocorrelation within a chain: the fallback where the Gamma window failed (valid once every
    chain has thermalised; None with fewer than ``MIN_REPLICAS`` chains or a non-finite value).
    ``data``: primaries (n_steps, n_chains, k).
    """
    n = data.shape[1]
    if n < MIN_REPLICAS:
        return None
    per_chain = data.mean(axis=0)  # (n_chains, k)
    total = per_chain.sum(axis=0)
    try:
        theta = np.array([float(np.asarray(derive((total - per_chain[r]) / (n - 1))).reshape(-1)[0])
                          for r in range(n)])
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return None
    if not np.isfinite(theta).all():
        return None
    return float(np.sqrt((n - 1) / n * np.sum((theta - theta.mean()) ** 2)))


def _single_primary(name: str) -> Callable[[np.ndarray], float]:
    def first(means: np.ndarray) -> float:
        if means.shape != (1,):
            raise AnalysisError(
                f"observable {name!r} has {means.size} primaries but no derive function"
            )
        return float(means[0])

    return first


def importance_weights_ess(log_w: Any) -> float:
    """Reweighting ESS (sum w)^2 / sum w^2 from log-weights, stable in float64 (Kish).

    The weights are shifted by max(log w) before exponentiating, so the largest is 1 and nothing
    overflows; the result lies in [1, n]. Divide by n for the ESS fraction. Weights of -inf
    (zero weight) are allowed; NaN or +inf raise AnalysisError.
    """
    if isinstance(log_w, torch.Tensor):
        log_w = log_w.detach().to(torch.float64).cpu().numpy()
    lw = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if lw.size == 0:
        raise AnalysisError("importance_weights_ess needs at least one log-weight")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise AnalysisError("log-weights contain NaN or +inf: the model or the action overflowed")
    if np.isneginf(lw).all():
        raise AnalysisError("every log-weight is -inf: no sample has a positive weight")
    return float(kish_ess(torch.from_numpy(lw)))
