"""Causal (masked) convolutions on a periodic lattice, in raster order, any dimension.

PixelCNN (van den Oord et al., arXiv 1606.05328) masks a convolution kernel so that the output at
a pixel sees only pixels earlier in raster order; a type-A mask (first layer) excludes the pixel
itself, type-B masks (later layers) include it, so the stack's output at site i depends on the
input at sites j < i only. With zero padding, the mask is the same at every pixel. On a periodic
lattice it cannot be: the neighbour x + o wraps around the boundary, and whether it comes before
x in raster order depends on x. Example (L x L, raster index i = L x_0 + x_1): the neighbour
above, o = (-1, 0), is earlier everywhere except on row 0, where it wraps to row L - 1 (later);
the neighbour below, o = (+1, 0), is later everywhere except on row L - 1, where it wraps to row 0
(earlier, and a real nearest neighbour of the periodic action, which a standard PixelCNN would
never see).

So the mask here is per site: with rank(j) the raster index of site j and n(o, i) the periodic
neighbour of site i at offset o,

    y_i = b + sum_o M_o(i) W_o x_{n(o, i)},   M_o(i) = [n(o, i) <  i]  (strict, type A)
                                                       [n(o, i) <= i]  (inclusive, type B).

Weights W_o stay shared by all sites (a convolution); only the mask varies. A strict first layer
followed by inclusive layers makes output i a function of input sites j < i only (by induction:
hidden unit j <= i depends on inputs k < j <= i), so the Jacobian of an autoregressive transform
built on it is triangular in raster order (tested with autograd). This is the lattice form of
the autoregressive networks of Wu, Wang, Zhang (arXiv 1809.10606) and Białas et al.
(arXiv 2111.10189), with periodic neighbours that are earlier in raster order included.

Two ways to evaluate:

* ``forward``: all sites in one parallel pass (gather the K = k^d neighbours of every site,
  mask, contract): used by log q(phi), which is therefore one network pass.
* ``forward_site``: the output at one site i from cached columns of the previous layer at the
  sites it sees (all earlier, or i itself for inclusive layers). A hidden unit at site j depends
  on inputs at sites before j only, so once computed during sequential sampling it never
  changes: caching the columns turns V full passes into V single-site passes (the "fast"
  generation of PixelCNN++-style caching, Ramachandran et al., arXiv 1704.06001).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from lattgen import ConfigError, Lattice


def check_kernel_size(kernel_size: int) -> None:
    """Raise ConfigError unless kernel_size is odd and >= 3 (a centred stencil with neighbours)."""
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ConfigError(
            f"model.kernel_size: must be an odd integer >= 3 (a centred stencil), got {kernel_size}"
        )


def neighbour_table(lattice: Lattice, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets o in {-r..r}^d (r = (k-1)/2), shape (K, d), and periodic neighbours n(o, i), (K, V).

    Sites are numbered in raster (row-major, C) order, the order of ``phi.reshape(batch, V)``.
    """
    r = kernel_size // 2
    offsets = torch.tensor(list(itertools.product(range(-r, r + 1), repeat=lattice.ndim)))
    coords = lattice.coordinates().reshape(-1, lattice.ndim)  # (V, d), raster order
    shape = torch.tensor(lattice.shape)
    strides = torch.tensor([math.prod(lattice.shape[mu + 1:]) for mu in range(lattice.ndim)])
    moved = (coords[None, :, :] + offsets[:, None, :]) % shape  # (K, V, d)
    return offsets, (moved * strides).sum(-1)


def causal_mask(neighbours: torch.Tensor, strict: bool) -> torch.Tensor:
    """M_o(i) = [n(o, i) < i] (strict) or [n(o, i) <= i] (inclusive), boolean (K, V)."""
    site = torch.arange(neighbours.shape[1])[None, :]
    return neighbours < site if strict else neighbours <= site


