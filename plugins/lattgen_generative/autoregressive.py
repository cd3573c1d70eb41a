"""Autoregressive flow on the periodic lattice: exact q(phi) as a product of 1-D conditionals.

Sites i = 0..V-1 in raster order; each is a monotone transform of its own standard normal,
with parameters from a causal masked convolutional net (``masked.CausalNet``) of the earlier
sites (Wu, Wang, Zhang, arXiv 1809.10606; Białas et al., arXiv 2111.10189; PixelCNN masks,
arXiv 1606.05328, made periodic):

    phi_i = T(z_i; theta_i(phi_<i)),   q(phi) = prod_i N(z_i) |dT/dz_i|^{-1},

    log q(phi) = sum_i log N(z_i) - log|det dphi/dz|,  log|det dphi/dz| = sum_i log|dT/dz_i|,

because dphi/dz is lower triangular in raster order. Costs (network passes per batch):

* ``log_prob``: ONE parallel pass (all theta_i from the known phi), then V independent inversions.
* ``sample``: V sequential steps. ``sampling="full"`` recomputes the whole net at every step
  (V full passes); ``sampling="cached"`` (default) keeps every hidden column once computed (it
  can no longer change, see ``masked``) and evaluates the net at the new site only, so the total
  work is that of one full pass, spread over V small steps (Python overhead per step).

Z2 (``z2``): "none"; "equivariant" evaluates the net on the context and its negation and
symmetrises the raw parameters so T(-z; theta(-c)) = -T(z; theta(c)), hence q(-phi) = q(phi)
exactly (twice the batch through the net); "symmetrise" keeps the plain model q and uses
q_sym(phi) = (q(phi) + q(-phi))/2, sampled by flipping a fair global sign, whose density needs
log q(-phi): one extra parallel pass per sample.
"""

from __future__ import annotations

import math

import torch

from lattgen import Bijection, ConfigError, GenerativeModel, Lattice, standard_normal_log_prob

from .conditionals import make_conditional
from .masked import CausalNet, check_kernel_size

Z2_MODES = ("none", "equivariant", "symmetrise")
SAMPLING_MODES = ("cached", "full")


