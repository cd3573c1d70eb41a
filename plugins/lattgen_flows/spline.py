"""Rational-quadratic spline couplings (neural spline flows, Durkan et al. arXiv 1906.04032).

The spline kernels are normflows' ``unconstrained_rational_quadratic_spline`` (linear tails
outside [-B, B]) and ``rational_quadratic_spline`` (a bounded interval). Ours:

* ``SplineCoupling``: a checkerboard coupling whose active sites go through an RQ spline on
  [-B, B] with identity tails; the conditioner gives K widths, K heights, K - 1 slopes per site.
* ``odd_rq_spline``: f(y) = sign(y) g(|y|) with g an RQ spline on [0, B], g(0) = 0, g(B) = B,
  slope 1 at B and identity beyond, so f(-y) = -f(y) bit for bit.
* ``Z2SplineCoupling``: y' = e^s f(y) + t with f the odd spline, its parameters and s even,
  t odd in the frozen field (symmetrised conditioner): exactly Z2 equivariant, and the shift
  lets neighbours pull a site, which an odd spline alone could not.
* ``PointwiseOddSpline``: one odd spline shared by every site (no conditioner): a cheap,
  lattice-size independent reshaping of the single-site distribution (phi^4's double well).

All start as the identity: zero raw parameters give uniform bins and unit slopes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from normflows.utils.splines import rational_quadratic_spline, unconstrained_rational_quadratic_spline
from torch import nn
from torch.nn import functional as F

from lattgen import ConfigError, Lattice

from .affine import bounded_log_scale
from .coupling import CheckerboardCoupling
from .lattice_layer import LatticeBijection
from .networks import make_conditioner

MIN_DERIVATIVE = 1e-3
#: raw slope giving slope 1 after normflows' softplus(raw) + MIN_DERIVATIVE: zero init = identity
SLOPE_ONE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def check_spline_params(bins: int, tail_bound: float) -> None:
    """Raise ConfigError for spline settings normflows cannot use."""
    if bins < 2:
        raise ConfigError(f"spline bins must be >= 2, got {bins}")
    if not tail_bound > 0:
        raise ConfigError(f"spline tail_bound must be > 0, got {tail_bound}")


def rq_spline(y, widths, heights, slopes, inverse: bool, tail_bound: float):
    """Monotone RQ spline on [-B, B] with identity tails (normflows); slopes are the K - 1 interior ones."""
    return unconstrained_rational_quadratic_spline(
        y, widths, heights, slopes + SLOPE_ONE, inverse=inverse, tails="linear", tail_bound=tail_bound,
        min_derivative=MIN_DERIVATIVE,
    )


def odd_rq_spline(y, widths, heights, slopes, inverse: bool, tail_bound: float):
    """f(y) = sign(y) g(|y|): g an RQ spline on [0, B] (K widths, heights, slopes at knots 0..K-1).

    The slope at B is 1 and g is the identity beyond B, so f is C^1, odd and monotone everywhere.
    Returns (f(y) or f^-1(y), log|df/dy| or log|df^-1/dy|), elementwise.
    """
    a = y.abs()
    inside = a < tail_bound
    raw = F.pad(slopes + SLOPE_ONE, (0, 1), value=SLOPE_ONE)
    g, log_jac = rational_quadratic_spline(
        a.clamp(max=tail_bound), widths, heights, raw, inverse=inverse,
        left=0.0, right=tail_bound, bottom=0.0, top=tail_bound, min_derivative=MIN_DERIVATIVE,
    )
    g = torch.where(inside, g, a)
    log_jac = torch.where(inside, log_jac, torch.zeros_like(log_jac))
    return torch.where(y < 0, -g, g), log_jac


def split_spline_params(params: torch.Tensor, bins: int, n_slopes: int):
    """(batch, C, *L) conditioner output -> widths, heights, slopes (batch, *L, n) and the rest."""
    p = params.movedim(1, -1)
    k = bins
    return p[..., :k], p[..., k:2 * k], p[..., 2 * k:2 * k + n_slopes], p[..., 2 * k + n_slopes:]


class SplineCoupling(CheckerboardCoupling):
    """Checkerboard RQ-spline coupling with identity tails outside [-tail_bound, tail_bound]."""

    def __init__(self, lattice: Lattice, parity: int, conditioner: nn.Module, bins: int, tail_bound: float,
                 sites: str = "all"):
        super().__init__(lattice, parity, conditioner, sites)
        self.bins = bins
        self.tail_bound = float(tail_bound)

    @staticmethod
    def n_channels(bins: int) -> int:
        return 3 * bins - 1

    def transform(self, y, params, inverse):
        w, h, d, _ = split_spline_params(params, self.bins, self.bins - 1)
        return rq_spline(y, w, h, d, inverse, self.tail_bound)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bins={self.bins}, tail_bound={self.tail_bound}"


class Z2SplineCoupling(SplineCoupling):
    """y' = e^s2 f(e^s1 y + t1) + t2: f an odd RQ spline; its parameters and s1, s2 even, t1, t2 odd.

    The inner affine map moves and zooms the active site onto the spline's centre (f's shape is
    symmetric about 0, so without it the conditional could not be skewed about its mean); the
    outer one places the result. Exactly Z2 equivariant, inverse in closed form.
    """

    z2_equivariant = True

    @staticmethod
    def n_channels(bins: int) -> int:
        return 3 * bins + 4

    @staticmethod
    def odd_channels(bins: int) -> list[bool]:
        """Parity of every conditioner channel: spline parameters, s1, s2 even; t1, t2 odd."""
        return [False] * (3 * bins + 2) + [True, True]

    def transform(self, y, params, inverse):
        w, h, d, rest = split_spline_params(params, self.bins, self.bins)
        s1, s2 = bounded_log_scale(rest[..., 0]), bounded_log_scale(rest[..., 1])
        t1, t2 = rest[..., 2], rest[..., 3]
        if inverse:
            u = (y - t2) * torch.exp(-s2)
            v, log_jac = odd_rq_spline(u, w, h, d, True, self.tail_bound)
            return (v - t1) * torch.exp(-s1), log_jac - s1 - s2
        u, log_jac = odd_rq_spline(y * torch.exp(s1) + t1, w, h, d, False, self.tail_bound)
        return u * torch.exp(s2) + t2, log_jac + s1 + s2


def make_spline_coupling(
    lattice: Lattice,
    parity: int = 0,
    hidden: Sequence[int] = (16, 16),
    kernel_size: int = 3,
    activation: str = "tanh",
    network: str = "conv",
    bins: int = 8,
    tail_bound: float = 4.0,
    z2: bool = False,
    sites: str = "all",
    context=None,
) -> SplineCoupling:
    """RQ-spline coupling on ``lattice``; ``z2=True`` gives the odd-spline equivariant version."""
    check_spline_params(bins, tail_bound)
    cls = Z2SplineCoupling if z2 else SplineCoupling
    odd = Z2SplineCoupling.odd_channels(bins) if z2 else None
    net = make_conditioner(network, lattice.shape, cls.n_channels(bins), hidden, kernel_size, activation, odd,
                           context)
    return cls(lattice, parity, net, bins, tail_bound, sites)


class PointwiseOddSpline(LatticeBijection):
    """phi_x = f(z_x) at every site with one learnable odd RQ spline f (identity beyond tail_bound)."""

    z2_equivariant = True

    def __init__(self, lattice: Lattice, bins: int = 8, tail_bound: float = 4.0):
        super().__init__(lattice)
        check_spline_params(bins, tail_bound)
        self.bins = bins
        self.tail_bound = float(tail_bound)
        self.widths = nn.Parameter(torch.zeros(bins))
        self.heights = nn.Parameter(torch.zeros(bins))
        self.slopes = nn.Parameter(torch.zeros(bins))

    def _map(self, x, inverse):
        self.check_input(x)
        shape = (*x.shape, self.bins)
        w, h, d = (p.to(x.dtype).expand(shape) for p in (self.widths, self.heights, self.slopes))
        y, log_jac = odd_rq_spline(x, w, h, d, inverse, self.tail_bound)
        return y, self.site_sum(log_jac)

    def forward_and_log_det(self, z):
        return self._map(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._map(phi, inverse=True)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, tail_bound={self.tail_bound}"
