"""A deliberately wrong model for the harness's consistency check (test-only plugin).

``gaussian_exact`` pushes white noise through the free field's exact covariance square root,
so independence Metropolis with it is exact. ``gaussian_wrong`` samples the same way but
reports log q(phi) + eps * V * m^2: a configuration-dependent error that makes the
Metropolis-corrected chain target exp(-S - eps V m^2) instead of exp(-S).
"""

from __future__ import annotations

import torch
from torch import nn

from lattgen import Param, hookimpl
from lattgen.fourier import apply_circulant
from lattgen.model import Bijection, FlowModel


class ExactGaussianMap(Bijection):
    """phi = C^{1/2} z with C the free propagator (in momentum space) and a learnable scale."""

    def __init__(self, lattice, propagator):
        super().__init__()
        self.lattice = lattice
        self.register_buffer("sqrt_g", torch.sqrt(propagator))
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward_and_log_det(self, z):
        phi = apply_circulant(z, self.sqrt_g, self.lattice) * torch.exp(self.log_scale)
        ld = torch.log(self.sqrt_g).sum() + self.lattice.volume * self.log_scale
        return phi, ld.to(z.dtype).expand(z.shape[0])

    def inverse_and_log_det(self, phi):
        z = apply_circulant(phi * torch.exp(-self.log_scale), 1 / self.sqrt_g, self.lattice)
        ld = -(torch.log(self.sqrt_g).sum() + self.lattice.volume * self.log_scale)
        return z, ld.to(phi.dtype).expand(phi.shape[0])


class WrongModel(FlowModel):
    """The exact Gaussian flow with log q off by eps * V * m^2."""

    def __init__(self, action, eps):
        super().__init__(action.lattice, ExactGaussianMap(action.lattice, action.exact()["propagator"].float()))
        self.eps = eps

    def _error(self, phi):
        m = phi.mean(dim=self.lattice.dims)
        return self.eps * self.lattice.volume * m**2

    def sample(self, n, generator=None):
        phi, log_q = super().sample(n, generator)
        return phi, log_q + self._error(phi)

    def log_prob(self, phi):
        return super().log_prob(phi) + self._error(phi)


class WrongModelPlugin:
    @hookimpl
    def lattgen_register_models(self, register):
        register("gaussian_exact", lambda action: WrongModel(action, 0.0), compare=False,
                 doc="exact free-field Gaussian flow (test)")
        register("gaussian_wrong", WrongModel, compare=False,
                 params=(Param("eps", "float", 0.5, "size of the configuration-dependent error"),),
                 doc="free-field Gaussian flow whose log q is off by eps V m^2 (test)")
