"""Multigrid flow: a coarse field on the even sublattice from a flow, interpolated to L and refined.

The lattice's *coarse sites* are those with every coordinate even: an L/2 lattice (decimation
by 2, the renormalisation-group blocking of NeuralRG, Li & Wang arXiv 1802.02840, and of
multigrid solvers). Generation z -> phi at one level, on a lattice with even extents:

1. ``OnCoarse(inner)``: the coarse sites of z are mapped by ``inner``, a flow on the L/2
   lattice: recursively another level, and at the coarsest level a ``DecimatedFreeField``
   (the Gaussian field's propagator decimated to that lattice) followed by couplings.
2. ``GaussianProlong``: the fine sites are drawn from the Gaussian conditional distribution
   given the coarse field: f = A c + B eta, with A c the Wiener (kriging) interpolation of the
   coarse field and B B^T the conditional covariance, both diagonal in the coarse lattice's
   momenta (2^d x 2^d blocks, Cholesky per momentum). log|det| = sum_q log det B(q).
3. Refinement: Z2 spline couplings on the fine sites only (``sites = "fine"``), conditioned on
   the coarse field and the other fine colour; the coarse sites are left alone, so the inverse
   can read the coarse field back.
4. Smoothing: ordinary checkerboard couplings on every site (post-smoothing of multigrid).

Steps 1-2 with identity couplings produce exactly the Gaussian field of propagator
1/(a p_hat^2 + b), so the model starts where the single-scale free-field layer starts (exact
on the free field, acceptance 1) and adds couplings at every scale. Each Gaussian layer keeps
its own learnable (a, b). The inverse runs the steps backwards; every piece is exactly Z2
equivariant and fully convolutional, so a model trained at L runs at 2L (docs/flows.md).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from lattgen import Bijection, Composition, ConfigError, Lattice, LatticeError, apply_circulant

from .lattice_layer import LatticeBijection, relattice_tree


def coarse_lattice(lattice: Lattice) -> Lattice:
    """The L/2 lattice of the coarse sites (every coordinate even); LatticeError for odd extents."""
    if any(s % 2 for s in lattice.shape) or any(s < 4 for s in lattice.shape):
        raise LatticeError(
            f"a multigrid level needs even extents >= 4 (coarse sublattice L/2 >= 2), got lattice "
            f"{list(lattice.shape)}; use fewer model.levels or a lattice divisible by 2^levels"
        )
    return Lattice([s // 2 for s in lattice.shape])


def coarse_slices(ndim: int) -> tuple[slice, ...]:
    """Index of the coarse sites in a field of shape (batch, *lattice)."""
    return (slice(None),) + (slice(None, None, 2),) * ndim


def decimate_propagator(propagator: torch.Tensor, ndim: int | None = None) -> torch.Tensor:
    """G~ of the coarse-site field: G_c(m) = 2^-d sum_{n in {0,1}^d} G~(m + n L/2) (aliasing).

    The lattice axes are the last ``ndim`` (default: all); leading axes are a batch of spectra."""
    g = propagator
    ndim = g.dim() if ndim is None else ndim
    for axis in range(g.dim() - ndim, g.dim()):
        n = g.shape[axis]
        g = g.reshape(*g.shape[:axis], 2, n // 2, *g.shape[axis + 1:]).mean(axis)
    return g


class OnCoarse(LatticeBijection):
    """Apply ``inner`` (a bijection on the L/2 lattice) to the coarse sites; the fine sites pass through."""

    def __init__(self, lattice: Lattice, inner: Bijection):
        super().__init__(lattice)
        self.coarse = coarse_lattice(lattice)
        self.inner = inner
        self.slices = coarse_slices(lattice.ndim)

    @property
    def z2_equivariant(self) -> bool:  # type: ignore[override]
        return self.inner.z2_equivariant

    @property
    def fully_convolutional(self) -> bool:  # type: ignore[override]
        return all(m.fully_convolutional for m in self.inner.modules() if isinstance(m, Bijection))

    def build_buffers(self, lattice, device, dtype):
        """Move the inner flow to the new coarse lattice."""
        self.coarse = coarse_lattice(lattice)
        relattice_tree(self.inner, self.coarse)

    def _map(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        c = x[self.slices]
        c, log_det = (self.inner.inverse_and_log_det if inverse else self.inner.forward_and_log_det)(c)
        out = x.clone()
        out[self.slices] = c
        return out, log_det

    def forward_and_log_det(self, z):
        return self._map(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._map(phi, inverse=True)


def polyphase(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """(batch, *L) -> (batch, 2^d, *L/2): component o = sum_mu o_mu 2^(d-1-mu) holds x(2y + o); 0 = coarse."""
    b, shape = x.shape[0], x.shape[1:]
    split = [v for n in shape for v in (n // 2, 2)]
    perm = [0] + [2 + 2 * mu for mu in range(ndim)] + [1 + 2 * mu for mu in range(ndim)]
    return x.reshape(b, *split).permute(*perm).reshape(b, 2**ndim, *(n // 2 for n in shape))


def unpolyphase(p: torch.Tensor, ndim: int) -> torch.Tensor:
    """Inverse of ``polyphase``: (batch, 2^d, *N) -> (batch, *2N)."""
    b, coarse = p.shape[0], p.shape[2:]
    x = p.reshape(b, *([2] * ndim), *coarse)
    perm = [0] + [v for mu in range(ndim) for v in (1 + ndim + mu, 1 + mu)]
    return x.permute(*perm).reshape(b, *(2 * n for n in coarse))


def alias_phases(lattice: Lattice) -> torch.Tensor:
    """U[m, o, n] = exp(i k . o), k = 2 pi (m + n N) / L: the fine momenta k aliased onto coarse m.

    Shape (*N, 2^d, 2^d), complex128; rows o are polyphase offsets, columns n alias classes,
    both ordered as in ``polyphase``.
    """
    d = lattice.ndim
    offsets = torch.tensor(list(itertools.product((0, 1), repeat=d)), dtype=torch.float64)  # (2^d, d)
    coarse = [n // 2 for n in lattice.shape]
    m = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in coarse], indexing="ij"), -1)
    size = torch.tensor(lattice.shape, dtype=torch.float64)
    k = 2 * math.pi * (m.unsqueeze(-2) + offsets * (size / 2)) / size  # (*N, 2^d [n], d)
    phase = torch.einsum("od,...nd->...on", offsets, k)
    return torch.polar(torch.ones_like(phase), phase)


def alias_components(g: torch.Tensor, ndim: int | None = None) -> torch.Tensor:
    """G~ (*B, *L) -> (*B, 2^d, *N): G~(m + n N) for every alias class n (n ordered like
    ``polyphase``'s o); the lattice axes are the last ``ndim`` (default: all)."""
    d = g.dim() if ndim is None else ndim
    lead, shape = g.shape[:g.dim() - d], g.shape[g.dim() - d:]
    nb = len(lead)
    blocks = g.reshape(*lead, *[v for n in shape for v in (2, n // 2)])
    perm = list(range(nb)) + [nb + 2 * mu for mu in range(d)] + [nb + 2 * mu + 1 for mu in range(d)]
    return blocks.permute(*perm).reshape(*lead, 2**d, *(n // 2 for n in shape))


def conditional_gaussian(g: torch.Tensor, phases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation A(q) and Cholesky factor B(q) of the fine polyphase components given the coarse one.

    The polyphase covariance per coarse momentum q is M(q) = 2^-d U diag(G~(k_n)) U^H; then
    A = M_fc / M_cc and B B^H = M_ff - M_fc M_cf / M_cc (Schur complement). ``g``: G~ on the
    level's lattice (float64), optionally with leading batch axes (*B, *L), ``phases``:
    ``alias_phases`` of it. A: (*B, *N, F), B: (*B, *N, F, F).
    """
    d = phases.dim() - 2
    gn = alias_components(g, d).movedim(-d - 1, -1).to(phases.dtype)  # (*B, *N, 2^d)
    m = (phases * gn.unsqueeze(-2)) @ phases.mH / phases.shape[-1]
    m_cc = m[..., 0, 0].real
    m_fc = m[..., 1:, 0]
    a = m_fc / m_cc.unsqueeze(-1)
    schur = m[..., 1:, 1:] - (m_fc.unsqueeze(-1) * m_fc.conj().unsqueeze(-2)) / m_cc[..., None, None]
    schur = 0.5 * (schur + schur.mH)  # exactly Hermitian for the Cholesky
    # cholesky_ex: no host sync for the error check on CUDA (the Schur complement is positive definite)
    return a, torch.linalg.cholesky_ex(schur).L


def decimated_propagator(lattice: Lattice, depth: int, log_a: torch.Tensor, log_b: torch.Tensor,
                         p_hat2_top: torch.Tensor) -> torch.Tensor:
    """G~ on ``lattice`` of the kinetic field 1/(a p_hat^2 + b) defined on the lattice 2^depth finer.

    ``log_a``, ``log_b``: scalars (G~ of shape *L) or (n,) tensors (n spectra, shape (n, *L))."""
    ndim = p_hat2_top.dim()
    shape = log_a.shape + (1,) * ndim
    g = 1.0 / (torch.exp(log_a).reshape(shape) * p_hat2_top + torch.exp(log_b).reshape(shape))
    for _ in range(depth):
        g = decimate_propagator(g, ndim)
    return g


class KineticLayer(LatticeBijection):
    """A Gaussian layer of a multigrid level: learnable (a, b) of 1/G~ = a p_hat^2 + b on the finest lattice.

    ``depth``: how many times the finest lattice was halved to reach this layer's lattice; the
    layer's spectrum is G~ decimated ``depth`` times (``decimated_propagator``), in float64.
    With a ``modulation`` (``conditioning.KineticModulation``, set by a conditional model) the
    form depends on each configuration's couplings c: log a(c) = log a + da(c), log b(c) =
    log b + db(c); the map stays linear in z for every c, so it is exact for every c.
    """

    z2_equivariant = True

    def __init__(self, lattice: Lattice, a: float = 1.0, b: float = 1.0, depth: int = 0):
        super().__init__(lattice)
        if not (a > 0 and b > 0):
            raise ConfigError(f"the kinetic form needs a > 0 and b > 0, got a={a}, b={b}")
        self.depth = int(depth)
        self.register_buffer("log_a0", torch.tensor(math.log(a), dtype=torch.float64))
        self.register_buffer("log_b0", torch.tensor(math.log(b), dtype=torch.float64))
        self.delta_log_a = nn.Parameter(torch.zeros(()))
        self.delta_log_b = nn.Parameter(torch.zeros(()))
        self.modulation: nn.Module | None = None
        self.build_buffers(lattice, torch.device("cpu"), torch.get_default_dtype())

    def build_buffers(self, lattice, device, dtype):
        """hat p^2 on the finest lattice (2^depth times this one), float64."""
        top = Lattice([n * 2**self.depth for n in lattice.shape])
        self.register_buffer("p_hat2_top", top.p_hat_squared(device=device, dtype=torch.float64), persistent=False)

    def propagator(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """G~(p) on this layer's lattice, float64: shape *L, or (n, *L) for the fields ``x`` of a
        modulated layer (n = 1 when they share one point, else one spectrum per field)."""
        log_a = self.log_a0 + self.delta_log_a.double()
        log_b = self.log_b0 + self.delta_log_b.double()
        if self.modulation is not None and x is not None:
            shift = self.modulation(x)  # (n, 2) float64
            log_a, log_b = log_a + shift[:, 0], log_b + shift[:, 1]
        return decimated_propagator(self.lattice, self.depth, log_a, log_b, self.p_hat2_top)

    def extra_repr(self) -> str:
        return f"depth={self.depth}"


class DecimatedFreeField(KineticLayer):
    """phi = G~^(1/2) z by FFT with G~ the kinetic propagator decimated ``depth`` times (coarsest level)."""

    def _map(self, x: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        log_g = torch.log(self.propagator(x))  # *L or (n, *L)
        y = apply_circulant(x, torch.exp(0.5 * sign * log_g).to(x.dtype), self.lattice)
        log_det = 0.5 * sign * log_g.reshape(-1, self.lattice.volume).sum(-1)  # (1,) or (n,)
        return y, log_det.to(x.dtype).expand(x.shape[0])

    def forward_and_log_det(self, z):
        return self._map(z, 1.0)

    def inverse_and_log_det(self, phi):
        return self._map(phi, -1.0)


class GaussianProlong(KineticLayer):
    """Fine sites from the Gaussian conditional given the coarse sites: f~(q) = A(q) c~(q) + B(q) eta~(q).

    Coarse sites unchanged; A, B from ``conditional_gaussian`` of this layer's (decimated)
    kinetic spectrum. log|det d phi/d z| = sum_q sum_i log B_ii(q), the same for every field.
    """

    def build_buffers(self, lattice, device, dtype):
        if not lattice.bipartite:
            raise LatticeError(f"GaussianProlong needs even extents (2^d blocks), got lattice {list(lattice.shape)}")
        super().build_buffers(lattice, device, dtype)
        # complex128 phases are not a buffer: Module.to(float32) would drop their imaginary part
        self._phases: dict[torch.device, torch.Tensor] = {}

    def phases(self) -> torch.Tensor:
        """``alias_phases`` of the lattice on the layer's device (complex128, cached per device)."""
        device = self.p_hat2_top.device
        if device not in self._phases:
            self._phases[device] = alias_phases(self.lattice).to(device)
        return self._phases[device]

    def _factors(self, x: torch.Tensor):
        """A, B (leading axis 1 or one per field) and log|det| ((1,) or (batch,)) for the fields x."""
        dtype = x.dtype
        g = self.propagator(x)
        a, b = conditional_gaussian(g.reshape(-1, *self.lattice.shape), self.phases())
        log_det = torch.log(torch.diagonal(b, dim1=-2, dim2=-1).real).reshape(b.shape[0], -1).sum(-1)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        return a.to(cdtype), b.to(cdtype), log_det.to(dtype)

    def _map(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        d = self.lattice.ndim
        dims = tuple(range(2, 2 + d))
        a, b, log_det = self._factors(x)
        p = polyphase(x, d)
        c_hat = torch.fft.fftn(p[:, :1], dim=dims).movedim(1, -1)  # (batch, *N, 1)
        rest_hat = torch.fft.fftn(p[:, 1:], dim=dims).movedim(1, -1)  # (batch, *N, F)
        if inverse:
            r = (rest_hat - a * c_hat).unsqueeze(-1)
            out_hat = torch.linalg.solve_triangular(b, r, upper=False).squeeze(-1)
        else:
            out_hat = a * c_hat + (b @ rest_hat.unsqueeze(-1)).squeeze(-1)
        fine = torch.fft.ifftn(out_hat.movedim(-1, 1), dim=dims).real
        y = unpolyphase(torch.cat([p[:, :1], fine], dim=1), d)
        return y, (-log_det if inverse else log_det).expand(x.shape[0])

    def forward_and_log_det(self, z):
        return self._map(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._map(phi, inverse=True)


def build_multigrid(
    lattice: Lattice,
    kinetic: tuple[float, float],
    levels: int,
    make_coupling,
    coarse_layers: int,
    refine_layers: int,
    smooth_layers: int,
    depth: int = 0,
    coarse_head=None,
) -> list[Bijection]:
    """The layer stack of one level on ``lattice`` (recursing to the coarser ones).

    ``kinetic``: the (a, b) every Gaussian layer starts from (1/G~ = a p_hat^2 + b on the finest
    lattice); ``make_coupling(lattice, parity, sites)`` builds a coupling; ``depth``: this
    level's number of halvings from the finest lattice; ``coarse_head(lattice)``: layers put
    first at the coarsest level, on its latent field (for example a ``ZeroModeSpline``).
    """
    if levels < 1:
        raise ConfigError(f"model.levels: expected an integer >= 1, got {levels}")
    if levels == 1:
        return [*(coarse_head(lattice) if coarse_head is not None else []),
                DecimatedFreeField(lattice, *kinetic, depth=depth),
                *(make_coupling(lattice, i % 2, "all") for i in range(coarse_layers))]
    inner = build_multigrid(coarse_lattice(lattice), kinetic, levels - 1, make_coupling, coarse_layers,
                            refine_layers, smooth_layers, depth + 1, coarse_head)
    return [
        OnCoarse(lattice, Composition(inner)),
        GaussianProlong(lattice, *kinetic, depth=depth),
        # odd colour first: all of it is fine; then the fine sites of the even colour
        *(make_coupling(lattice, (i + 1) % 2, "fine") for i in range(refine_layers)),
        *(make_coupling(lattice, i % 2, "all") for i in range(smooth_layers)),
    ]


def check_levels(lattice: Lattice, levels: int) -> None:
    """ConfigError naming the lattice when it cannot be halved ``levels - 1`` times (even extents >= 2 at the bottom)."""
    need = 2 ** levels
    if any(s % need for s in lattice.shape) and levels > 1:
        raise LatticeError(
            f"model.levels = {levels} needs every extent divisible by 2^{levels} = {need} (an even "
            f"coarsest lattice), got lattice {list(lattice.shape)}; lower model.levels"
        )
