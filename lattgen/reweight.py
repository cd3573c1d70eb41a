"""Importance sampling (reweighting) of i.i.d. model samples to the target exp(-S)/Z.

With phi_i ~ q i.i.d. and weights w_i = exp(-S(phi_i)) / q(phi_i), the self-normalised
(ratio) estimator of a mean is

    <A>_p  ~=  A_hat = sum_i w_i A_i / sum_i w_i .

Its variance to first order in 1/n (delta method for a ratio of means; e.g. Owen, *Monte Carlo
theory, methods and examples*, ch. 9, eq. 9.8) is

    Var(A_hat) ~= sum_i w_i^2 (A_i - A_hat)^2 / (sum_i w_i)^2 ,

and a derived quantity F(<A_1>, ..., <A_k>) (chi, xi, a Binder cumulant) gets its error by
linearising F, with the same finite-difference Jacobian the Gamma method uses. The Kish
effective sample size ESS = (sum w)^2 / sum w^2 (between 1 and n; n for a perfect model) says
how many unweighted samples the weighted set is worth.

Everything is computed from log-weights log w = -S - log q in float64, shifted by their maximum
before exponentiating (the largest weight becomes 1, nothing overflows; the shift cancels in
every ratio). A weight of -inf (zero) is allowed; NaN or +inf log-weights are a broken model or
action and raise ``ReweightError``.

For a model whose density is only estimated (``exact_density = False``, the VAE) the same
formulas hold with w = exp(-S)/q_hat for the q_hat that ``model.sample`` returns with phi,
because E[f(phi) exp(-S)/q_hat] = int f exp(-S) q E[1/q_hat | phi] dphi, which is the exact
integral when 1/q_hat is unbiased for 1/q given phi (the condition of the pseudo-marginal IMH
sampler, see lattgen_imh.imh).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .action import Action
from .errors import LattgenError
from .model import GenerativeModel
from .numerics import finite_difference_jacobian, kish_ess
from .observable import Observable


class ReweightError(LattgenError):
    """Log-weights that cannot be used (NaN, +inf, all -inf, or shapes that do not match)."""


@dataclass(frozen=True)
class ReweightResult:
    """Reweighted estimate: floats for a scalar quantity, 1-D arrays for a vector one.

    ``ess`` is the Kish effective sample size (sum w)^2 / sum w^2 and ``n`` the number of samples.
    """

    value: Any
    error: Any
    ess: float
    n: int

    @property
    def ess_fraction(self) -> float:
        return self.ess / self.n

    def to_dict(self) -> dict[str, Any]:
        def conv(x):
            return x.tolist() if isinstance(x, np.ndarray) else x

        return {"value": conv(self.value), "error": conv(self.error), "ess": self.ess,
                "ess_fraction": self.ess_fraction, "n": self.n}


# -- weights ------------------------------------------------------------------------------------
def as_log_weights(log_w: Any) -> torch.Tensor:
    """Check log-weights and return them as a flat float64 tensor (same device for tensors)."""
    lw = torch.as_tensor(log_w).detach().to(torch.float64).reshape(-1)
    if lw.numel() == 0:
        raise ReweightError("reweighting needs at least one log-weight")
    if bool(torch.isnan(lw).any()) or bool(torch.isposinf(lw).any()):
        raise ReweightError("log-weights contain NaN or +inf: the model or the action overflowed "
                            "(check log q and S of the samples)")
    if bool(torch.isneginf(lw).all()):
        raise ReweightError("every log-weight is -inf: no sample has a positive weight")
    return lw


def normalised_weights(log_w: Any) -> torch.Tensor:
    """w_i / sum_j w_j in float64, computed stably (softmax of the log-weights)."""
    return torch.softmax(as_log_weights(log_w), dim=0)


def ess(log_w: Any) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of checked log-weights, in [1, n]."""
    return float(kish_ess(as_log_weights(log_w)))


def expected_imh_acceptance(log_w: torch.Tensor) -> torch.Tensor:
    """Stationary acceptance rate of independence Metropolis-Hastings, estimated from i.i.d. weights.

    At stationarity the current state x ~ p and the proposal x' ~ q, and the move is accepted
    with min(1, w(x')/w(x)); with p = q w / E_q[w] this averages to
    E_{x,x' ~ q}[min(w(x), w(x'))] / E_q[w]. The U-statistic over the n(n-1) ordered pairs of
    a sample is, with the weights sorted ascending w_(0) <= ... <= w_(n-1),

        a = 2 sum_k (n - 1 - k) w_(k) / ((n - 1) sum_k w_(k)),

    (w_(k) is the smaller weight of the pairs it forms with the n-1-k larger ones). This is the
    expectation of the acceptance of an IMH chain run through the same proposals, without that
    chain's randomness, burn-in from a q-distributed start, or a sequential loop; 1 for a
    perfect model. Returns a 0-d float64 tensor on log_w's device (NaN if n < 2).
    """
    lw = log_w.to(torch.float64).reshape(-1)
    n = lw.numel()
    if n < 2:
        return torch.full((), float("nan"), dtype=torch.float64, device=lw.device)
    w = torch.exp(lw - lw.max()).sort().values
    rank = torch.arange(n - 1, -1, -1, dtype=torch.float64, device=lw.device)  # n-1-k
    return 2.0 * (rank * w).sum() / ((n - 1) * w.sum())


