"""The compact U(1) Wilson gauge action in two dimensions on link angles.

S = -beta sum_P cos theta_P, theta_P(x) = theta_1(x) + theta_2(x + e1) - theta_2(x) - theta_1(x + e2)
(Wilson, Phys. Rev. D 10 (1974) 2445). Links are ``LinkAngles``: a field (batch, 2, L1, L2),
index 0 of the second axis the links in direction e1 (lattice axis 0), index 1 those in e2.
The force is analytic; S is summed in float64.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lattgen import Action, ConfigError, Lattice, LatticeError, LinkAngles


def shift(t: torch.Tensor, axis: int, n: int = 1) -> torch.Tensor:
    """t(x + n e_axis) on the periodic lattice; ``axis`` counts lattice axes (the last two dims)."""
    return torch.roll(t, shifts=-n, dims=t.dim() - 2 + axis)


def plaquette_angles(theta: torch.Tensor) -> torch.Tensor:
    """theta_P(x) = theta_1(x) + theta_2(x+e1) - theta_2(x) - theta_1(x+e2), unwrapped, (batch, L1, L2)."""
    t1, t2 = theta[:, 0], theta[:, 1]
    return t1 + shift(t2, 0) - t2 - shift(t1, 1)


def check_two_dimensional(lattice: Lattice) -> None:
    if lattice.ndim != 2:
        raise LatticeError(f"the u1 action lives on two-dimensional lattices; got {list(lattice.shape)}")


class U1Action(Action):
    """S = -beta sum_P cos theta_P on a periodic 2D lattice, with the analytic force dS/dtheta."""

    translation_invariant = True

    def __init__(self, lattice: Lattice, beta: float):
        check_two_dimensional(lattice)
        beta = float(beta)
        if not (math.isfinite(beta) and beta > 0):
            raise ConfigError(f"action.beta: must be a finite number > 0, got {beta}")
        super().__init__(lattice)
        self.beta = beta

    def make_field_space(self, lattice: Lattice) -> LinkAngles:
        return LinkAngles(lattice)

    @property
    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(theta), shape (batch,), in theta's dtype."""
        return -self.beta * torch.cos(plaquette_angles(phi)).sum(dim=(1, 2))

    def action_float64(self, phi: torch.Tensor) -> torch.Tensor:
        return -self.beta * torch.cos(plaquette_angles(phi.to(torch.float64))).sum(dim=(1, 2))

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """dS/dtheta_1(x) = beta [sin P(x) - sin P(x - e2)], dS/dtheta_2(x) = beta [sin P(x - e1) - sin P(x)]."""
        s = torch.sin(plaquette_angles(phi))
        f1 = s - shift(s, 1, -1)
        f2 = shift(s, 0, -1) - s
        return self.beta * torch.stack((f1, f2), dim=1)

    def exact(self) -> dict[str, Any]:
        """Exact results on the periodic torus (``lattgen_u1.exact``), keyed by observable name."""
        from .exact import exact_results

        return exact_results(self.lattice, self.beta)

    def __repr__(self) -> str:
        return f"U1Action({self.lattice!r}, beta={self.beta!r})"
