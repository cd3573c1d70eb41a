"""Lattice geometry: shape in any dimension, volume, shifts, checkerboard masks and momenta.

Fields are tensors of shape ``(batch, *lattice.shape)``; the lattice is periodic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import LatticeError


class Lattice:
    """A periodic hypercubic lattice of arbitrary dimension and (possibly unequal) extents."""

    def __init__(self, shape: Sequence[int]):
        try:
            if isinstance(shape, (str, bytes)) or any(isinstance(s, bool) for s in shape):
                raise TypeError
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise LatticeError(f"lattice shape must be a list of integers, got {shape!r}") from None
        if len(shape) == 0:
            raise LatticeError("lattice shape must have at least one dimension, got []")
        if any(s < 2 for s in shape):
            raise LatticeError(f"every lattice extent must be >= 2, got {list(shape)}")
        self.shape: tuple[int, ...] = shape

    # -- basic geometry -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of space-time dimensions d."""
        return len(self.shape)

    @property
    def volume(self) -> int:
        """Number of sites V."""
        return math.prod(self.shape)

    @property
    def dims(self) -> tuple[int, ...]:
        """Tensor dimensions of the lattice axes in a field of shape (batch, *shape)."""
        return tuple(range(1, self.ndim + 1))

    @property
    def bipartite(self) -> bool:
        """True when every extent is even, so the checkerboard colouring is consistent."""
        return all(s % 2 == 0 for s in self.shape)

    def __repr__(self) -> str:
        return f"Lattice({list(self.shape)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lattice) and other.shape == self.shape

    def __hash__(self) -> int:
        return hash(self.shape)

    # -- fields ---------------------------------------------------------------------------
    def check_field(self, phi: torch.Tensor) -> None:
        """Raise LatticeError unless phi has shape (batch, *shape)."""
        if tuple(phi.shape[1:]) != self.shape:
            raise LatticeError(
                f"field of shape {tuple(phi.shape)} does not fit lattice {list(self.shape)}: "
                f"expected (batch, {', '.join(map(str, self.shape))})"
            )

    def shift(self, phi: torch.Tensor, mu: int, n: int = 1) -> torch.Tensor:
        """phi_{x + n mu_hat}: the field translated by n sites along direction mu (periodic)."""
        return torch.roll(phi, shifts=-n, dims=1 + mu)

    def coordinates(self, device=None) -> torch.Tensor:
        """Integer site coordinates, shape (*shape, d)."""
        axes = [torch.arange(s, device=device) for s in self.shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def checkerboard(self, parity: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
        """Mask (shape ``shape``) equal to 1 on sites with sum(x) % 2 == parity, else 0."""
        if not self.bipartite:
            raise LatticeError(
                f"a checkerboard needs even extents, got lattice {list(self.shape)}"
            )
        par = self.coordinates(device).sum(-1) % 2
        return (par == parity).to(dtype)

    # -- momenta --------------------------------------------------------------------------
    def momenta(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """Lattice momenta p_mu = 2 pi n_mu / L_mu, shape (*shape, d), FFT ordering."""
        axes = [
            2 * math.pi * torch.fft.fftfreq(s, d=1.0, device=device, dtype=dtype) for s in self.shape
        ]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def p_hat_squared(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """hat p^2 = sum_mu 4 sin^2(p_mu / 2), the free lattice Laplacian's eigenvalues."""
        p = self.momenta(device, dtype)
        return (4 * torch.sin(p / 2) ** 2).sum(-1)

    def cos_sum(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """sum_mu cos(p_mu), shape (*shape)."""
        return torch.cos(self.momenta(device, dtype)).sum(-1)
