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

    form = "quartic"

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
        return {"N": self.N, "beta": self.beta, "form": self.form}

    def __repr__(self) -> str:
        return f"CPNAction({self.lattice!r}, N={self.N}, beta={self.beta!r})"


def log_i0(a: torch.Tensor) -> torch.Tensor:
    """log I_0(a) for a >= 0, overflow-free (torch.special.i0e(a) = e^{-a} I_0(a))."""
    return torch.log(torch.special.i0e(a)) + a


def i1_over_i0_over_a(a: torch.Tensor) -> torch.Tensor:
    """I_1(a) / (a I_0(a)), finite at a = 0 (limit 1/2; series 1/2 - a^2/16 below 1e-4)."""
    small = a < 1e-4
    safe = torch.where(small, torch.ones_like(a), a)
    ratio = torch.special.i1e(safe) / (torch.special.i0e(safe) * safe)
    return torch.where(small, 0.5 - a * a / 16.0, ratio)


class CPNLinkAction(CPNAction):
    """The auxiliary-U(1)-link form with the links integrated out exactly (``form = "link"``).

    S(z, lambda) = -2 beta N sum_{x,mu} Re(lambda_mu(x) z_x^dagger z_{x+mu}) with Haar links: since
    int dlambda/(2 pi) e^{2 K Re(lambda w)} = I_0(2 K |w|) (K = beta N), the z-marginal is

        S(z) = -sum_{x,mu} log I_0(2 beta N |z_x^dagger z_{x+mu}|),

    sampled here by every sampler and flow of unit vectors; the links given z are von Mises with
    mean direction arg(w^*) and concentration 2 K |w|. Another discretisation of the same
    continuum theory (at small beta it is the quartic form at (beta N)^2 in place of beta N, since
    log I_0(2 K r) = K^2 r^2 - K^4 r^4 / 4 + ...; Campostrini, Rossi, Vicari, Phys. Rev. D 46 (1992) 2647).
    """

    form = "link"

    def _moduli(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(link_overlaps(z, self.lattice.ndim))  # |z_x^dagger z_{x+mu}|, (batch, d, *lattice)

    def action(self, z: torch.Tensor) -> torch.Tensor:
        a = 2.0 * self.coupling * self._moduli(z)
        return -log_i0(a).sum(dim=tuple(range(1, a.dim())))

    def force(self, z: torch.Tensor) -> torch.Tensor:
        """-2 K^2 sum_{+-mu} [2 I_1(a)/(a I_0(a))] z_y (z_y^dagger z_x), a = 2 K |z_x^dagger z_y| (shape of z)."""
        from .geometry import shift

        k = self.coupling
        out = torch.zeros_like(z)
        for mu in range(self.lattice.ndim):
            for n in (1, -1):
                y = shift(z, mu, n)
                w = overlap(y, z)  # z_y^dagger z_x
                a = 2.0 * k * torch.sqrt(w.real**2 + w.imag**2)
                out = out + (y * w.unsqueeze(-1)) * i1_over_i0_over_a(a).unsqueeze(-1)
        return out.mul_(-4.0 * k * k)

    local_field = None  # not a quadratic form in z_x: cpn_local is for the quartic form

    def local_action(self, z, mask):
        return None

    @property
    def params(self) -> dict[str, Any]:
        return {"N": self.N, "beta": self.beta, "form": self.form}

    def __repr__(self) -> str:
        return f"CPNLinkAction({self.lattice!r}, N={self.N}, beta={self.beta!r})"
