"""A U(N)- and gauge-equivariant flow for CP^{N-1}: splines of the leading eigen-directions' weights.

One coupling layer updates the sites x of one checkerboard colour given the other colour (frozen):

1. M_x = sum_a P_{x+a} / #a over a stencil of frozen sites (the nearest neighbours, shell 1, where
   the exact conditional exp(beta N z^+ M z) lives, or the shell at L1 distance 3; ``stencils``
   alternates them every two layers) with eigenpairs l_1 >= l_2 >= ... (the r = ``directions``
   leading ones). The conditional depends on z_x only through the weights s_k = |v_k^+ z_x|^2
   (the phases of v_k^+ z_x are uniform under it and under Haar). The other N - r directions
   form one block, rho = z - sum_{k<=r} v_k v_k^+ z, whose direction is kept: the map never
   depends on a basis of a degenerate eigenspace (for N > 2d, M has N - 2d zero eigenvalues).
2. Stick breaking from the top: t_k = R_k / R_{k-1}, R_k = 1 - s_1 - ... - s_k (R_0 = 1,
   R_r = |rho|^2). Under the Haar measure on S^{2N-1} the t_k are independent Beta(N-k, 1)
   (density (N-k) t^{N-k-1}). Each t_k goes through a rational-quadratic spline of [0, 1]
   (Durkan et al., arXiv 1906.04032) whose parameters are a_k + R'_{k-1} b_k: a, b from a
   convolutional network fed gauge- and U(N)-invariant features (the eigenvalues of M_x at
   updated sites; |z_y^+ z_{y+mu+-nu}|^2 between frozen diagonal neighbours), R'_{k-1} the new
   weight left for direction k (autoregressive: the exact conditional's tilt of t_k is
   beta N R_{k-1} (l_k - ...)). Then z_x' = sum_k sqrt(s_k') v_k (v_k^+ z_x)/|v_k^+ z_x| +
   sqrt(R_r'/R_r) rho.
3. With ``projective``, z_x'' = G_x z_x' / |G_x z_x'|, G_x a product of rank-one updates of 1 from
   the nearest neighbours' projectors with coefficients from the same network (projective.py):
   it moves the phases that step 2 keeps.

Why t and not the Haar-uniform w = 1 - t^{N-k} (the first version): the target concentrates t_1
at ~ (N-1)/(beta N (l_1 - l_2)), i.e. w_1 within t_1^{N-1} of 1 (1e-4 at N = 10, beta = 1.07),
which a spline with bins of at least 1e-3 cannot reach; in t both Haar and target are spread.

The log-det of step 2 with respect to the Haar (Riemannian) measure is
sum_k [log f_k'(t_k) + (N-k-1)(log t_k' - log t_k)] (step 3's in projective.py). The map commutes with global U(N) (z -> U z:
M -> U M U^+, features unchanged) and with local U(1) phases, so q(z) is exactly invariant under
both, as the target is (up to the measure-zero set where l_r = l_{r+1}). The prior is the Haar
measure on every sphere. A coupling flow on spheres in the spirit of Rezende et al., arXiv
2002.02428, with the conditional's own symmetry built in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from lattgen_flows import LatticeBijection, LatticeFlowModel
from lattgen_flows.circular import MIN_BIN, MIN_DERIVATIVE, SLOPE_ONE
from lattgen_flows.networks import ConvNet
from normflows.utils.splines import rational_quadratic_spline

from lattgen import Composition, ConfigError, Lattice, LatticeError

from .features import invariant_features, neighbour_offsets
from .geometry import abs2, at_offset, with_sites
from .projective import n_coefficients, projective_map, rank_one_factors


def sphere_log_volume(n_comp: int) -> float:
    """log Vol(S^{2N-1}) = log(2 pi^N / (N-1)!)."""
    return math.log(2.0) + n_comp * math.log(math.pi) - math.lgamma(n_comp)


def haar_vectors(n: int, shape: Sequence[int], n_comp: int, *, generator=None, device=None,
                 dtype=torch.complex128) -> torch.Tensor:
    """n configurations of independent Haar unit vectors, shape (n, *shape, N)."""
    z = torch.randn((n, *shape, n_comp), generator=generator, device=device, dtype=dtype)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def interval_spline(t, raw, bins: int, inverse: bool):
    """RQ spline of [0, 1] per element with raw parameters (..., 3K + 1); zeros give the identity."""
    widths, heights, slopes = raw[..., :bins], raw[..., bins:2 * bins], raw[..., 2 * bins:] + SLOPE_ONE
    return rational_quadratic_spline(t.clamp(0.0, 1.0), widths, heights, slopes, inverse=inverse, left=0.0,
                                     right=1.0, bottom=0.0, top=1.0, min_bin_width=MIN_BIN,
                                     min_bin_height=MIN_BIN, min_derivative=MIN_DERIVATIVE)


def shell_offsets(ndim: int, shell: int) -> list[tuple[int, ...]]:
    """Lattice vectors of L1 norm ``shell`` (odd: sites of the other checkerboard colour), sorted."""
    rng = range(-shell, shell + 1)
    return sorted(o for o in itertools.product(rng, repeat=ndim) if sum(abs(c) for c in o) == shell)


def sublattice_shell_offsets(shell: int) -> list[tuple[int, int]]:
    """2D offsets (a, b) with a, b odd and max(|a|, |b|) = ``shell`` (odd): from an odd site with even x_0 to the
    odd sites with odd x_0 (the other colour of the odd sublattice); shell 1 is its four nearest neighbours
    (the diagonals), shell 3 the next ring."""
    rng = range(-shell, shell + 1, 2)
    return sorted((a, b) for a in rng for b in rng if max(abs(a), abs(b)) == shell)


def sublattice_masks(lattice: Lattice, parity: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated, frozen) masks of the odd sublattice's own checkerboard in 2D: odd sites (x_0 + x_1 odd) with
    x_0 % 2 == parity, and the other odd sites."""
    coords = lattice.coordinates(device)
    odd = coords.sum(-1) % 2 == 1
    colour = coords[..., 0] % 2 == parity
    return odd & colour, odd & ~colour