class AutoregressiveFlow(Bijection):
    """The bijection z -> phi of the autoregressive model (raster order, causal masked net).

    Inputs to the net per site: (phi_j, 1). The constant channel, masked like phi, tells a site
    which of its neighbours are already generated (sites near the start of the raster see
    fewer), so one set of convolution weights can serve every position.
    """

    def __init__(
        self,
        lattice: Lattice,
        hidden_channels=(16, 16),
        kernel_size: int = 3,
        transform: str = "spline",
        n_bins: int = 8,
        tail_bound: float = 4.0,
        equivariant: bool = False,
        sampling: str = "cached",
    ):
        super().__init__()
        check_kernel_size(kernel_size)
        if sampling not in SAMPLING_MODES:
            raise ConfigError(f"model.sampling: {sampling!r} is not valid; choose one of: cached, full")
        if any(c < 1 for c in hidden_channels):
            raise ConfigError(f"model.hidden_channels: widths must be >= 1, got {list(hidden_channels)}")
        self.lattice = lattice
        self.volume = lattice.volume
        self.conditional = make_conditional(transform, n_bins, tail_bound)
        self.net = CausalNet(lattice, 2, self.conditional.n_params, list(hidden_channels), kernel_size)
        self.equivariant = bool(equivariant)
        self.sampling = sampling

    @property
    def z2_equivariant(self) -> bool:  # type: ignore[override]
        return self.equivariant

    # -- parameters theta from contexts ----------------------------------------------------
    def _inputs(self, flat: torch.Tensor) -> torch.Tensor:
        """Net input (B, 2, V): the field and the constant channel."""
        return torch.stack([flat, torch.ones_like(flat)], dim=1)

    def theta_all(self, flat: torch.Tensor) -> torch.Tensor:
        """theta_i for every site from the field (B, V) in one parallel pass: (B, V, P)."""
        if self.equivariant:
            out = self.net(self._inputs(torch.cat([flat, -flat]))).transpose(1, 2)
            a, a_neg = out.chunk(2)
            return self.conditional.symmetrise(a, a_neg)
        return self.net(self._inputs(flat)).transpose(1, 2)

    # -- the bijection ---------------------------------------------------------------------
    def forward_and_log_det(self, z):
        """Sequential generation (V steps): (phi, log|det dphi/dz|)."""
        self.lattice.check_field(z)
        flat_z = z.reshape(z.shape[0], self.volume)
        if self.sampling == "cached":
            cols, log_dets = self._generate_cached(flat_z)
        else:
            cols, log_dets = self._generate_full(flat_z)
        phi = torch.stack(cols, dim=1).reshape(z.shape)
        return phi, torch.stack(log_dets, dim=1).sum(1)

    def inverse_and_log_det(self, phi):
        """One parallel pass: (z, log|det dz/dphi|)."""
        self.lattice.check_field(phi)
        flat = phi.reshape(phi.shape[0], self.volume)
        z, log_det = self.conditional.inverse(flat, self.theta_all(flat))
        return z.reshape(phi.shape), log_det.sum(1)

    def _generate_cached(self, flat_z: torch.Tensor):
        """V single-site steps on cached hidden columns (work of one full pass in total)."""
        n = flat_z.shape[0]
        batch = 2 * n if self.equivariant else n
        cache = self.net.new_cache()
        ones = torch.ones(n, dtype=flat_z.dtype, device=flat_z.device)
        cols, log_dets = [], []
        for i in range(self.volume):
            out = self.net.forward_site(cache, i, batch)
            if self.equivariant:
                a, a_neg = out.chunk(2)
                theta = self.conditional.symmetrise(a, a_neg)
            else:
                theta = out
            phi_i, ld = self.conditional.forward(flat_z[:, i], theta)
            cols.append(phi_i)
            log_dets.append(ld)
            col = torch.stack([phi_i, ones], dim=1)
            cache[0].append(torch.cat([col, col * col.new_tensor([-1.0, 1.0])]) if self.equivariant else col)
        return cols, log_dets

    def _generate_full(self, flat_z: torch.Tensor):
        """Reference: V full parallel passes, keeping site i of the i-th (slow, for checks)."""
        n = flat_z.shape[0]
        zeros = flat_z.new_zeros(n)
        cols, log_dets = [], []
        for i in range(self.volume):
            current = torch.stack(cols + [zeros] * (self.volume - i), dim=1)
            theta = self.theta_all(current)[:, i]
            phi_i, ld = self.conditional.forward(flat_z[:, i], theta)
            cols.append(phi_i)
            log_dets.append(ld)
        return cols, log_dets


class AutoregressiveModel(GenerativeModel):
    """Exact-density autoregressive flow model (see the module docstring for costs and Z2)."""

    exact_density = True
    requires_data = False

    def __init__(self, lattice: Lattice, z2: str = "none", **flow_options):
        super().__init__(lattice)
        if z2 not in Z2_MODES:
            raise ConfigError(f"model.z2: {z2!r} is not valid; choose one of: {', '.join(Z2_MODES)}")
        self.z2 = z2
        self.flow = AutoregressiveFlow(lattice, equivariant=(z2 == "equivariant"), **flow_options)

    @property
    def z2_equivariant(self) -> bool:
        return self.z2 == "equivariant"

    def base_log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        """log q(phi) of the unsymmetrised flow: one parallel pass."""
        z, log_det = self.flow.inverse_and_log_det(phi)
        return standard_normal_log_prob(z) + log_det

    def sample(self, n, generator=None):
        z = torch.randn((n, *self.lattice.shape), generator=generator, device=self.device, dtype=self.dtype)
        phi, log_det = self.flow.forward_and_log_det(z)
        log_q = standard_normal_log_prob(z) - log_det
        if self.z2 != "symmetrise":
            return phi, log_q
        # a fair global sign s: s phi has density q_sym, the same for either s
        coin = torch.randint(0, 2, (n,), generator=generator, device=self.device)
        sign = (2 * coin - 1).to(phi.dtype).reshape(-1, *[1] * self.lattice.ndim)
        return sign * phi, symmetrised(log_q, self.base_log_prob(-phi))

    def log_prob(self, phi):
        if self.z2 != "symmetrise":
            return self.base_log_prob(phi)
        return symmetrised(self.base_log_prob(phi), self.base_log_prob(-phi))


def symmetrised(log_q_a: torch.Tensor, log_q_b: torch.Tensor) -> torch.Tensor:
    """log((q_a + q_b)/2) in log space."""
    return torch.logaddexp(log_q_a, log_q_b) - math.log(2.0)
