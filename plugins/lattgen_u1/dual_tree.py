"""A spanning tree of the dual lattice: which link carries each plaquette's change, in which order.

Plaquettes of the periodic L1 x L2 lattice are the sites of the dual lattice; two plaquettes are
neighbours across the link they share. The tree has its root at plaquette (0, 0): every
plaquette (a, b) with b != 0 hangs on (a, b -+ 1) (towards b = 0 the short way round), every
(a, 0) with a != 0 on (a -+ 1, 0), each through the link the two share. Updating that link by
+-delta changes exactly the plaquette and its parent. Processing the plaquettes leaf first,
level by level (all plaquettes at one tree distance at once: they share no updated link), every
plaquette but the root is transformed while its parent is still untouched; the root takes what
the constraint prod_P U_P = 1 leaves it. The tree has L2 / 2 + L1 / 2 levels (leaf first).

With P(x) = theta_1(x) + theta_2(x + e1) - theta_2(x) - theta_1(x + e2) (``action.plaquette_angles``):
the link theta_1(a, b) lies on P(a, b) with sign +1 and on P(a, b - 1) with -1; theta_2(a, b) on
P(a, b) with -1 and on P(a - 1, b) with +1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TreeLevel:
    """One level: flat plaquette indices, the flat link index (into (2, L1, L2)) each one updates,
    the sign with which that link enters the plaquette, and the plaquettes' four boundary links."""

    plaquettes: torch.Tensor  # (n,) long
    links: torch.Tensor  # (n,) long
    signs: torch.Tensor  # (n,) float64, +-1
    boundary: torch.Tensor  # (n, 4) long: theta_1(x), theta_2(x + e1), theta_2(x), theta_1(x + e2)


def _link(mu: int, a: int, b: int, shape: tuple[int, int]) -> int:
    l1, l2 = shape
    return (mu * l1 + a % l1) * l2 + b % l2


def _boundary(a: int, b: int, shape: tuple[int, int]) -> list[int]:
    return [_link(0, a, b, shape), _link(1, a + 1, b, shape), _link(1, a, b, shape), _link(0, a, b + 1, shape)]


def dual_tree_levels(shape: tuple[int, int], device=None) -> list[TreeLevel]:
    """The tree's levels in forward (leaf-first) order; every plaquette but (0, 0) exactly once."""
    l1, l2 = (int(n) for n in shape)
    rows: list[list[tuple[int, int, int, float]]] = []  # (plaquette, link, sign) per level
    for d in range(l2 // 2, 0, -1):  # the columns, towards b = 0
        level = []
        for a in range(l1):
            for b in sorted({d, (l2 - d) % l2}):
                if b <= l2 // 2:  # parent (a, b - 1), through theta_1(a, b): sign +1 on P(a, b)
                    level.append((a, b, _link(0, a, b, shape), 1.0))
                else:  # parent (a, b + 1), through theta_1(a, b + 1): sign -1 on P(a, b)
                    level.append((a, b, _link(0, a, b + 1, shape), -1.0))
        rows.append(level)
    for d in range(l1 // 2, 0, -1):  # the row b = 0, towards a = 0
        level = []
        for a in sorted({d, (l1 - d) % l1}):
            if a <= l1 // 2:  # parent (a - 1, 0), through theta_2(a, 0): sign -1 on P(a, 0)
                level.append((a, 0, _link(1, a, 0, shape), -1.0))
            else:  # parent (a + 1, 0), through theta_2(a + 1, 0): sign +1 on P(a, 0)
                level.append((a, 0, _link(1, a + 1, 0, shape), 1.0))
        rows.append(level)
    levels = []
    for level in rows:
        if not level:
            continue
        levels.append(TreeLevel(
            plaquettes=torch.tensor([a * l2 + b for a, b, _, _ in level], dtype=torch.long, device=device),
            links=torch.tensor([link for _, _, link, _ in level], dtype=torch.long, device=device),
            signs=torch.tensor([s for _, _, _, s in level], dtype=torch.float64, device=device),
            boundary=torch.tensor([_boundary(a, b, shape) for a, b, _, _ in level], dtype=torch.long,
                                  device=device),
        ))
    return levels