def distinct_offsets(offsets, shape) -> list[tuple[tuple[int, ...], int]]:
    """The offsets reduced mod the lattice extents, each once with its multiplicity (on a small
    lattice x + a and x + b can be one site: its projector then enters M_x with that weight)."""
    counts: dict[tuple[int, ...], int] = {}
    for o in offsets:
        key = tuple(c % n for c, n in zip(o, shape))
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items())


def leading_eigenpairs(z: torch.Tensor, mask: torch.Tensor, offsets, r: int, n_eig: int):
    """Eigenvalues (batch, S, n_eig; descending, zero-padded) of M_x = sum_a m_a P_{x+a} / sum_a m_a and its
    leading eigenvectors (batch, S, N, r') at the S sites of ``mask``, r' = min(r, number of distinct
    sites), in float64 whatever z's precision (the float32 backward pass of eigh, 1/(l_i - l_j) for
    nearly degenerate eigenvalues, gave NaN).

    ``offsets``: (offset, multiplicity) pairs from ``distinct_offsets``. With m distinct sites
    Y = (sqrt(m_a) z_{x+a}) and M = Y Y^+ / sum m_a: for N <= m from M itself; for N > m from the
    m x m Gram matrix G = Y^+ Y, which has the same non-zero eigenvalues, with v = Y a / sqrt(l)
    (G a = l a), so the N - m exact zeros of M (whose 1/(l_i - l_j) would poison the backward
    pass, and whose eigenvectors are an arbitrary basis) never appear.
    """
    n_comp = z.shape[-1]
    total = float(sum(m for _, m in offsets))
    cols = [at_offset(z, o)[:, mask] * math.sqrt(m / total) for o, m in offsets]
    y = torch.stack(cols, dim=-1).to(torch.complex128)  # (batch, S, N, m)
    m_sites = y.shape[-1]
    r = min(r, m_sites)
    if n_comp <= m_sites:
        evals, vecs = torch.linalg.eigh(y @ y.conj().transpose(-1, -2))
        evals, vecs = evals.flip(-1), vecs.flip(-1)[..., :r]
    else:
        evals, a = torch.linalg.eigh(y.conj().transpose(-1, -2) @ y)
        evals, a = evals.flip(-1), a.flip(-1)[..., :r]
        vecs = (y @ a) / torch.sqrt(evals[..., :r].clamp_min(torch.finfo(torch.float64).tiny)).unsqueeze(-2)
    if evals.shape[-1] < n_eig:
        evals = torch.cat([evals, evals.new_zeros((*evals.shape[:-1], n_eig - evals.shape[-1]))], -1)
    return evals[..., :n_eig], vecs


