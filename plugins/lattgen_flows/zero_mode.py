"""An odd spline of the zero mode: a bimodal magnetisation for the broken phase, exactly.

In the broken phase of a Z2-symmetric theory the distribution of m = (1/V) sum_x phi_x has two
peaks at +-m*, which a Gaussian prior pushed through local couplings reaches only slowly. This
layer acts on the zero mode of its input alone: with u = sqrt(V0) zbar, zbar = (1/V) sum_x z_x
(V0 the volume the layer was built for: u is a standard normal under the prior there) and f an
odd monotone RQ spline,

    z'_x = z_x + (f(u) - u) / sqrt(V0),    log|det dz'/dz| = log f'(u),

since u is sqrt(V0/V) times the coordinate along the unit vector 1/sqrt(V), and the orthogonal
complement is left alone. V0 is a persistent buffer, so on a periodically extended lattice (a
model trained at L run at 2L) the map commutes with the tiling. f odd keeps the flow exactly Z2 equivariant. With a ``CouplingContext`` f's parameters
are a small net of the couplings (zero at start: f = identity), so the two peaks can open as
the couplings cross into the broken phase.
"""

from __future__ import annotations

import torch
from torch import nn

from lattgen import Lattice

from .lattice_layer import LatticeBijection
from .spline import check_spline_params, odd_rq_spline


class ZeroModeSpline(LatticeBijection):
    """z' = z + (f(u) - u)/sqrt(V0) with u = sqrt(V0) mean_x z_x, f an odd RQ spline on [-B, B]."""

    z2_equivariant = True  # and tiling-equivariant: u and the shift per site see V0, not V

    def __init__(self, lattice: Lattice, context=None, bins: int = 8, tail_bound: float = 4.0, hidden: int = 16):
        super().__init__(lattice)
        check_spline_params(bins, tail_bound)
        self.bins = bins
        self.tail_bound = float(tail_bound)
        self.context = context
        self.register_buffer("reference_volume", torch.tensor(float(lattice.volume), dtype=torch.float64))
        if context is None:
            self.raw = nn.Parameter(torch.zeros(3 * bins))
        else:
            self.net = nn.Sequential(nn.Linear(context.k, hidden), nn.Tanh(), nn.Linear(hidden, 3 * bins))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3K) raw spline parameters for the fields x."""
        if self.context is None:
            return self.raw.to(x.dtype).expand(x.shape[0], -1)
        c = self.context.rows(x.shape[0], x)
        w = self.net[0].weight
        return self.net(c.to(device=w.device, dtype=w.dtype)).to(x.dtype)

    def _map(self, x: torch.Tensor, inverse: bool):
        self.check_input(x)
        root_v = torch.sqrt(self.reference_volume).to(x.dtype)
        u = x.flatten(1).mean(1) * root_v
        p = self._params(x)
        k = self.bins
        v, log_jac = odd_rq_spline(u, p[:, :k], p[:, k:2 * k], p[:, 2 * k:], inverse, self.tail_bound)
        shift = ((v - u) / root_v).view(-1, *([1] * (x.dim() - 1)))
        return x + shift, log_jac

    def forward_and_log_det(self, z):
        return self._map(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._map(phi, inverse=True)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, tail_bound={self.tail_bound}, conditional={self.context is not None}"