# -- estimators ---------------------------------------------------------------------------------
def _as_primaries(values: Any, n: int) -> np.ndarray:
    arr = values.detach().to(torch.float64).cpu().numpy() if isinstance(values, torch.Tensor) \
        else np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ReweightError(f"primaries must have shape (n,) or (n, k) with n = {n} samples, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ReweightError("primaries contain NaN or inf")
    return arr


def _derived(derive: Callable[[np.ndarray], Any] | None, means: np.ndarray) -> np.ndarray:
    if derive is None:
        return means
    with np.errstate(all="ignore"):
        return np.atleast_1d(np.asarray(derive(means.copy()), dtype=np.float64))


def _jacobian(derive, means: np.ndarray, steps: np.ndarray, n_out: int) -> np.ndarray:
    """dF_j/dA_a by central differences with steps h_a (0: the primary is constant)."""
    return finite_difference_jacobian(lambda x: _derived(derive, x), means, steps, n_out)

def reweight(log_w: Any, primaries: Any, derive: Callable[[np.ndarray], Any] | None = None) -> ReweightResult:
    """Self-normalised importance-sampling estimate of F(<A>) with its delta-method error.

    ``log_w`` (n,) are the log-weights of i.i.d. samples, ``primaries`` (n,) or (n, k) the
    per-sample quantities A_i, ``derive`` maps the k reweighted means to F (None: the means
    themselves; a scalar when k = 1). See the module docstring for the formulas.
    """
    lw = as_log_weights(log_w)
    wbar = torch.softmax(lw, 0).cpu().numpy()
    a = _as_primaries(primaries, lw.numel())
    means = wbar @ a
    # influence of sample i on the ratio estimate: wbar_i (A_i - A_hat); Var = sum_i influence_i^2
    infl = wbar[:, None] * (a - means)
    value = _derived(derive, means)
    if derive is None:
        proj = infl
    else:
        sd = np.sqrt(np.square(infl).sum(0))
        proj = infl @ _jacobian(derive, means, sd / 2.0, value.size).T
    error = np.sqrt(np.square(proj).sum(0))
    n_ess = float(1.0 / np.square(wbar).sum())
    scalar = a.shape[1] == 1 if derive is None else np.ndim(derive(means.copy())) == 0
    if scalar:
        return ReweightResult(float(value[0]), float(error[0]), n_ess, int(lw.numel()))
    return ReweightResult(value, error, n_ess, int(lw.numel()))


def reweight_observables(
    log_w: Any, primaries: Mapping[str, Any], observables: Mapping[str, Observable]
) -> dict[str, ReweightResult]:
    """``reweight`` every observable from its primaries (name -> (n, k)) and log-weights."""
    return {name: reweight(log_w, primaries[name], obs.derive) for name, obs in observables.items()}


@torch.no_grad()
def draw_weighted(
    model: GenerativeModel,
    action: Action,
    n: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    measure: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n i.i.d. model samples: their float64 log-weights (n,) and ``measure(phi)`` per sample.

    Samples are drawn in batches of ``batch_size`` without gradients; S is evaluated on the
    float64 field, so log w = -S(phi) - log q(phi) carries no float32 rounding from S.
    Measurements stay on the device until the end (one copy per quantity).
    """
    if n < 1:
        raise ReweightError(f"need n >= 1 samples to reweight, got {n}")
    log_ws: list[torch.Tensor] = []
    records: dict[str, list[torch.Tensor]] = {}
    done = 0
    while done < n:
        m = min(batch_size, n - done)
        phi, log_q = model.sample(m, generator)
        phi64 = phi.to(action.field_space.dtype(torch.float64))  # complex128 for complex fields
        log_ws.append(-action(phi64) - log_q.to(torch.float64))
        if measure is not None:
            for name, value in measure(phi64).items():
                records.setdefault(name, []).append(value.to(torch.float64).reshape(m, -1))
        done += m
    return torch.cat(log_ws), {k: torch.cat(v) for k, v in records.items()}


def reweight_model(
    model: GenerativeModel,
    action: Action,
    observables: Mapping[str, Observable],
    n: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> dict[str, ReweightResult]:
    """Reweighted estimates of ``observables`` from n fresh i.i.d. samples of ``model``."""
    from .observable import measure_all

    log_w, prim = draw_weighted(model, action, n, generator=generator, batch_size=batch_size,
                                measure=measure_all(observables))
    return reweight_observables(log_w, prim, observables)


def log_weight_summary(log_w: torch.Tensor) -> dict[str, float]:
    """ESS/N, expected IMH acceptance, mean and variance of the finite log w (one host copy).

    Non-finite log-weights make ESS and acceptance NaN (reported, not hidden); the mean and
    variance are over the finite ones (NaN with fewer than 2), and ``finite_fraction`` says how
    many there were.
    """
    lw = log_w.detach().to(torch.float64).reshape(-1)
    finite = torch.isfinite(lw)
    count = finite.sum()
    mean = torch.where(finite, lw, 0.0).sum() / count.clamp(min=1)
    var = torch.where(finite, (lw - mean) ** 2, 0.0).sum() / (count - 1).clamp(min=1)
    var = torch.where(count >= 2, var, torch.nan)
    stats = torch.stack([
        kish_ess(lw) / lw.numel(),
        expected_imh_acceptance(lw),
        torch.where(count >= 1, mean, torch.nan),
        var,
        count.to(torch.float64) / lw.numel(),
    ]).cpu().tolist()
    return {"ess": stats[0], "acceptance": stats[1], "log_w_mean": stats[2], "log_w_var": stats[3],
            "finite_fraction": stats[4]}