class EigenbasisCoupling(LatticeBijection):
    """Splines of the stick-breaking ratios of |v_k^+ z_x|^2 (leading eigen-directions of the neighbours'
    projectors) at one checkerboard colour; with ``sublattice`` (2D), at one colour of the odd sublattice's own
    checkerboard (parity of x_0), the even sites untouched and unread (the decimated flow, decimated.py)."""

    def __init__(self, lattice: Lattice, n_comp: int, parity: int = 0, hidden: Sequence[int] = (32, 32),
                 kernel_size: int = 3, bins: int = 8, directions: int | None = None, shell: int = 1,
                 projective: bool = False, sublattice: bool = False):
        super().__init__(lattice)
        self.sublattice = bool(sublattice)
        if self.sublattice and lattice.ndim != 2:
            raise LatticeError(f"the decimated CP^(N-1) flow is two-dimensional, got a {lattice.ndim}-d lattice")
        if shell < 1 or shell % 2 == 0:
            raise ConfigError(f"model.stencils: a shell must be odd and >= 1 (sites of the other colour), "
                              f"got {shell}")
        self.ndim = lattice.ndim
        self.shell = int(shell)
        self.n_comp = int(n_comp)
        self.parity = int(parity)
        self.bins = int(bins)
        self.n_eig = min(self.n_comp, 2 * self.ndim)  # eigenvalues of M_x that can be non-zero
        r_max = min(self.n_comp - 1, 2 * self.ndim)
        self.r = r_max if directions is None else min(int(directions), r_max)
        self.n_diag = self.ndim * (self.ndim - 1)  # frozen-frozen diagonal pairs per site
        self.n_par = 3 * self.bins + 1
        self.projective = bool(projective)
        self.n_spline = (2 * self.r - 1) * self.n_par  # a_1..a_r, b_2..b_r
        # the projective map's neighbours and the frozen overlaps fed to the network: on the odd sublattice
        # its nearest neighbours are the diagonals and same-colour pairs lie two steps apart
        self.nn_offsets = sublattice_shell_offsets(1) if self.sublattice else neighbour_offsets(self.ndim)
        self.pair_offsets = [(2, 0), (0, 2)] if self.sublattice else None
        out = self.n_spline + (n_coefficients(len(self.nn_offsets)) if self.projective else 0)
        self.net = ConvNet(self.ndim, self.n_eig + self.n_diag, out, hidden, kernel_size, "tanh")
        self.build_buffers(lattice, torch.device("cpu"), torch.float64)
        powers = torch.arange(self.n_comp - 2, self.n_comp - 2 - self.r, -1, dtype=torch.float64)  # N-k-1
        self.register_buffer("powers", powers, persistent=False)

    def build_buffers(self, lattice: Lattice, device: torch.device, dtype: torch.dtype) -> None:
        if not lattice.bipartite:
            raise LatticeError(f"the CP^(N-1) coupling needs even extents (a checkerboard), got {list(lattice.shape)}")
        if self.sublattice:
            self.offsets = distinct_offsets(sublattice_shell_offsets(self.shell), lattice.shape)
            mask, frozen = sublattice_masks(lattice, self.parity, device)
        else:
            self.offsets = distinct_offsets(shell_offsets(self.ndim, self.shell), lattice.shape)
            mask = lattice.checkerboard(self.parity, device=device, dtype=torch.bool)
            frozen = ~mask
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("frozen", frozen, persistent=False)

    def _features(self, z: torch.Tensor, evals: torch.Tensor):
        """Spline parameters a (batch, S, r, 3K+1) and b (batch, S, r-1, 3K+1) at the updated sites."""
        raw = invariant_features(self.net, z, self.mask, evals, self.pair_offsets, self.frozen)
        spline = raw[..., :self.n_spline].reshape(*raw.shape[:-1], 2 * self.r - 1, self.n_par)
        return spline[..., :self.r, :], spline[..., self.r:, :], raw[..., self.n_spline:]

    def _transform(self, z: torch.Tensor, inverse: bool):
        evals, vecs = leading_eigenpairs(z, self.mask, self.offsets, self.r, self.n_eig)
        r = vecs.shape[-1]  # self.r, or fewer where the stencil has fewer distinct sites (tiny lattices)
        a, b, coeffs = self._features(z, evals)
        a, b = a[..., :r, :], b[..., :r - 1, :]
        zc = z[:, self.mask].to(torch.complex128)  # (batch, S, N)
        log_det_g = 0.0
        if self.projective:  # z' = G spline(z) / |.|: the inverse undoes G first
            ys = [at_offset(z, o)[:, self.mask].to(torch.complex128) for o in self.nn_offsets]
            factors = rank_one_factors(ys, coeffs)
            if inverse:
                zc, log_det_g = projective_map(zc, factors, inverse=True)
        c = (vecs.conj().transpose(-1, -2) @ zc.unsqueeze(-1)).squeeze(-1)  # (batch, S, r)
        rho = zc - (vecs @ c.unsqueeze(-1)).squeeze(-1)
        s = abs2(c)
        s_rest = abs2(rho).sum(-1, keepdim=True)
        norm = s.sum(-1, keepdim=True) + s_rest
        s, s_rest = s / norm, s_rest / norm
        tails = torch.flip(torch.cumsum(torch.flip(torch.cat([s, s_rest], -1), [-1]), -1), [-1])  # R_0..R_r
        tiny = torch.finfo(torch.float64).tiny
        log_r = torch.log(tails.clamp_min(tiny))
        t = torch.exp(log_r[..., 1:] - log_r[..., :-1]).clamp(0.0, 1.0)  # t_k = R_k / R_{k-1}
        if inverse:  # the input is the output of the forward map: its tails are R'
            raw = torch.cat([a[..., :1, :], a[..., 1:, :] + tails[..., 1:r, None] * b], -2)
            t_new, log_slope = interval_spline(t, raw, self.bins, inverse=True)
            new_tails = torch.cat([torch.ones_like(s[..., :1]), torch.cumprod(t_new, -1)], -1)
        else:
            t_cols, slopes, r_prev = [], [], torch.ones_like(s[..., 0])
            for k in range(r):
                raw_k = a[..., k, :] if k == 0 else a[..., k, :] + r_prev.unsqueeze(-1) * b[..., k - 1, :]
                t_k, ls_k = interval_spline(t[..., k], raw_k, self.bins, inverse=False)
                r_prev = r_prev * t_k
                t_cols.append(t_k)
                slopes.append(ls_k)
            t_new, log_slope = torch.stack(t_cols, -1), torch.stack(slopes, -1)
            new_tails = torch.cat([torch.ones_like(s[..., :1]), torch.cumprod(t_new, -1)], -1)
        log_det = log_slope + self.powers[:r] * (torch.log(t_new.clamp_min(tiny)) - torch.log(t.clamp_min(tiny)))
        s_new = new_tails[..., :-1] * (1.0 - t_new)
        modulus = torch.sqrt(s)
        unit = torch.where(modulus > 0, c / modulus.clamp_min(tiny), torch.ones_like(c))
        rest_scale = torch.sqrt(new_tails[..., -1:] / tails[..., -1:].clamp_min(tiny))
        z_new = (vecs @ (unit * torch.sqrt(s_new)).unsqueeze(-1)).squeeze(-1) + rest_scale * rho
        z_new = z_new / torch.linalg.vector_norm(z_new, dim=-1, keepdim=True)
        if self.projective and not inverse:
            z_new, log_det_g = projective_map(z_new, factors, inverse=False)
        out = with_sites(z, self.mask, z_new.to(z.dtype))
        log_det_g = log_det_g.sum(-1) if self.projective else 0.0
        return out, log_det.sum(dim=(1, 2)).to(torch.float64) + log_det_g

    def forward_and_log_det(self, z):
        return self._transform(z, inverse=False)

    def inverse_and_log_det(self, phi):
        return self._transform(phi, inverse=True)


