"""The phi^4 lattice actions in the seed's form B (``phi4``) and the standard form A (``phi4_standard``).

Both are the polynomial S = sum_x [ -kappa sum_mu phi_x phi_{x+mu} + a phi_x^2 + b phi_x^4 + c ]
on a periodic lattice of any dimension and shape:

* form B: kappa = beta, a = 1 - 2 lam, b = lam, c = lam   (i.e. phi^2 + lam (phi^2 - 1)^2)
* form A: kappa = 2,    a = 2d + m2,   b = lamA, c = 0

``force`` is the analytic dS/dphi; ``local_action`` supports checkerboard Metropolis updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lattgen import Action, ConfigError, Lattice

from . import forms
from .free import check_free_field_stable, free_field_exact


class Phi4Base(Action):
    """S = sum_x [ -kappa sum_mu phi_x phi_{x+mu} + a phi_x^2 + b phi_x^4 + c ] with analytic force."""

    z2_symmetric = True

    def __init__(self, lattice: Lattice, kappa: float, a: float, b: float, c: float = 0.0):
        super().__init__(lattice)
        if b < 0:
            raise ConfigError(f"the quartic coupling must be >= 0 (S is unbounded below otherwise), got {b}")
        self.kappa = float(kappa)
        self.a = float(a)
        self.b = float(b)
        self.c = float(c)

    # -- pieces ---------------------------------------------------------------------------
    def neighbour_sum(self, phi: torch.Tensor) -> torch.Tensor:
        """sum_mu (phi_{x+mu} + phi_{x-mu}), shape of phi (periodic shifts; a matrix-product variant
        was faster at L = 16 on an idle CPU but slower at small L and far slower under load)."""
        lat = self.lattice
        nn = lat.shift(phi, 0, 1).add_(lat.shift(phi, 0, -1))
        for mu in range(1, lat.ndim):
            nn.add_(lat.shift(phi, mu, 1)).add_(lat.shift(phi, mu, -1))
        return nn

    def forward_hopping(self, phi: torch.Tensor) -> torch.Tensor:
        """sum_mu phi_x phi_{x+mu} per site (each link once), shape of phi."""
        lat = self.lattice
        hop = lat.shift(phi, 0, 1)
        for mu in range(1, lat.ndim):
            hop.add_(lat.shift(phi, mu, 1))
        return hop.mul_(phi)

    def potential(self, phi: torch.Tensor) -> torch.Tensor:
        """Site potential a phi^2 + b phi^4 + c, shape of phi."""
        phi2 = phi * phi
        return phi2 * (self.a + self.b * phi2) + self.c

    def density_at(self, phi: torch.Tensor, kappa, a, b, c) -> torch.Tensor:
        """Site density -kappa sum_mu phi_x phi_{x+mu} + a phi^2 + b phi^4 + c with coefficients
        that are numbers or per-configuration tensors (batch,) (broadcast over the sites)."""
        shape = (phi.shape[0],) + (1,) * self.lattice.ndim

        def per_site(v):
            return v.to(phi.dtype).view(shape) if isinstance(v, torch.Tensor) else v

        kappa, a, b, c = map(per_site, (kappa, a, b, c))
        phi2 = phi * phi
        return phi2 * (a + b * phi2) + c - kappa * self.forward_hopping(phi)

    def coefficients_at(self, couplings: Mapping[str, torch.Tensor]) -> tuple:
        """(kappa, a, b, c), each a number or a (batch,) tensor, from per-configuration couplings."""
        raise NotImplementedError

    def action_at(self, phi: torch.Tensor, couplings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S(phi_i; c_i) with per-configuration couplings (batch,); missing ones keep this action's value."""
        self.lattice.check_field(phi)
        self.check_couplings(couplings, phi.shape[0])
        return self.density_at(phi, *self.coefficients_at(couplings)).sum(dim=self.lattice.dims)

    # -- the Action interface -------------------------------------------------------------
    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(phi), shape (batch,), in phi's dtype."""
        self.lattice.check_field(phi)
        density = self.potential(phi).sub_(self.forward_hopping(phi), alpha=self.kappa)
        return density.sum(dim=self.lattice.dims)

    def action_float64(self, phi: torch.Tensor) -> torch.Tensor:
        """S(phi) as float64: site densities in phi's dtype, summed in float64 (HMC's accept step)."""
        self.lattice.check_field(phi)
        density = self.potential(phi).sub_(self.forward_hopping(phi), alpha=self.kappa)
        return density.sum(dim=self.lattice.dims, dtype=torch.float64)

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """dS/dphi_x = -kappa sum_mu (phi_{x+mu} + phi_{x-mu}) + 2 a phi_x + 4 b phi_x^3."""
        f = phi * phi
        f.mul_(4.0 * self.b).add_(2.0 * self.a).mul_(phi)
        return f.sub_(self.neighbour_sum(phi), alpha=self.kappa)

    def local_action(self, phi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Terms of S containing phi_x, at the sites of ``mask`` (0 elsewhere), shape of phi.

        s_x = phi_x (-kappa sum_mu (phi_{x+mu} + phi_{x-mu}) + a phi_x + b phi_x^3). For a mask of
        one checkerboard colour no two masked sites interact, so changing all of them at once
        changes S by the sum of the per-site differences of s_x.
        """
        phi2 = phi * phi
        s = phi2.mul_(self.b).add_(self.a).mul_(phi).sub_(self.neighbour_sum(phi), alpha=self.kappa)
        return s.mul_(phi).mul_(mask.to(phi.dtype))

    @property
    def is_free(self) -> bool:
        """No quartic term: a Gaussian field with exact results."""
        return self.b == 0.0

    def _check_normalisable(self, hint: str) -> None:
        if self.is_free:
            check_free_field_stable(self.lattice, self.kappa, self.a, hint)

    def exact(self) -> dict[str, Any] | None:
        """Exact free-field results (see ``free_field_exact``); None when interacting."""
        if not self.is_free:
            return None
        return free_field_exact(self.lattice, self.kappa, self.a)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.lattice!r}, {args})"


class Phi4Action(Phi4Base):
    """Form B: S = sum_x [ -beta sum_mu phi_{x+mu} phi_x + phi_x^2 + lam (phi_x^2 - 1)^2 ]."""

    def __init__(self, lattice: Lattice, beta: float, lam: float = 0.5):
        if lam < 0:
            raise ConfigError(f"action.lam: must be >= 0 (S is unbounded below otherwise), got {lam}")
        super().__init__(lattice, kappa=beta, a=1.0 - 2.0 * lam, b=lam, c=lam)
        self.beta = float(beta)
        self.lam = float(lam)
        self._check_normalisable(
            f"with lam = 0 the field is Gaussian and needs beta < 1/d = {1.0 / lattice.ndim:.6g} "
            f"in d = {lattice.ndim}; got beta = {beta}: lower beta or set lam > 0"
        )

    @property
    def params(self) -> dict[str, Any]:
        return {"beta": self.beta, "lam": self.lam}

    def coefficients_at(self, couplings):
        """Form B: kappa = beta, a = 1 - 2 lam, b = c = lam."""
        beta = couplings.get("beta", self.beta)
        lam = couplings.get("lam", self.lam)
        return beta, 1.0 - 2.0 * lam, lam, lam

    def to_standard(self) -> Phi4StandardAction:
        """The same theory in form A (fields related by phi_A = sqrt(beta/2) phi_B)."""
        m2, lamA = forms.form_b_to_a(self.beta, self.lam, self.lattice.ndim)
        return Phi4StandardAction(self.lattice, m2=m2, lamA=lamA)

    def field_to_standard(self, phi: torch.Tensor) -> torch.Tensor:
        """phi_A = sqrt(beta/2) phi_B."""
        return phi * forms.field_scale_b_to_a(self.beta)


class Phi4StandardAction(Phi4Base):
    """Form A: S_A = sum_x [ -2 sum_mu phi_x phi_{x+mu} + (2d + m2) phi_x^2 + lamA phi_x^4 ]."""

    def __init__(self, lattice: Lattice, m2: float, lamA: float):
        if lamA < 0:
            raise ConfigError(f"action.lamA: must be >= 0 (S is unbounded below otherwise), got {lamA}")
        super().__init__(lattice, kappa=2.0, a=2.0 * lattice.ndim + m2, b=lamA, c=0.0)
        self.m2 = float(m2)
        self.lamA = float(lamA)
        self._check_normalisable(f"with lamA = 0 the field is Gaussian and needs m2 > 0; got m2 = {m2}")

    @property
    def params(self) -> dict[str, Any]:
        return {"m2": self.m2, "lamA": self.lamA}

    def coefficients_at(self, couplings):
        """Form A: kappa = 2, a = 2d + m2, b = lamA, c = 0."""
        m2 = couplings.get("m2", self.m2)
        return 2.0, 2.0 * self.lattice.ndim + m2, couplings.get("lamA", self.lamA), 0.0

    def to_seed_form(self) -> Phi4Action:
        """The same theory in form B (fields related by phi_B = sqrt(2/beta) phi_A)."""
        beta, lam = forms.form_a_to_b(self.m2, self.lamA, self.lattice.ndim)
        return Phi4Action(self.lattice, beta=beta, lam=lam)

    def field_to_seed_form(self, phi: torch.Tensor) -> torch.Tensor:
        """phi_B = sqrt(2/beta) phi_A, beta from ``forms.form_a_to_b``."""
        beta, _ = forms.form_a_to_b(self.m2, self.lamA, self.lattice.ndim)
        return phi / forms.field_scale_b_to_a(beta)
