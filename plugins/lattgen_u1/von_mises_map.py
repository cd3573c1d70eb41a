"""The circle map that takes a uniform angle to a von Mises(0, kappa) one: h = F^{-1} o F_uniform.

With 2 pi F(theta) - pi = G(theta) = theta + 2 sum_{n>=1} (I_n(kappa) / I_0(kappa)) sin(n theta) / n
(the Fourier series of the von Mises CDF; Mardia & Jupp, "Directional Statistics", sec. 3.5.4),
h = G^{-1} maps [-pi, pi] onto itself with h(+-pi) = +-pi, and h'(x) = 1 / g(h(x)) with
g(theta) = G'(theta) = exp(kappa cos theta) / I_0(kappa), the density ratio.

Differentiable in kappa too: the ratios I_n / I_{n-1} come from their backward continued fraction
r_n = 1 / (2n / kappa + r_{n+1}) (started far enough out to be exact to rounding), so kappa
can be trained. The series is cut at ``n_terms(kappa_max)`` terms (where I_n / I_0 < 1e-18 for
the largest kappa the caller allows). G^{-1} starts from a table of G for the bracket, then
takes safeguarded Newton steps (bisection when a step leaves the bracket), a fixed number, so
nothing waits for the host. ``log g`` is the closed form kappa (cos theta - 1) - log i0e(kappa);
the cut series' derivative equals it to float64 rounding. Everything runs in float64.
"""

from __future__ import annotations

import math

import torch
from scipy.special import ive

#: the largest concentration the map is built for (its series then has ~130 terms)
KAPPA_MAX = 200.0
#: series terms with I_n / I_0 below this are dropped
SERIES_CUT = 1e-18
#: extra continued-fraction levels beyond the last kept term
FRACTION_TAIL = 40
#: G on this many cells starts Newton within ~1e-5; three steps then reach rounding (kappa <= 200)
TABLE_SIZE = 2048
NEWTON_STEPS = 3


def n_terms(kappa_max: float) -> int:
    """Terms N of the series so that I_n(kappa) / I_0(kappa) < SERIES_CUT for n > N, kappa <= kappa_max."""
    if not (math.isfinite(kappa_max) and 0 < kappa_max <= KAPPA_MAX):
        raise ValueError(f"kappa must be a finite number in (0, {KAPPA_MAX:g}], got {kappa_max}")
    n = 1
    while ive(n, kappa_max) / ive(0, kappa_max) >= SERIES_CUT:
        n += 1
    return n


def bessel_ratios(kappa: torch.Tensor, terms: int) -> torch.Tensor:
    """I_n(kappa) / I_0(kappa) for n = 1..terms (float64, differentiable in kappa)."""
    r = torch.zeros_like(kappa)
    ratios = []
    for n in range(terms + FRACTION_TAIL, 0, -1):
        r = 1.0 / (2.0 * n / kappa + r)  # r = I_n / I_{n-1}
        if n <= terms:
            ratios.append(r)
    return torch.cumprod(torch.stack(ratios[::-1]), dim=0)


class VonMisesMap:
    """h, h^{-1} = G and log g on the circle for one kappa (a 0-dim float64 tensor); any shape."""

    def __init__(self, kappa: torch.Tensor, terms: int):
        self.kappa = kappa
        self.orders = torch.arange(1, terms + 1, dtype=torch.float64, device=kappa.device)
        self.coef = 2.0 * bessel_ratios(kappa, terms) / self.orders
        self.log_i0e = torch.log(torch.special.i0e(kappa))

    def _table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(theta grid, G on it): the starting brackets of ``forward`` (only it needs them)."""
        with torch.no_grad():
            grid = torch.linspace(-math.pi, math.pi, TABLE_SIZE + 1, dtype=torch.float64, device=self.kappa.device)
            table = self._series(grid, self.coef.detach())
            table[0], table[-1] = -math.pi, math.pi
        return grid, table

    def _series(self, theta: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return theta + torch.sin(theta[..., None] * self.orders) @ coef

    def inverse(self, theta: torch.Tensor) -> torch.Tensor:
        """h^{-1}(theta) = G(theta), theta in [-pi, pi]."""
        return self._series(theta, self.coef)

    def log_g(self, theta: torch.Tensor) -> torch.Tensor:
        """log G'(theta) = kappa (cos theta - 1) - log i0e(kappa); -log h'(x) at theta = h(x)."""
        return self.kappa * (torch.cos(theta) - 1.0) - self.log_i0e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h(x) = G^{-1}(x), x in [-pi, pi]; differentiable in x and kappa (implicit function theorem)."""
        grid, table = self._table()
        with torch.no_grad():
            xd = x.detach().contiguous()
            coef, kappa, log_i0e = self.coef.detach(), self.kappa.detach(), self.log_i0e.detach()
            k = (torch.searchsorted(table, xd) - 1).clamp(0, TABLE_SIZE - 1)
            lo, hi = grid[k], grid[k + 1]
            t_lo, t_hi = table[k], table[k + 1]
            theta = lo + (hi - lo) * ((xd - t_lo) / (t_hi - t_lo).clamp(min=1e-300)).clamp(0.0, 1.0)
            for _ in range(NEWTON_STEPS):
                r = self._series(theta, coef) - xd
                lo = torch.where(r < 0, theta, lo)
                hi = torch.where(r > 0, theta, hi)
                step = theta - r * torch.exp(log_i0e - kappa * (torch.cos(theta) - 1.0))
                inside = (step > lo) & (step < hi)
                theta = torch.where(r == 0, theta, torch.where(inside, step, 0.5 * (lo + hi)))
        if not (x.requires_grad or self.coef.requires_grad):
            return theta
        # one Newton step with gradients attached: dh = (dx - dG|_theta) / g(theta)
        return theta - (self.inverse(theta) - x) * torch.exp(-self.log_g(theta)).detach()
