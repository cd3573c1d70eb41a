"""Registers the ``phi6`` action with lattgen (through the ``lattgen`` entry-point group)."""

from __future__ import annotations

import torch

from lattgen import Lattice, Param, hookimpl
from lattgen.action import Action


class Phi6Action(Action):
    """S = sum_x [ -beta sum_mu phi_x phi_{x+mu} + phi_x^2 + g phi_x^6 ]: a stable Z2-symmetric theory."""

    z2_symmetric = True

    def __init__(self, lattice: Lattice, beta: float, g: float):
        super().__init__(lattice)
        self.beta, self.g = beta, g

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        self.lattice.check_field(phi)
        hop = sum(phi * self.lattice.shift(phi, mu) for mu in range(self.lattice.ndim))
        dens = -self.beta * hop + phi**2 + self.g * phi**6
        return dens.sum(dim=self.lattice.dims)

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        nn = sum(self.lattice.shift(phi, mu) + self.lattice.shift(phi, mu, -1) for mu in range(self.lattice.ndim))
        return -self.beta * nn + 2 * phi + 6 * self.g * phi**5

    @property
    def params(self):
        return {"beta": self.beta, "g": self.g}


@hookimpl
def lattgen_register_actions(register):
    register(
        "phi6",
        Phi6Action,
        params=(
            Param("beta", "float", 0.3, "nearest-neighbour coupling", min=0),
            Param("g", "float", 0.1, "phi^6 coupling (> 0 for stability)", min=0, min_exclusive=True),
        ),
        doc="phi^6 theory (example third-party plugin)",
    )
