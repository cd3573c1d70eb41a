"""``PlaquetteTree``: the exact trivialising layer of 2D U(1), up to one plaquette.

In two dimensions the Wilson measure prod_P exp(beta cos theta_P) makes the plaquettes
independent but for one global constraint, prod_P U_P = 1 on the torus (docs/physics.md, 2D U(1)).
The layer walks a spanning tree of the dual lattice (``dual_tree``) leaf first and maps each
plaquette but the root by the von Mises map h (``von_mises_map``: uniform -> von Mises(0, kappa)),
the change carried by the link to its parent: theta_l += s (h(P) - P). Its parent is still
untouched, so P is uniform and independent of everything done so far (a uniform angle shifted
by anything stays uniform): on Haar-random links the output's non-root plaquettes are exactly
independent von Mises(kappa), and with kappa = beta the IMH weight exp(-S) / q is
exp(beta cos theta_root) times a constant, whatever the volume (Kanwar et al., arXiv 2003.06413,
note that 2D plaquettes are nearly independent; the tree makes that exact).

Exactly gauge equivariant (plaquettes are gauge invariant; a link gets a gauge-invariant angle
added); triangular Jacobian, log det = sum over non-root plaquettes of log h'(P) = -log g(h(P)).
Not translation equivariant (the root is the plaquette at the origin).
"""

from __future__ import annotations

import math

import torch
from lattgen_flows import LatticeBijection

from lattgen import Lattice, LatticeError, wrap_angle

from .dual_tree import dual_tree_levels
from .von_mises_map import KAPPA_MAX, VonMisesMap, n_terms

BOUNDARY_SIGNS = (1.0, 1.0, -1.0, -1.0)


def kappa_range(kappa: float) -> tuple[float, float]:
    """The interval training may move kappa in: [kappa / 1.5, min(1.5 kappa + 2, KAPPA_MAX)]."""
    if not (math.isfinite(kappa) and 0 < kappa < KAPPA_MAX):
        raise ValueError(f"kappa must be a finite number in (0, {KAPPA_MAX:g}), got {kappa}")
    return kappa / 1.5, min(1.5 * kappa + 2.0, KAPPA_MAX)


class PlaquetteTree(LatticeBijection):
    """Leaf-first walk of a dual spanning tree: every non-root plaquette through h (von Mises kappa)."""

    fully_convolutional = False  # the root sits at the origin: not translation equivariant

    def __init__(self, lattice: Lattice, kappa: float = 1.0):
        if lattice.ndim != 2:
            raise LatticeError(f"the u1 plaquette tree needs a 2D lattice; got {list(lattice.shape)}")
        kappa = float(kappa)
        self.kappa_range = kappa_range(kappa)
        super().__init__(lattice)
        self.terms = n_terms(self.kappa_range[1])
        lo, hi = self.kappa_range
        #: kappa = lo + (hi - lo) sigmoid(logit0 + kappa_shift): the shift is trained with the rest and
        #: starts at 0, so the start is ``kappa`` to float64 rounding in any parameter dtype
        self.logit0 = math.log((kappa - lo) / (hi - kappa))
        self.kappa_shift = torch.nn.Parameter(torch.zeros(()))
        self.build_buffers(lattice, torch.device("cpu"), torch.get_default_dtype())

    def kappa(self) -> torch.Tensor:
        """The von Mises concentration now (0-dim, float64)."""
        lo, hi = self.kappa_range
        return lo + (hi - lo) * torch.sigmoid(self.kappa_shift.to(torch.float64) + self.logit0)

    def extra_repr(self) -> str:
        return f"kappa={float(self.kappa().detach()):.6g}, range=[{self.kappa_range[0]:g}, {self.kappa_range[1]:g}]"

    def build_buffers(self, lattice, device, dtype):
        levels = dual_tree_levels(lattice.shape, device)
        self.n_levels = len(levels)
        for i, level in enumerate(levels):
            for field in ("links", "signs", "boundary"):
                self.register_buffer(f"level{i}_{field}", getattr(level, field), persistent=False)
        self.register_buffer("boundary_signs", torch.tensor(BOUNDARY_SIGNS, dtype=torch.float64, device=device),
                             persistent=False)

    def _levels(self, inverse: bool):
        order = range(self.n_levels - 1, -1, -1) if inverse else range(self.n_levels)
        for i in order:
            yield (getattr(self, f"level{i}_{field}") for field in ("links", "signs", "boundary"))

    def check_input(self, theta: torch.Tensor) -> None:
        if tuple(theta.shape[1:]) != (2, *self.lattice.shape):
            raise LatticeError(f"{type(self).__name__} is set up for links (batch, 2, {', '.join(map(str, self.lattice.shape))}) "
                               f"but got a field of shape {tuple(theta.shape)}")

    def _walk(self, theta: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(theta)
        dtype = theta.dtype
        flat = theta.to(torch.float64).reshape(theta.shape[0], -1)
        log_det = torch.zeros(theta.shape[0], dtype=torch.float64, device=theta.device)
        signs4 = self.boundary_signs.to(torch.float64)
        vm = VonMisesMap(self.kappa(), self.terms)
        for links, signs, boundary in self._levels(inverse):
            current = wrap_angle(flat[:, boundary] @ signs4)  # (batch, n): the plaquettes now
            if inverse:
                new = vm.inverse(current)
                log_det = log_det + vm.log_g(current).sum(-1)
            else:
                new = vm.forward(current)
                log_det = log_det - vm.log_g(new).sum(-1)
            flat = flat.index_add(1, links, signs.to(torch.float64) * (new - current))
        return wrap_angle(flat).reshape(theta.shape).to(dtype), log_det.to(dtype)

    def forward_and_log_det(self, z):
        return self._walk(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._walk(phi, inverse=True)
