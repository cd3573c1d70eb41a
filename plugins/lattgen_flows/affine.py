"""Affine checkerboard couplings: y' = y exp(s(x)) + t(x) on the active sites (real NVP, arXiv 1605.08803).

``AffineCoupling`` uses any conditioner (the tutorial flow of arXiv 2101.08176).
``Z2AffineCoupling`` symmetrises it: s(x) = (n(x) + n(-x))/2 is even, t(x) = (m(x) - m(-x))/2 is
odd, so f(-z) = -f(z) exactly and the scale can shrink as well as grow.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lattgen import Lattice

from .coupling import CheckerboardCoupling
from .networks import make_conditioner


#: |log-scale| per coupling is softly bounded by this (s = B tanh(raw / B) ~ raw for |raw| << B):
#: keeps extreme inputs finite whatever the conditioner's activation, never binds in practice
LOG_SCALE_BOUND = 5.0


def bounded_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """Soft clamp of a raw log-scale to (-LOG_SCALE_BOUND, LOG_SCALE_BOUND); odd and even preserving."""
    return LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)


def affine_transform(y, s, t, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """y' = y e^s + t (log|dy'/dy| = s) or its inverse y = (y' - t) e^-s (log-det -s)."""
    s = bounded_log_scale(s)
    if inverse:
        return (y - t) * torch.exp(-s), -s
    return y * torch.exp(s) + t, s


class AffineCoupling(CheckerboardCoupling):
    """Checkerboard affine coupling; the conditioner outputs channels (s, t)."""

    def transform(self, y, params, inverse):
        return affine_transform(y, params[:, 0], params[:, 1], inverse)


class Z2AffineCoupling(AffineCoupling):
    """Z2-equivariant affine coupling: even scale s, odd shift t from a symmetrised conditioner."""

    z2_equivariant = True


def make_affine_coupling(
    lattice: Lattice,
    parity: int = 0,
    hidden: Sequence[int] = (16, 16),
    kernel_size: int = 3,
    activation: str = "tanh",
    network: str = "conv",
    z2: bool = False,
    sites: str = "all",
    context=None,
) -> AffineCoupling:
    """Affine coupling layer on ``lattice``; ``z2=True`` gives the equivariant version."""
    odd = (False, True) if z2 else None
    net = make_conditioner(network, lattice.shape, 2, hidden, kernel_size, activation, odd, context)
    cls = Z2AffineCoupling if z2 else AffineCoupling
    return cls(lattice, parity, net, sites)
