"""``LatticeBijection``: a flow layer whose lattice-dependent buffers can be rebuilt for another lattice.

Masks and momenta are registered buffers built once per lattice, *non-persistent*: they are not
in the state_dict. So a model trained at one L runs at another either by building it for the
new lattice and loading the state_dict, or in place with ``relattice(Lattice(new_shape))``.
Layers whose weights are tied to one lattice (dense conditioners, per-momentum spectra) say
``fully_convolutional = False`` and raise ``LatticeError`` when moved.
"""

from __future__ import annotations

import torch
from torch import nn

from lattgen import Bijection, Lattice, LatticeError


def module_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's first parameter or float buffer (CPU/default otherwise)."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    for t in module.buffers():
        return t.device, torch.get_default_dtype()
    return torch.device("cpu"), torch.get_default_dtype()


class LatticeBijection(Bijection):
    """A Bijection on fields of one lattice; subclasses build their buffers in ``build_buffers``."""

    #: weights are independent of the lattice size (state_dict loads at any L)
    fully_convolutional: bool = True

    def __init__(self, lattice: Lattice):
        super().__init__()
        self.lattice = lattice

    def build_buffers(self, lattice: Lattice, device: torch.device, dtype: torch.dtype) -> None:
        """(Re)register the lattice-dependent, non-persistent buffers. Default: none."""

    def relattice(self, lattice: Lattice) -> "LatticeBijection":
        """Rebuild the lattice-dependent buffers in place for ``lattice`` (same device and dtype)."""
        if lattice != self.lattice and not self.fully_convolutional:
            raise LatticeError(
                f"{type(self).__name__} is tied to lattice {list(self.lattice.shape)} and cannot move to "
                f"{list(lattice.shape)}; use a fully convolutional configuration"
            )
        device, dtype = module_device_dtype(self)
        self.build_buffers(lattice, device, dtype)
        self.lattice = lattice
        return self

    def check_input(self, x: torch.Tensor) -> None:
        """Raise LatticeError unless x has shape (batch, *lattice.shape)."""
        if tuple(x.shape[1:]) != self.lattice.shape:
            raise LatticeError(
                f"{type(self).__name__} is set up for lattice {list(self.lattice.shape)} but got a field "
                f"of shape {tuple(x.shape)}; call model.relattice(Lattice({list(x.shape[1:])})) or "
                "build the model for that lattice and load the state_dict"
            )

    def site_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over the lattice axes: (batch, *shape) -> (batch,)."""
        return x.sum(dim=tuple(range(1, x.dim())))


def relattice_tree(module: nn.Module, lattice: Lattice) -> None:
    """Move every outermost LatticeBijection under ``module`` to ``lattice``.

    Descends through containers (Composition, ModuleList) but not into a LatticeBijection: one
    that holds layers on another lattice (a multigrid level's coarse flow) moves them itself.
    """
    if isinstance(module, LatticeBijection):
        module.relattice(lattice)
        return
    for child in module.children():
        relattice_tree(child, lattice)
