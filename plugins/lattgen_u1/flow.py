"""Gauge-equivariant flow for U(1) links: plaquette couplings with circular splines.

``PlaquetteCoupling`` (Kanwar et al., arXiv 2003.06413; tutorial arXiv 2101.08176, part 2):
the active plaquettes of its mask (``masks``) are transformed by circular rational-quadratic
splines (arXiv 2002.02428, ``lattgen_flows.circular_rq_spline``) whose parameters a CNN
computes from the frozen loops (cos and sin of plaquettes and, optionally, 2x1 rectangles);
each active plaquette's one updated link absorbs the change, theta_mu(x) += s (P' - P) with
s = +1 (mu = 0) or -1 (mu = 1). Loops are gauge invariant, and the update adds a gauge-invariant
angle to a link, so the layer commutes with gauge transformations exactly: log q is gauge
invariant. The Jacobian is triangular: log det = sum over active plaquettes of log f'(P).
``U1FlowModel``: a uniform (Haar) prior on links pushed through the couplings.
"""

from __future__ import annotations

import math

import torch
from lattgen_flows import ConvNet, LatticeBijection, LatticeFlowModel, circular_rq_spline

from lattgen import Bijection, Composition, ConfigError, Lattice, LatticeError, wrap_angle

from .action import plaquette_angles, shift
from .masks import PATTERN, check_tiles, coupling_masks


def loop_features(theta: torch.Tensor, masks: dict[str, torch.Tensor], rectangles: bool) -> torch.Tensor:
    """(batch, 2 or 6, L1, L2): cos and sin of each frozen loop (0 at loops that are not frozen)."""
    p = plaquette_angles(theta)
    loops = [(p, masks["frozen_plaquette"])]
    if rectangles:
        loops += [(p + shift(p, 0), masks["frozen_rect1"]), (p + shift(p, 1), masks["frozen_rect2"])]
    feats = []
    for angle, frozen in loops:
        m = frozen.to(theta.dtype)
        feats += [torch.cos(angle) * m, torch.sin(angle) * m]
    return torch.stack(feats, dim=1)


