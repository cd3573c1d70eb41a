"""Checkerboard coupling: update one colour of the lattice given the other (arXiv 1904.12072, 2101.08176).

Sites of colour ``parity`` (sum_mu x_mu = parity mod 2) are *active*: they are transformed
elementwise by a monotone map whose parameters a conditioner network computes from the
*frozen* sites (the other colour). With ``sites = "fine"`` the coarse sites (every coordinate
even, see ``multigrid.py``) are never active: they stay frozen, so a multigrid level can read
its coarse field back in the inverse. The Jacobian is triangular, so
log|det| = sum over active sites of log|dy'/dy|. Subclasses give the number of parameter
channels and the elementwise ``transform``.
"""

from __future__ import annotations

import torch
from torch import nn

from lattgen import ConfigError, Lattice

from .lattice_layer import LatticeBijection

#: which sites of the colour a coupling updates: all of them, or the fine ones (coarse frozen)
SITES = ("all", "fine")


def fine_sites(lattice: Lattice, device=None) -> torch.Tensor:
    """Mask (bool, shape lattice) of the fine sites: at least one odd coordinate (not coarse)."""
    return (lattice.coordinates(device) % 2).any(-1)


class CheckerboardCoupling(LatticeBijection):
    """z -> phi: frozen sites copied, active sites y -> transform(y; conditioner(frozen))."""

    def __init__(self, lattice: Lattice, parity: int, conditioner: nn.Module, sites: str = "all"):
        super().__init__(lattice)
        if sites not in SITES:
            raise ConfigError(f"coupling sites {sites!r} is unknown; choose one of: {', '.join(SITES)}")
        self.parity = int(parity)
        self.sites = sites
        self.conditioner = conditioner
        self.build_buffers(lattice, torch.device("cpu"), torch.get_default_dtype())

    @property
    def fully_convolutional(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.conditioner, "fully_convolutional", False))

    def build_buffers(self, lattice, device, dtype):
        """The active-site mask (bool, shape lattice.shape); the conditioner checks the lattice fits."""
        check = getattr(self.conditioner, "check_lattice", None)
        if check is not None:
            check(lattice.shape)
        active = lattice.checkerboard(self.parity, device=device, dtype=torch.bool)
        if self.sites == "fine":
            active = active & fine_sites(lattice, device)
        self.register_buffer("active", active, persistent=False)
        self.register_buffer("active_index", active.flatten().nonzero().squeeze(1), persistent=False)

    def transform(
        self, y: torch.Tensor, params: torch.Tensor, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise map of sites y (batch, n) with params (batch, C, n) -> (y', log|dy'/dy|),
        both (batch, n); called with the n active sites only."""
        raise NotImplementedError

    def _couple(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        frozen = x.masked_fill(self.active, 0.0)
        params = self.conditioner(frozen.unsqueeze(1))
        # the elementwise map runs on the active sites only (half the lattice; a quarter or a half
        # for fine sites): 1.16-1.20x the training steps per second (docs/benchmarks.md, issue 15 (d))
        index = self.active_index
        flat = x.flatten(1)
        y, log_jac = self.transform(flat.index_select(1, index), params.flatten(2).index_select(2, index), inverse)
        return flat.index_copy(1, index, y).view_as(x), log_jac.sum(-1)

    def forward_and_log_det(self, z):
        return self._couple(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._couple(phi, inverse=True)

    def extra_repr(self) -> str:
        return f"parity={self.parity}" + (f", sites={self.sites!r}" if self.sites != "all" else "")
