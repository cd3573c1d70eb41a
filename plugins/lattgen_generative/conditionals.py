"""One-site conditional transforms of the autoregressive flow: phi_i = T(z_i; theta_i).

Given the context (the sites before i), the network emits parameters theta_i and the site is a
monotone 1-D map of a standard normal z_i, so the conditional density is

    q(phi_i | phi_<i) = N(z_i; 0, 1) / |dT/dz_i|,   z_i = T^{-1}(phi_i; theta_i),

exact, normalised for every theta, and reparameterisable (phi is a differentiable function of z
and the weights), which reverse-KL training needs.

* ``AffineConditional``: T(z) = mu + sigma z (a Gaussian autoregressive model).
* ``SplineConditional``: T(z) = mu + sigma h(z) with h a monotone rational-quadratic spline on
  [-B, B] with identity tails (neural spline flows, Durkan et al., arXiv 1906.04032; kernel from
  normflows), K bins: K widths, K heights, K - 1 interior slopes.

Z2 symmetry. Both implement ``symmetrise(a, a_neg)``: given the raw network outputs for the
context c and for -c, it returns parameters with theta(-c) = R theta(c), where R negates mu,
keeps sigma and reverses the spline's bins (widths, heights and slopes read backwards), so that

    T(-z; theta(-c)) = -T(z; theta(c)).

Then q(-phi) = q(phi) exactly (group averaging, as for the symmetrised coupling nets,
``Z2Symmetrised``): mu = (a_mu - a'_mu)/2 is odd, log sigma = (a_s + a'_s)/2 even, and the spline raws
are (a + reverse(a'))/2, so reversing c reverses the bins.
"""

from __future__ import annotations

import math

import torch
from normflows.utils.splines import unconstrained_rational_quadratic_spline

from lattgen import ConfigError

#: |log sigma| is softly bounded by this (sigma in [e^-6, e^6]): keeps a young net finite
LOG_SCALE_BOUND = 6.0
#: normflows' defaults for the spline's smallest bin width, height and slope
MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
#: raw slope that normflows maps to slope 1 (softplus(raw) + MIN_DERIVATIVE = 1): zero init = identity
SLOPE_ONE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def bounded_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """log sigma = b tanh(raw / b): equal to raw near 0, never beyond +-b (b = LOG_SCALE_BOUND)."""
    return LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)


class AffineConditional:
    """T(z; mu, log sigma) = mu + sigma z; raw parameters (..., 2) = (mu, raw log sigma)."""

    n_params = 2

    def forward(self, z: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi, log|dT/dz|) for z of shape (...) and theta (..., 2)."""
        log_sigma = bounded_log_scale(theta[..., 1])
        return theta[..., 0] + torch.exp(log_sigma) * z, log_sigma

    def inverse(self, phi: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log|dT^{-1}/dphi|)."""
        log_sigma = bounded_log_scale(theta[..., 1])
        return (phi - theta[..., 0]) * torch.exp(-log_sigma), -log_sigma

    def symmetrise(self, a: torch.Tensor, a_neg: torch.Tensor) -> torch.Tensor:
        """Odd mu, even log sigma from the raws at context c (a) and -c (a_neg)."""
        return torch.stack([(a[..., 0] - a_neg[..., 0]) / 2, (a[..., 1] + a_neg[..., 1]) / 2], -1)


class SplineConditional(AffineConditional):
    """T(z) = mu + sigma h(z), h an RQ spline with n_bins bins on [-B, B], identity outside.

    Raw parameters (..., 2 + 3K - 1): mu, raw log sigma, K width logits, K height logits, K - 1
    raw interior slopes (offset so that zeros give slope 1: a zero-initialised net is T(z) = z).
    """

    def __init__(self, n_bins: int, tail_bound: float):
        if n_bins < 2:
            raise ConfigError(f"model.n_bins: need at least 2 spline bins, got {n_bins}")
        if not tail_bound > 0:
            raise ConfigError(f"model.tail_bound: must be > 0, got {tail_bound}")
        self.n_bins = int(n_bins)
        self.tail_bound = float(tail_bound)
        self.n_params = 2 + 3 * self.n_bins - 1

    def _split(self, theta: torch.Tensor):
        k = self.n_bins
        widths = theta[..., 2 : 2 + k]
        heights = theta[..., 2 + k : 2 + 2 * k]
        slopes = theta[..., 2 + 2 * k :] + SLOPE_ONE
        return theta[..., 0], bounded_log_scale(theta[..., 1]), widths, heights, slopes

    def _spline(self, x, widths, heights, slopes, inverse: bool):
        shape = x.shape
        y, log_det = unconstrained_rational_quadratic_spline(
            x.reshape(-1),
            widths.reshape(-1, self.n_bins),
            heights.reshape(-1, self.n_bins),
            slopes.reshape(-1, self.n_bins - 1),
            inverse=inverse,
            tails="linear",
            tail_bound=self.tail_bound,
            min_bin_width=MIN_BIN,
            min_bin_height=MIN_BIN,
            min_derivative=MIN_DERIVATIVE,
        )
        return y.reshape(shape), log_det.reshape(shape)

    def forward(self, z, theta):
        mu, log_sigma, w, h, s = self._split(theta)
        y, log_det = self._spline(z, w, h, s, inverse=False)
        return mu + torch.exp(log_sigma) * y, log_det + log_sigma

    def inverse(self, phi, theta):
        mu, log_sigma, w, h, s = self._split(theta)
        z, log_det = self._spline((phi - mu) * torch.exp(-log_sigma), w, h, s, inverse=True)
        return z, log_det - log_sigma

    def symmetrise(self, a, a_neg):
        k = self.n_bins
        head = super().symmetrise(a[..., :2], a_neg[..., :2])
        blocks = [head]
        for lo, hi in ((2, 2 + k), (2 + k, 2 + 2 * k), (2 + 2 * k, self.n_params)):
            blocks.append((a[..., lo:hi] + a_neg[..., lo:hi].flip(-1)) / 2)
        return torch.cat(blocks, -1)


def make_conditional(transform: str, n_bins: int, tail_bound: float):
    """The conditional transform called ``transform`` ("affine" or "spline")."""
    if transform == "affine":
        return AffineConditional()
    if transform == "spline":
        return SplineConditional(n_bins, tail_bound)
    raise ConfigError(f"model.transform: {transform!r} is not valid; choose one of: affine, spline")