class MaskedLocalConv(nn.Module):
    """Periodic convolution with a per-site causal mask: (B, c_in, V) -> (B, c_out, V).

    See the module docstring for the equation. ``nbr`` and ``mask`` are buffers (they follow
    ``.to(device, dtype)``); ``forward_site`` uses the same weights on cached columns.
    """

    def __init__(self, lattice: Lattice, c_in: int, c_out: int, kernel_size: int, strict: bool):
        super().__init__()
        check_kernel_size(kernel_size)
        _, nbr = neighbour_table(lattice, kernel_size)
        mask = causal_mask(nbr, strict)
        self.strict = strict
        self.c_in, self.c_out = c_in, c_out
        self.register_buffer("mask", mask.to(torch.get_default_dtype()), persistent=False)
        # neighbours with the masked-out ones pointing at an appended zero column (index V)
        self.register_buffer("nbr_or_zero", torch.where(mask, nbr, nbr.shape[1]), persistent=False)
        k = nbr.shape[0]
        # per site: the offsets it sees (padded with 0, count in site_count) and their sources
        visible = [torch.nonzero(mask[:, i]).flatten() for i in range(nbr.shape[1])]
        padded = torch.zeros(nbr.shape[1], k, dtype=torch.long)
        for i, v in enumerate(visible):
            padded[i, : v.numel()] = v
        self.register_buffer("site_offsets", padded, persistent=False)
        self.site_count = [int(v.numel()) for v in visible]
        self.site_sources = [[int(nbr[o, i]) for o in v] for i, v in enumerate(visible)]
        self.weight = nn.Parameter(torch.empty(c_out, c_in, k))
        self.bias = nn.Parameter(torch.empty(c_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init with fan-in = c_in x (average number of visible offsets), as nn.Conv does."""
        fan_in = self.c_in * max(1.0, float(self.mask.sum(0).mean()))
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All sites at once: x (B, c_in, V) -> (B, c_out, V)."""
        padded = torch.nn.functional.pad(x, (0, 1))  # (B, c_in, V + 1), last column zero
        gathered = padded[:, :, self.nbr_or_zero]  # (B, c_in, K, V), masked entries zero
        return torch.einsum("bckv,ock->bov", gathered, self.weight) + self.bias[:, None]

    def forward_site(self, columns: Sequence[torch.Tensor], i: int, batch: int) -> torch.Tensor:
        """Output at site i, (batch, c_out), from ``columns[j]`` = input column (batch, c_in) of site j.

        Only the columns of the sites i sees are read (j < i, or j <= i when inclusive), so the
        caller may pass a list holding just those sites computed so far.
        """
        count = self.site_count[i]
        if count == 0:  # nothing earlier (site 0 of a strict layer): the bias alone
            return self.bias.expand(batch, -1)
        x = torch.stack([columns[j] for j in self.site_sources[i]], dim=-1)  # (B, c_in, n)
        w = self.weight.index_select(2, self.site_offsets[i, :count])  # (c_out, c_in, n)
        return torch.einsum("bcn,ocn->bo", x, w) + self.bias


class CausalNet(nn.Module):
    """Masked convolutional net: inputs (B, c_in, V) -> per-site outputs (B, c_out, V), causal.

    Layer 0 is strict, the others inclusive, activations between (none after the last). The
    last layer starts at zero, so a model built on the net starts from its base distribution.
    """

    def __init__(
        self,
        lattice: Lattice,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int],
        kernel_size: int,
        activation: type[nn.Module] = nn.Tanh,
    ):
        super().__init__()
        widths = [in_channels, *hidden, out_channels]
        self.layers = nn.ModuleList(
            MaskedLocalConv(lattice, a, b, kernel_size, strict=(n == 0))
            for n, (a, b) in enumerate(itertools.pairwise(widths))
        )
        self.activation = activation()
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One parallel pass over all sites."""
        for n, layer in enumerate(self.layers):
            x = layer(x)
            if n < len(self.layers) - 1:
                x = self.activation(x)
        return x

    def new_cache(self) -> list[list[torch.Tensor]]:
        """Empty per-layer column caches for sequential evaluation (index = layer input)."""
        return [[] for _ in self.layers]

    def forward_site(self, cache: list[list[torch.Tensor]], i: int, batch: int) -> torch.Tensor:
        """Output at site i (batch, c_out); appends site i's hidden columns to the caches.

        ``cache[0]`` must hold the input columns of sites 0..i-1 (the caller appends site i's
        input after generating it); ``cache[n]``, n >= 1, hold layer n-1's outputs at sites
        0..i-1 and receive site i's here, before layer n (inclusive) reads them.
        """
        out = self.layers[0].forward_site(cache[0], i, batch)
        for n in range(1, len(self.layers)):
            cache[n].append(self.activation(out))
            out = self.layers[n].forward_site(cache[n], i, batch)
        return out
