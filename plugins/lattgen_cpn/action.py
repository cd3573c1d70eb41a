"""The CP^{N-1} lattice action in its quartic (projector) form.

    S(z) = -beta N sum_{x, mu} |z_x^dagger z_{x+mu}|^2 = -beta N sum_{x, mu} tr P_x P_{x+mu},

z_x complex unit N-vectors (``UnitVectors``), invariant under global U(N) z -> U z and local
U(1) z_x -> e^{i a_x} z_x (Campostrini, Rossi, Vicari, Phys. Rev. D 46 (1992) 2647;
docs/physics.md#cpn). For N = 2 it is the O(3) model at beta_O3 = beta up to a constant
(|z^dagger w|^2 = (1 + n.m)/2 with n = z^dagger sigma z), checked in the tests.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lattgen import Action, ConfigError, Lattice, UnitVectors

from .geometry import link_overlaps, neighbour_apply, neighbour_projector_sum, overlap


class CPNAction(Action):
    """S = -beta N sum_{x,mu} |z_x^dagger z_{x+mu}|^2 with its analytic force and local terms."""

    def __init__(self, lattice: Lattice, N: int, beta: float):
        if int(N) < 2:
            raise ConfigError(f"action.N: CP^(N-1) needs N >= 2 components, got {N}")
        if not math.isfinite(float(beta)):
            raise ConfigError(f"action.beta: must be a finite number, got {beta}")
        self.N = int(N)
        self.beta = float(beta)
        super().__init__(lattice)

    def make_field_space(self, lattice: Lattice) -> UnitVectors:
        return UnitVectors(lattice, self.N)

    @property
    def coupling(self) -> float:
        """beta N, the prefactor of every link term."""
        return self.beta * self.N

    def action(self, z: torch.Tensor) -> torch.Tensor:
        """S(z), shape (batch,), real, in z's real dtype."""
        t = link_overlaps(z, self.lattice.ndim)
        return -self.coupling * t.sum(dim=tuple(range(1, t.dim())))

    def action_float64(self, z: torch.Tensor) -> torch.Tensor:
        return self.action(z.to(torch.complex128))

    def force(self, z: torch.Tensor) -> torch.Tensor:
        """dS/dRe z + i dS/dIm z = -2 beta N M_x z_x, M_x = sum_{+-mu} P_{x+-mu} (shape of z)."""
        return neighbour_apply(z, self.lattice.ndim).mul_(-2.0 * self.coupling)

    def local_field(self, z: torch.Tensor) -> torch.Tensor:
        """A_x = beta N M_x: the terms of S containing z_x are -z_x^dagger A_x z_x, (batch, *lattice, N, N)."""
        return neighbour_projector_sum(z, self.lattice.ndim).mul_(self.coupling)

    def local_action(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-beta N z_x^dagger M_x z_x at the sites of ``mask`` (0 elsewhere), shape (batch, *lattice)."""
        s = -self.coupling * overlap(z, neighbour_apply(z, self.lattice.ndim)).real
        return s * mask.to(s.dtype)

    @property
    def params(self) -> dict[str, Any]:
        return {"N": self.N, "beta": self.beta}

    def __repr__(self) -> str:
        return f"CPNAction({self.lattice!r}, N={self.N}, beta={self.beta!r})"
