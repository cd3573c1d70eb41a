"""The cpn_flow of before issue-13 round 2 (cube coordinates, full eigenbasis), kept only for bench/ before/after runs."""


from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from lattgen_cpn.geometry import abs2, neighbour_projector_sum, overlap, shift
from lattgen_flows.circular import MIN_BIN, MIN_DERIVATIVE, SLOPE_ONE
from lattgen_flows.networks import ConvNet
from normflows.utils.splines import rational_quadratic_spline

from lattgen import Bijection, Composition, GenerativeModel, Lattice, LatticeError


def sphere_log_volume(n_comp: int) -> float:
    """log Vol(S^{2N-1}) = log(2 pi^N / (N-1)!)."""
    return math.log(2.0) + n_comp * math.log(math.pi) - math.lgamma(n_comp)


def haar_vectors(n: int, shape: Sequence[int], n_comp: int, *, generator=None, device=None,
                 dtype=torch.complex128) -> torch.Tensor:
    """n configurations of independent Haar unit vectors, shape (n, *shape, N)."""
    z = torch.randn((n, *shape, n_comp), generator=generator, device=device, dtype=dtype)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def simplex_to_cube(s: torch.Tensor) -> torch.Tensor:
    """Stick breaking then CDFs: (..., N) on the simplex -> (..., N-1) in [0, 1], Haar -> uniform.

    w_k = 1 - (1 - u_k)^{N-k} with 1 - u_k = R_k / R_{k-1}, R_k = s_{k+1} + ... + s_N (tail sums of
    positive numbers: no cancellation), evaluated as -expm1((N-k) log(R_k / R_{k-1})).
    """
    n_comp = s.shape[-1]
    tails = torch.flip(torch.cumsum(torch.flip(s, [-1]), -1), [-1])  # R_0 .. R_{N-1}
    log_r = torch.log(tails.clamp_min(torch.finfo(s.dtype).tiny))
    powers = torch.arange(n_comp - 1, 0, -1, device=s.device, dtype=s.dtype)  # N-k
    return (-torch.expm1(powers * (log_r[..., 1:] - log_r[..., :-1]))).clamp(0.0, 1.0)


def cube_to_simplex(w: torch.Tensor) -> torch.Tensor:
    """The inverse of ``simplex_to_cube``: (..., N-1) in [0, 1] -> (..., N) on the simplex."""
    n_comp = w.shape[-1] + 1
    powers = torch.arange(n_comp - 1, 0, -1, device=w.device, dtype=w.dtype)
    log_keep = torch.log1p(-w.clamp(0.0, 1.0)) / powers  # log(1 - u_k)
    log_tails = torch.cumsum(log_keep, -1)  # log R_k, k = 1..N-1 (R_0 = 1)
    tails = torch.exp(torch.cat([torch.zeros_like(log_tails[..., :1]), log_tails], -1))
    parts = tails[..., :-1] * (-torch.expm1(log_keep))  # s_k = R_{k-1} u_k
    return torch.cat([parts, tails[..., -1:]], -1)


def interval_spline(w, raw, bins: int, inverse: bool):
    """RQ spline of [0, 1] per element with raw parameters (..., 3K + 1); zeros give the identity."""
    widths, heights, slopes = raw[..., :bins], raw[..., bins:2 * bins], raw[..., 2 * bins:] + SLOPE_ONE
    return rational_quadratic_spline(w.clamp(0.0, 1.0), widths, heights, slopes, inverse=inverse, left=0.0,
                                     right=1.0, bottom=0.0, top=1.0, min_bin_width=MIN_BIN,
                                     min_bin_height=MIN_BIN, min_derivative=MIN_DERIVATIVE)