class PlaquetteCoupling(LatticeBijection):
    """One gauge-equivariant coupling (mu, offset): splines of active plaquettes given frozen loops."""

    def __init__(self, lattice: Lattice, mu: int = 0, offset: int = 0, hidden=(16, 16), kernel_size: int = 3,
                 activation: str = "tanh", bins: int = 8, rectangles: bool = True):
        check_tiles(lattice)
        super().__init__(lattice)
        self.mu, self.offset, self.bins, self.rectangles = int(mu), int(offset), int(bins), bool(rectangles)
        self.sign = 1.0 if self.mu == 0 else -1.0
        self.net = ConvNet(2, 6 if rectangles else 2, 3 * self.bins + 1, hidden, kernel_size, activation)
        self.build_buffers(lattice, torch.device("cpu"), torch.get_default_dtype())

    def build_buffers(self, lattice, device, dtype):
        check_tiles(lattice)
        for name, mask in coupling_masks(lattice, self.mu, self.offset, device).items():
            self.register_buffer(f"mask_{name}", mask, persistent=False)

    def check_input(self, theta: torch.Tensor) -> None:
        if tuple(theta.shape[1:]) != (2, *self.lattice.shape):
            raise LatticeError(f"{type(self).__name__} is set up for links (batch, 2, {', '.join(map(str, self.lattice.shape))}) "
                               f"but got a field of shape {tuple(theta.shape)}")

    def _masks(self) -> dict[str, torch.Tensor]:
        return {k[5:]: v for k, v in self.named_buffers() if k.startswith("mask_")}

    def _transform(self, theta: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(theta)
        masks = self._masks()
        params = self.net(loop_features(theta, masks, self.rectangles))  # (batch, 3K+1, L1, L2)
        active = masks["active"]
        raw = params.permute(0, 2, 3, 1)[:, active]  # (batch, n_active, 3K+1)
        k = self.bins
        p = wrap_angle(plaquette_angles(theta)[:, active])
        p_new, log_jac = circular_rq_spline(p, raw[..., :k], raw[..., k:2 * k], raw[..., 2 * k:3 * k],
                                            inverse=inverse, shift=raw[..., 3 * k])
        delta = torch.zeros_like(theta[:, 0])
        delta[:, active] = self.sign * (p_new - p)
        out = theta.clone()
        out[:, self.mu] = wrap_angle(theta[:, self.mu] + delta)
        return out, log_jac.sum(-1)

    def forward_and_log_det(self, z):
        return self._transform(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._transform(phi, inverse=True)


class U1FlowModel(LatticeFlowModel):
    """Uniform prior on the links (the Haar measure, log r = -N log 2 pi) pushed through ``flow``;
    path gradients and ``relattice`` as every lattice flow (``LatticeFlowModel``)."""

    def __init__(self, lattice: Lattice, flow: Bijection, path_gradient: bool = False):
        super().__init__(lattice, flow, path_gradient)
        self.shape = (2, *lattice.shape)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full((z.shape[0],), -math.prod(self.shape) * math.log(2 * math.pi), dtype=z.dtype,
                          device=z.device)

    def sample_latent(self, n, generator=None):
        u = torch.rand((n, *self.shape), generator=generator, device=self.device, dtype=self.dtype)
        return wrap_angle(math.pi - 2 * math.pi * u)

    def relattice(self, lattice: Lattice) -> U1FlowModel:
        """The same weights on another lattice (masks rebuilt; both extents multiples of 4)."""
        super().relattice(lattice)
        self.shape = (2, *lattice.shape)
        return self


def make_u1_equivariant(action, n_layers: int = 24, hidden=(16, 16), kernel_size: int = 3,
                        activation: str = "tanh", bins: int = 8, rectangles: bool = True,
                        path_gradient: bool = False) -> U1FlowModel:
    """``n_layers`` couplings cycling through the 8 (mu, offset) masks, uniform prior."""
    check_tiles(action.lattice, "model u1_equivariant")
    layers = plaquette_couplings(action.lattice, n_layers, hidden, kernel_size, activation, bins, rectangles)
    return U1FlowModel(action.lattice, Composition(layers), path_gradient)


def plaquette_couplings(lattice: Lattice, n_layers: int, hidden, kernel_size: int, activation: str, bins: int,
                        rectangles: bool) -> list[PlaquetteCoupling]:
    """``n_layers`` couplings cycling through the 8 (mu, offset) masks of ``PATTERN``."""
    return [PlaquetteCoupling(lattice, mu, off, hidden, kernel_size, activation, bins, rectangles)
            for mu, off in (PATTERN[i % len(PATTERN)] for i in range(n_layers))]


def make_u1_tree(action, kappa: float | None = None, n_layers: int = 0, hidden=(16, 16), kernel_size: int = 3,
                 activation: str = "tanh", bins: int = 8, rectangles: bool = True,
                 path_gradient: bool = False) -> U1FlowModel:
    """The dual-tree plaquette layer (von Mises kappa, default the action's beta) on a uniform prior,
    then ``n_layers`` gauge-equivariant couplings (0: none; they need extents that are multiples of 4)."""
    from .plaquette_tree import PlaquetteTree
    from .von_mises_map import KAPPA_MAX

    lattice = action.lattice
    if kappa is None and not action.beta < KAPPA_MAX:
        raise ConfigError(f"model.kappa: u1_tree starts kappa at beta = {action.beta:g}, beyond its range "
                          f"(0, {KAPPA_MAX:g}); set model.kappa below {KAPPA_MAX:g}")
    if n_layers:
        check_tiles(lattice, "model u1_tree with n_layers > 0")
    layers = [PlaquetteTree(lattice, action.beta if kappa is None else kappa),
              *plaquette_couplings(lattice, n_layers, hidden, kernel_size, activation, bins, rectangles)]
    return U1FlowModel(lattice, Composition(layers), path_gradient)
