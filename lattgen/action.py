"""The Action interface: a lattice theory is its Euclidean action S(phi), weight exp(-S)."""

from __future__ import annotations

import abc
from typing import Any

import torch

from .lattice import Lattice


class Action(abc.ABC):
    """A lattice action S(phi) for fields of shape (batch, *lattice.shape).

    Subclasses implement ``action``; ``force`` defaults to autograd and should be overridden
    with the analytic derivative where one exists (HMC calls it in its hot loop).
    """

    #: the action is invariant under phi -> -phi (lets samplers add a random Z2 flip)
    z2_symmetric: bool = False

    def __init__(self, lattice: Lattice):
        self.lattice = lattice

    @abc.abstractmethod
    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(phi), shape (batch,), in phi's dtype."""

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        return self.action(phi)

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """dS/dphi, shape of phi. Default: autograd (override with the analytic form)."""
        with torch.enable_grad():
            x = phi.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.action(x).sum(), x)
        return g

    def local_action(self, phi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """Optional, for local (checkerboard) updates: the terms of S that contain phi_x, per site.

        Shape of phi; the value at each site x of ``mask`` (one checkerboard colour, bool) is the
        sum of all terms of S depending on phi_x, 0 elsewhere. Sites of one colour must not share
        a term, so that changing all of them changes S by the sum of per-site differences (the
        ``metropolis`` sampler relies on this). None if the action has no such local form.
        """
        return None

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that define this action (written to results.json)."""
        return {}

    def exact(self) -> dict[str, Any] | None:
        """Exact results where known (e.g. the free field): None for interacting theories.

        Keys (all optional but named so): ``"propagator"`` G~(p) as a float64 tensor of shape
        ``lattice.shape`` in FFT ordering, ``"susceptibility"`` (float), ``"correlation_length"``
        (second-moment xi, float), ``"ising_energy"`` (float).
        """
        return None
