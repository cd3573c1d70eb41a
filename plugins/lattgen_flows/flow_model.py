"""``LatticeFlowModel``: a ``FlowModel`` that can move to another lattice size in place.

Its layers keep lattice-dependent masks and momenta in non-persistent buffers, so the
state_dict holds only lattice-independent weights. Two equivalent ways to run a model trained
at L on L':

* build the model for the new action (lattice L') and ``load_state_dict`` the trained weights;
* ``model.relattice(Lattice([L', L']))``: rebuild every layer's buffers in place.
"""

from __future__ import annotations

from lattgen.errors import LatticeError
from lattgen.lattice import Lattice
from lattgen.model import Bijection, FlowModel

from .lattice_layer import LatticeBijection


class LatticeFlowModel(FlowModel):
    """Standard-normal prior pushed through a flow of lattice layers; ``relattice`` moves it to a new L."""

    def __init__(self, lattice: Lattice, flow: Bijection):
        super().__init__(lattice, flow)

    @property
    def fully_convolutional(self) -> bool:
        """Every layer's weights are independent of the lattice size."""
        return all(
            getattr(m, "fully_convolutional", True) for m in self.flow.modules() if isinstance(m, Bijection)
        )

    def relattice(self, lattice: Lattice) -> "LatticeFlowModel":
        """Rebuild every layer's masks/momenta for ``lattice`` (same weights, device and dtype)."""
        if lattice != self.lattice and not self.fully_convolutional:
            raise LatticeError(
                f"this model has layers tied to lattice {list(self.lattice.shape)} (dense conditioner or "
                f"per-momentum spectrum) and cannot move to {list(lattice.shape)}"
            )
        for m in self.flow.modules():
            if isinstance(m, LatticeBijection):
                m.relattice(lattice)
        self.lattice = lattice
        return self
