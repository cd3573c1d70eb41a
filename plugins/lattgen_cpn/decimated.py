"""The decimated CP^{N-1} flow: a flow for the odd sites' marginal, the even sites drawn from their exact conditional.

Every link of the quartic action joins an even and an odd site, so given the odd sites the even ones
are independent complex Bingham variables (bingham.py),

    p(z_even | z_odd) = prod_{x even} exp(z_x^+ A_x z_x) / (Vol E_Haar[exp(z^+ A_x z)]),
    A_x = beta N sum_{+-mu} P_{x+-mu},

and the odd sites have the exact marginal p(z_odd) ~ prod_{x even} E_Haar[exp(z^+ A_x z)]
(closed form from the eigenvalues of A_x). The model is

    q(z) = q_flow(z_odd) p(z_even | z_odd),

q_flow a flow of eigenbasis couplings (flow.py) on the odd sublattice, whose own checkerboard
splits it by the parity of x_0 (in 2D its nearest neighbours are the diagonals, every one of the
other colour). The IMH weight is then p(z_odd)/q_flow(z_odd): the even half of the lattice adds no
variance to log w, and the flow has half the sites to model: one colour is integrated out exactly,
as a checkerboard heat-bath sweep would draw it, but inside the proposal.

The even sites are drawn without a gradient. Reverse KL still trains the flow correctly: in
log q(z) + S(z) the even-site terms cancel identically (z_x^+ A_x z_x enters both), so the loss is
log q_flow(z_odd) - log p(z_odd) up to a constant, with the gradient of the marginal problem.
Only for the quartic form (the link form is not quadratic in z_x) and in two dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lattgen import ConfigError, Lattice

from .bingham import log_haar_mgf, padded_eigvalsh, sample_bingham
from .features import neighbour_offsets
from .flow import CPNFlowModel, sphere_log_volume
from .geometry import at_offset, with_sites


def even_neighbour_matrix(z: torch.Tensor, even: torch.Tensor) -> torch.Tensor:
    """Y (batch, S, N, 2d) of the nearest neighbours z_{x+-mu} of the S sites of ``even``, complex128."""
    cols = [at_offset(z, o)[:, even] for o in neighbour_offsets(even.dim())]
    return torch.stack(cols, dim=-1).to(torch.complex128)


class CPNDecimatedModel(CPNFlowModel):
    """q(z) = q_flow(z_odd) x exact complex Bingham conditional of z_even (module docstring)."""

    def __init__(self, lattice: Lattice, n_comp: int, beta: float, n_layers: int = 8, hidden: Sequence[int] = (32, 32),
                 kernel_size: int = 3, bins: int = 8, directions: int | None = None, stencils: Sequence[int] = (1, 3),
                 projective: bool = True):
        super().__init__(lattice, n_comp, n_layers=n_layers, hidden=hidden, kernel_size=kernel_size, bins=bins,
                         directions=directions, stencils=stencils, projective=projective, sublattice=True)
        self.weight = float(beta) * int(n_comp)  # A_x = beta N sum P_y
        self.register_buffer("even", lattice.checkerboard(0, dtype=torch.bool), persistent=False)

    def prior_log_volume(self, lattice: Lattice) -> float:
        """Only the odd sites are latents: Vol(S^{2N-1})^(V/2)."""
        return lattice.volume // 2 * sphere_log_volume(self.n_comp)

    def relattice(self, lattice: Lattice) -> CPNDecimatedModel:
        super().relattice(lattice)
        self.even = lattice.checkerboard(0, device=self.even.device, dtype=torch.bool)
        return self

    def _conditional(self, y: torch.Tensor, z_even: torch.Tensor) -> torch.Tensor:
        """sum over even x of log p(z_x | Y_x) relative to the Riemannian volume, (batch,) float64."""
        z = z_even.to(torch.complex128)
        quad = self.weight * ((y.conj().transpose(-1, -2) @ z.unsqueeze(-1)).abs() ** 2).sum((-2, -1))
        log_norm = log_haar_mgf(padded_eigvalsh(y, self.weight))
        return (quad - log_norm).sum(-1) - z.shape[1] * sphere_log_volume(self.n_comp)

    def conditional_log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        """sum over even x of log p(z_x | neighbours) relative to the Riemannian volume, (batch,) float64."""
        return self._conditional(even_neighbour_matrix(phi, self.even), phi[:, self.even])

    def sample(self, n, generator=None):
        phi, log_q = super().sample(n, generator)
        y = even_neighbour_matrix(phi, self.even)  # odd sites only: unchanged by the even draw below
        y_fixed = y.detach()
        z_even = sample_bingham(self.weight * (y_fixed @ y_fixed.conj().transpose(-1, -2)), generator).to(phi.dtype)
        return with_sites(phi, self.even, z_even), log_q + self._conditional(y, z_even)

    def log_prob(self, phi):
        phi = phi.to(self.complex_dtype)
        return super().log_prob(phi) + self.conditional_log_prob(phi)


def check_decimatable(action) -> None:
    """The decimated flow needs the quartic form (its conditional is Bingham) in two dimensions."""
    if getattr(action, "form", "quartic") != "quartic":
        raise ConfigError("model cpn_decimated: needs action.form = \"quartic\" (the link form's conditional of a "
                          "site is not a Bingham distribution); use cpn_flow")
    if action.lattice.ndim != 2:
        raise ConfigError(f"model cpn_decimated: two-dimensional lattices only, got {list(action.lattice.shape)}")
