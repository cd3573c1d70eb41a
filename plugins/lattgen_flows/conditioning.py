"""Conditioning flows on an action's couplings: the couplings reach every coupling network.

A ``CouplingContext`` holds the normalised couplings of the configurations being transformed
(each in [-1, 1] over the trained range, ``ConditionalModel.normalised``): one row (the model's
current point, broadcast over the batch) or one row per configuration while a model samples
with drawn couplings. ``WithCouplings`` feeds them to a conditioner as extra constant input
channels; ``CouplingScale`` rescales the whole field by e^{s(c)} (a learnable function of the
couplings: the field's width changes fast across a phase transition); ``KineticModulation``
makes a Gaussian layer's kinetic form 1/G~(p; c) = a e^{da(c)} p_hat^2 + b e^{db(c)} depend on
them (the mass of the Gaussian part changes with the couplings). All are even in phi, so the
Z2-equivariant couplings stay exactly equivariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lattgen import Lattice

from .lattice_layer import LatticeBijection


class CouplingContext:
    """The normalised couplings the conditional layers read: (1, k) (the point) or (batch, k)."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.default = torch.zeros(1, len(self.names), dtype=torch.float64)
        self.value: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return len(self.names)

    def set_point(self, normalised: torch.Tensor) -> None:
        """The row used when no per-configuration couplings are set (shape (1, k))."""
        self.default = normalised.detach().reshape(1, self.k).to(torch.float64).cpu()

    @contextmanager
    def using(self, normalised: torch.Tensor):
        """Per-configuration couplings (batch, k) for the layers called inside the block."""
        previous, self.value = self.value, normalised
        try:
            yield
        finally:
            self.value = previous

    def rows(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """(batch, k) couplings in ``like``'s dtype/device; a batch that is r times the stored one
        (a Z2-symmetrised net runs on cat([x, -x])) gets them repeated r times."""
        v = self.value if self.value is not None else self.default
        v = v.to(device=like.device, dtype=like.dtype)
        if v.shape[0] == batch:
            return v
        if v.shape[0] == 1:
            return v.expand(batch, self.k)
        reps, rest = divmod(batch, v.shape[0])
        if rest:
            raise ValueError(f"couplings for {v.shape[0]} configurations cannot condition a batch of {batch}")
        return v.repeat(reps, 1)


class WithCouplings(nn.Module):
    """A conditioner net with k extra constant input channels: the couplings of each configuration."""

    def __init__(self, net: nn.Module, context: CouplingContext):
        super().__init__()
        self.net = net
        self.context = context

    @property
    def fully_convolutional(self) -> bool:
        return getattr(self.net, "fully_convolutional", False)

    def check_lattice(self, shape) -> None:
        self.net.check_lattice(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.context.rows(x.shape[0], x)
        channels = c.view(*c.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
        return self.net(torch.cat([x, channels], dim=1))


class CouplingScale(LatticeBijection):
    """phi = e^{s(c)} z with s a small net of the couplings (zero at start): log|det| = V s(c)."""

    z2_equivariant = True

    def __init__(self, lattice: Lattice, context: CouplingContext, hidden: int = 16):
        super().__init__(lattice)
        self.context = context
        self.net = nn.Sequential(nn.Linear(context.k, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _log_scale(self, x: torch.Tensor) -> torch.Tensor:
        c = self.context.rows(x.shape[0], x)
        return self.net(c).squeeze(-1)

    def _map(self, x: torch.Tensor, sign: float):
        self.check_input(x)
        s = sign * self._log_scale(x)
        y = x * torch.exp(s).view(-1, *([1] * (x.dim() - 1)))
        return y, s * self.lattice.volume

    def forward_and_log_det(self, z):
        return self._map(z, 1.0)

    def inverse_and_log_det(self, phi):
        return self._map(phi, -1.0)


class KineticModulation(nn.Module):
    """(da, db)(c): the coupling dependence of a Gaussian layer's kinetic form, a small net of c.

    A kinetic layer with this modulation has 1/G~(p; c) = a e^{da(c)} p_hat^2 + b e^{db(c)}: a
    linear map of z for every c (exact log-det sum_p log G~(p; c) / 2 per configuration). The
    last layer starts at zero, so at initialisation the spectrum is the unconditional one at
    every coupling. ``forward(x)``: (n, 2) float64 for the fields x, n = 1 when they share one
    point (one spectrum for the batch), else n = batch.
    """

    def __init__(self, context: CouplingContext, hidden: int = 16):
        super().__init__()
        self.context = context
        self.net = nn.Sequential(nn.Linear(context.k, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context
        shared = ctx.value is None or ctx.value.shape[0] == 1
        w = self.net[0].weight
        c = (ctx.value if ctx.value is not None else ctx.default) if shared else ctx.rows(x.shape[0], x)
        return self.net(c.to(device=w.device, dtype=w.dtype)).double()


def modulate_gaussian_layers(flow: nn.Module, context: CouplingContext, hidden: int = 16) -> int:
    """Give every Gaussian layer of ``flow`` with a kinetic form (a ``modulation`` attribute that
    is None) its own ``KineticModulation``; the number of layers modulated."""
    layers = [m for m in flow.modules() if hasattr(m, "modulation") and m.modulation is None
              and getattr(m, "spectrum", "kinetic") == "kinetic"]
    for m in layers:
        m.modulation = KineticModulation(context, hidden)
    return len(layers)