class EigenbasisCoupling(Bijection):
    """Transforms |v_k^+ z_x|^2 (eigenbasis of the neighbours' projectors) at one checkerboard colour."""

    def __init__(self, lattice: Lattice, n_comp: int, parity: int = 0, hidden: Sequence[int] = (32, 32),
                 kernel_size: int = 3, bins: int = 8):
        super().__init__()
        if not lattice.bipartite:
            raise LatticeError(f"the CP^(N-1) coupling needs even extents (a checkerboard), got {list(lattice.shape)}")
        self.ndim = lattice.ndim
        self.n_comp = int(n_comp)
        self.parity = int(parity)
        self.bins = int(bins)
        self.n_diag = self.ndim * (self.ndim - 1)  # frozen-frozen diagonal pairs per site
        out = (self.n_comp - 1) * (3 * self.bins + 1)
        self.net = ConvNet(self.ndim, self.n_comp + self.n_diag, out, hidden, kernel_size, "tanh")
        self.register_buffer("mask", lattice.checkerboard(parity, dtype=torch.bool), persistent=False)

    def _rebuild_mask(self, lattice: Lattice) -> None:
        self.mask = lattice.checkerboard(self.parity, device=self.mask.device, dtype=torch.bool)

    def _features_and_basis(self, z: torch.Tensor):
        """(spline parameters (batch, V/2, N-1, 3K+1), eigenvectors (batch, V/2, N, N)) at the updated sites."""
        lat_dims = tuple(range(1, self.ndim + 1))
        m = neighbour_projector_sum(z, self.ndim)[:, self.mask]  # only the updated colour's sites
        evals, vecs = torch.linalg.eigh(m)
        eig_map = torch.zeros((*z.shape[:-1], self.n_comp), dtype=evals.dtype, device=evals.device)
        eig_map[:, self.mask] = evals / (2 * self.ndim)
        feats = [eig_map]
        frozen = (~self.mask).to(evals.dtype)
        for mu in range(self.ndim):
            for nu in range(mu + 1, self.ndim):
                for sign in (1, -1):
                    other = shift(shift(z, mu), nu, sign)
                    feats.append((abs2(overlap(z, other)) * frozen).unsqueeze(-1))
        x = torch.cat(feats, dim=-1).permute(0, self.ndim + 1, *lat_dims)  # (batch, C, *lattice)
        raw = self.net(x).permute(0, *[d + 1 for d in lat_dims], 1)[:, self.mask]
        return raw.reshape(*raw.shape[:-1], self.n_comp - 1, 3 * self.bins + 1), vecs

    def _transform(self, z: torch.Tensor, inverse: bool):
        raw, vecs = self._features_and_basis(z)
        zc = z[:, self.mask]  # (batch, V/2, N)
        c = (vecs.conj().transpose(-1, -2) @ zc.unsqueeze(-1)).squeeze(-1)
        s = abs2(c)
        s = s / s.sum(-1, keepdim=True)
        w_new, log_slope = interval_spline(simplex_to_cube(s), raw, self.bins, inverse)
        s_new = cube_to_simplex(w_new)
        modulus = torch.sqrt(s)
        unit = torch.where(modulus > 0, c / modulus.clamp_min(torch.finfo(s.dtype).tiny), torch.ones_like(c))
        z_new = (vecs @ (unit * torch.sqrt(s_new)).unsqueeze(-1)).squeeze(-1)
        out = z.clone()
        out[:, self.mask] = z_new / torch.linalg.vector_norm(z_new, dim=-1, keepdim=True)
        return out, log_slope.sum(dim=(1, 2))

    def forward_and_log_det(self, z):
        return self._transform(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._transform(phi, inverse=True)


class CPNFlowModel(GenerativeModel):
    """Haar prior on every sphere pushed through eigenbasis couplings; q relative to the Haar (Riemannian) measure."""

    def __init__(self, lattice: Lattice, n_comp: int, n_layers: int = 8, hidden: Sequence[int] = (32, 32),
                 kernel_size: int = 3, bins: int = 8):
        super().__init__(lattice)
        self.n_comp = int(n_comp)
        self.flow = Composition([EigenbasisCoupling(lattice, n_comp, parity=i % 2, hidden=hidden,
                                                    kernel_size=kernel_size, bins=bins) for i in range(n_layers)])
        self.log_volume = lattice.volume * sphere_log_volume(self.n_comp)

    @property
    def complex_dtype(self) -> torch.dtype:
        return torch.complex64 if self.dtype == torch.float32 else torch.complex128

    def relattice(self, lattice: Lattice) -> None:
        """The same weights on another lattice (masks rebuilt)."""
        self.lattice = lattice
        self.log_volume = lattice.volume * sphere_log_volume(self.n_comp)
        for layer in self.flow.layers:
            layer._rebuild_mask(lattice)

    def sample(self, n, generator=None):
        z = haar_vectors(n, self.lattice.shape, self.n_comp, generator=generator, device=self.device,
                         dtype=self.complex_dtype)
        phi, log_det = self.flow.forward_and_log_det(z)
        return phi, -self.log_volume - log_det

    def log_prob(self, phi):
        _z, log_det = self.flow.inverse_and_log_det(phi.to(self.complex_dtype))
        return -self.log_volume + log_det
