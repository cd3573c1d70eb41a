"""Masks of the gauge-equivariant plaquette coupling (Kanwar et al., arXiv 2003.06413, fig. 2).

A coupling with direction mu and offset o in 0..3 updates the links theta_mu(x) with
x_nu = o (mod 4), nu the other direction. Each such link is the only updated link of the
plaquette P(x) ("active": it is transformed), and of one more, P(x - e_nu) ("passive": it
changes by minus the same amount); every loop whose boundary holds no updated link is
"frozen" and may condition the transformation. Which loops are frozen is counted from the
updated links themselves (``frozen_loops``), so plaquettes and 2x1 rectangles use one rule.
The stripes need both extents to be multiples of 4.
"""

from __future__ import annotations

import torch

from lattgen import Lattice, LatticeError

from .action import shift

#: every (mu, offset) once: 8 couplings update each link once
PATTERN = tuple((mu, off) for off in range(4) for mu in (0, 1))


def check_tiles(lattice: Lattice, what: str = "the u1 plaquette coupling") -> None:
    """LatticeError unless the lattice is 2D with both extents multiples of 4 (4, 8, 12, 16, ...)."""
    if lattice.ndim != 2 or any(n % 4 for n in lattice.shape):
        raise LatticeError(f"{what} masks links in stripes of period 4 and needs a 2D lattice with both "
                           f"extents multiples of 4 (4, 8, 12, 16, ...); got {list(lattice.shape)}")


def updated_links(lattice: Lattice, mu: int, offset: int, device=None) -> torch.Tensor:
    """Bool (2, L1, L2): the links theta_mu(x) with x_nu = offset (mod 4)."""
    coords = lattice.coordinates(device)
    mask = torch.zeros((2, *lattice.shape), dtype=torch.bool, device=device)
    mask[mu] = coords[..., 1 - mu] % 4 == offset
    return mask


def loop_link_counts(u: torch.Tensor) -> dict[str, torch.Tensor]:
    """How many links marked in ``u`` (float (batch, 2, L1, L2)) lie on each loop's boundary:
    the plaquette P(x), the rectangle R1(x) = P(x) + P(x+e1) and R2(x) = P(x) + P(x+e2)."""
    u1, u2 = u[:, 0], u[:, 1]
    plaq = u1 + shift(u2, 0) + u2 + shift(u1, 1)
    r1 = u1 + shift(u1, 0) + shift(u2, 0, 2) + shift(u1, 1) + shift(shift(u1, 0), 1) + u2
    r2 = u1 + shift(u2, 0) + shift(shift(u2, 0), 1) + shift(u1, 1, 2) + shift(u2, 1) + u2
    return {"plaquette": plaq, "rect1": r1, "rect2": r2}


def coupling_masks(lattice: Lattice, mu: int, offset: int, device=None) -> dict[str, torch.Tensor]:
    """Bool masks (L1, L2) of the coupling: ``active`` plaquettes, ``frozen_<loop>`` for each loop,
    and ``links`` (2, L1, L2); the link update enters the active plaquette with sign (+1, -1)[mu]."""
    links = updated_links(lattice, mu, offset, device)
    counts = loop_link_counts(links[None].to(torch.float64))
    coords = lattice.coordinates(device)
    masks = {"links": links, "active": coords[..., 1 - mu] % 4 == offset}
    masks.update({f"frozen_{k}": v[0] == 0 for k, v in counts.items()})
    return masks