class CPNFlowModel(LatticeFlowModel):
    """Haar prior on every sphere pushed through eigenbasis couplings; q relative to the Haar (Riemannian)
    measure; path gradients and ``relattice`` as every lattice flow (``LatticeFlowModel``)."""

    def __init__(self, lattice: Lattice, n_comp: int, n_layers: int = 8, hidden: Sequence[int] = (32, 32),
                 kernel_size: int = 3, bins: int = 8, directions: int | None = None, path_gradient: bool = False,
                 stencils: Sequence[int] = (1, 3), projective: bool = True, sublattice: bool = False):
        shells = list(stencils) or [1]
        layers = []
        for i in range(n_layers):
            layers.append(EigenbasisCoupling(lattice, n_comp, parity=i % 2, hidden=hidden, kernel_size=kernel_size,
                                             bins=bins, directions=directions, shell=shells[(i // 2) % len(shells)],
                                             projective=projective, sublattice=sublattice))
        flow = Composition(layers)
        super().__init__(lattice, flow, path_gradient)
        self.n_comp = int(n_comp)
        self.log_volume = self.prior_log_volume(lattice)

    def prior_log_volume(self, lattice: Lattice) -> float:
        """log of the Haar prior's total volume: Vol(S^{2N-1})^V (every site is a latent)."""
        return lattice.volume * sphere_log_volume(self.n_comp)

    @property
    def complex_dtype(self) -> torch.dtype:
        return torch.complex64 if self.dtype == torch.float32 else torch.complex128

    def relattice(self, lattice: Lattice) -> CPNFlowModel:
        """The same weights on another lattice (masks rebuilt)."""
        super().relattice(lattice)
        self.log_volume = self.prior_log_volume(lattice)
        return self

    def sample_latent(self, n, generator=None):
        return haar_vectors(n, self.lattice.shape, self.n_comp, generator=generator, device=self.device,
                            dtype=self.complex_dtype)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log of the Haar density relative to the Riemannian volume: -V log Vol(S^{2N-1})."""
        return torch.full((z.shape[0],), -self.log_volume, dtype=torch.float64, device=z.device)

    def log_prob(self, phi):
        return super().log_prob(phi.to(self.complex_dtype))
