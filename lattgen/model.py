"""Generative-model interfaces: ``Bijection`` (a flow layer) and ``GenerativeModel``.

Direction convention (docs/physics.md#conventions): a model maps latent z to field phi.
``forward_and_log_det(z) -> (phi, log|det dphi/dz|)``,
``inverse_and_log_det(phi) -> (z, log|det dz/dphi|)``, and
``log q(phi) = log r(z) - log|det dphi/dz|``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch
from torch import nn

from .lattice import Lattice


class Bijection(nn.Module, abc.ABC):
    """An invertible map z -> phi on fields of shape (batch, *lattice.shape)."""

    #: f(-z) = -f(z) exactly (property-tested where claimed)
    z2_equivariant: bool = False
    #: holds no lattice-shaped tensors, so the same weights act on any lattice size
    fully_convolutional: bool = True
    #: commutes with periodic extension (a tiled input gives the tiled output); False for a layer
    #: that acts on a global quantity normalised by the volume (a zero-mode spline)
    tiling_equivariant: bool = True

    @abc.abstractmethod
    def forward_and_log_det(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi, log|det dphi/dz|) with the log-det of shape (batch,)."""

    @abc.abstractmethod
    def inverse_and_log_det(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log|det dz/dphi|) with the log-det of shape (batch,)."""

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_and_log_det(z)


class Composition(Bijection):
    """Layers applied in order z -> layer[0] -> ... -> layer[-1] -> phi."""

    def __init__(self, layers: Sequence[Bijection]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @property
    def z2_equivariant(self) -> bool:  # type: ignore[override]
        return all(layer.z2_equivariant for layer in self.layers)

    @property
    def fully_convolutional(self) -> bool:  # type: ignore[override]
        return all(layer.fully_convolutional for layer in self.layers)

    @property
    def tiling_equivariant(self) -> bool:  # type: ignore[override]
        return all(layer.tiling_equivariant for layer in self.layers)

    def forward_and_log_det(self, z):
        log_det = torch.zeros(z.shape[0], dtype=z.real.dtype, device=z.device)  # real for complex fields
        for layer in self.layers:
            z, ld = layer.forward_and_log_det(z)
            log_det = log_det + ld
        return z, log_det

    def inverse_and_log_det(self, phi):
        log_det = torch.zeros(phi.shape[0], dtype=phi.real.dtype, device=phi.device)
        for layer in reversed(self.layers):
            phi, ld = layer.inverse_and_log_det(phi)
            log_det = log_det + ld
        return phi, log_det


class GenerativeModel(nn.Module, abc.ABC):
    """A model q(phi) that can sample with its log-density and evaluate log q(phi)."""

    #: log_prob is exact (False: only an unbiased estimate of q is available, e.g. a VAE;
    #: the Metropolis sampler then runs in pseudo-marginal form)
    exact_density: bool = True
    #: needs training configurations from an exact sampler (trained by forward KL / ELBO)
    requires_data: bool = False
    #: q(-phi) = q(phi) exactly (a Z2-symmetric proposal)
    z2_equivariant: bool = False
    #: holds no lattice-shaped tensors, so its state_dict loads at any lattice size
    fully_convolutional: bool = True
    #: its map commutes with periodic extension of the lattice (see Bijection)
    tiling_equivariant: bool = True

    def __init__(self, lattice: Lattice):
        super().__init__()
        self.lattice = lattice

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi, log_q): n configurations and their log-density; keeps gradients."""

    @abc.abstractmethod
    def log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        """log q(phi), shape (batch,)."""

    def data_loss(self, phi: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Loss on training configurations (forward KL: -mean log q); a VAE returns -ELBO.

        ``generator`` drives any randomness of the loss (a VAE's latent draws)."""
        return -self.log_prob(phi).mean()

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.get_default_dtype()


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log r(z) of i.i.d. N(0, 1) sites, summed over the lattice: shape (batch,)."""
    dims = tuple(range(1, z.dim()))
    return -0.5 * (z * z).sum(dims) - 0.5 * math.log(2 * math.pi) * (z[0].numel())


class FlowModel(GenerativeModel):
    """A normalizing flow: standard-normal prior r(z) pushed through a Bijection."""

    def __init__(self, lattice: Lattice, flow: Bijection):
        super().__init__(lattice)
        self.flow = flow

    @property
    def z2_equivariant(self) -> bool:  # type: ignore[override]
        return self.flow.z2_equivariant

    @property
    def fully_convolutional(self) -> bool:  # type: ignore[override]
        return self.flow.fully_convolutional

    @property
    def tiling_equivariant(self) -> bool:  # type: ignore[override]
        return self.flow.tiling_equivariant

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(
            (n, *self.lattice.shape), generator=generator, device=self.device, dtype=self.dtype
        )

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log r(z) of the prior ``sample_latent`` draws from (a subclass with another prior, a
        uniform one on angles for example, overrides both)."""
        return standard_normal_log_prob(z)

    def sample(self, n, generator=None):
        z = self.sample_latent(n, generator)
        phi, log_det = self.flow.forward_and_log_det(z)
        return phi, self.latent_log_prob(z) - log_det

    def log_prob(self, phi):
        z, log_det = self.flow.inverse_and_log_det(phi)
        return self.latent_log_prob(z) + log_det
