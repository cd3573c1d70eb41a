"""``LatticeFlowModel``: a ``FlowModel`` that can move to another lattice size in place.

Its layers keep lattice-dependent masks and momenta in non-persistent buffers, so the
state_dict holds only lattice-independent weights. Two equivalent ways to run a model trained
at L on L':

* build the model for the new action (lattice L') and ``load_state_dict`` the trained weights;
* ``model.relattice(Lattice([L', L']))``: rebuild every layer's buffers in place.
"""

from __future__ import annotations

import torch
from torch import nn

from lattgen import Bijection, FlowModel, Lattice, LatticeError

from .lattice_layer import relattice_tree


class LatticeFlowModel(FlowModel):
    """Standard-normal prior pushed through a flow of lattice layers; ``relattice`` moves it to a new L."""

    def __init__(self, lattice: Lattice, flow: Bijection, path_gradient: bool = False):
        super().__init__(lattice, flow)
        self.path_gradient = bool(path_gradient)

    def sample(self, n, generator=None):
        """(phi, log q(phi)); with ``path_gradient`` log q's gradient flows through phi only.

        Path gradient ("sticking the landing", Roeder et al. arXiv 1703.09194; for lattice flows
        Vaitl et al. arXiv 2207.08219): log q is re-evaluated at phi with the parameters
        detached, dropping the score term d/dtheta log q_theta(phi)|_phi, whose expectation is
        zero but whose noise does not vanish as q -> p. Same value, an unbiased reverse-KL
        gradient with less variance near convergence, one extra inverse pass.
        """
        if not (self.path_gradient and torch.is_grad_enabled()):
            return super().sample(n, generator)
        z = self.sample_latent(n, generator)
        phi, _ = self.flow.forward_and_log_det(z)
        inverse = _Inverse(self.flow)
        detached = {name: p.detach() for name, p in inverse.named_parameters()}
        z_back, log_det_inv = torch.func.functional_call(inverse, detached, (phi,))
        return phi, self.latent_log_prob(z_back) + log_det_inv

    @property
    def fully_convolutional(self) -> bool:  # type: ignore[override]
        """Every layer's weights (nested ones included) are independent of the lattice size."""
        return all(m.fully_convolutional for m in self.flow.modules() if isinstance(m, Bijection))

    @property
    def tiling_equivariant(self) -> bool:  # type: ignore[override]
        """Every layer (nested ones included) commutes with periodic extension."""
        return all(m.tiling_equivariant for m in self.flow.modules() if isinstance(m, Bijection))

    def relattice(self, lattice: Lattice) -> LatticeFlowModel:
        """Rebuild every layer's masks/momenta for ``lattice`` (same weights, device and dtype)."""
        if lattice != self.lattice and not self.fully_convolutional:
            raise LatticeError(
                f"this model has layers tied to lattice {list(self.lattice.shape)} (dense conditioner or "
                f"per-momentum spectrum) and cannot move to {list(lattice.shape)}"
            )
        relattice_tree(self.flow, lattice)
        self.lattice = lattice
        return self


class _Inverse(nn.Module):
    """``flow.inverse_and_log_det`` as a module's forward (for ``torch.func.functional_call``)."""

    def __init__(self, flow: Bijection):
        super().__init__()
        self.flow = flow

    def forward(self, phi):
        return self.flow.inverse_and_log_det(phi)
