"""A projective map for the CP^{N-1} couplings: z_x' = G_x z_x / |G_x z_x| with G_x built from frozen neighbours.

G_x is a product of rank-one updates of the identity, each made of the projectors P_y = y y^+ of
the other colour's nearest neighbours y of x:

    G_x = prod_{i<j} (1 + g_ij P_{y_i} P_{y_j})  prod_i (1 + a_i P_{y_i}),

a_i = exp(3 tanh(c_i / 3)) - 1 > -1 real (z moves towards, a_i > 0, or away from y_i) and
g_ij = c / sqrt(1 + |c|^2) complex with |g_ij| < 1 (z gains a component along y_i through
its overlap with y_j, with a phase: this moves the phases of z_x relative to its neighbours,
which the eigenbasis splines of flow.py never change, and so the triangle phases
arg tr(P_x P_y P_w) that make the topological charge). The coefficients come from a CNN fed the
same invariant features as the splines (the same network, extra output channels; flow.py
applies it after the layer's splines). Every factor 1 + c u v^+ is invertible (Sherman-Morrison:
(1 + c u v^+)^{-1} = 1 - c u v^+ / (1 + c v^+ u)) with det = 1 + c v^+ u, non-zero since
v^+ u = |y_i^+ y_j|^2 <= 1 and |g| < 1, or v^+ u = 1 and a > -1.

On S^{2N-1} the map z -> G z / |G z| has Jacobian |det G|^2 / |G z|^{2N} with respect to the
Riemannian volume (the pushforward of Haar is the complex angular central Gaussian,
density |det G|^{-2} |G^{-1} z'|^{-2N}; Kent, Biometrika 1997), so

    log det = sum_factors log |1 + c v^+ u|^2 - N log |G z|^2,

exact in closed form. G_x commutes with local U(1) phases of z_x, is gauge invariant (the P_y
are) and U(N) covariant (G -> U G U^+), so q stays exactly invariant under both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ALPHA_RANGE = 3.0  # log(1 + a) in (-3, 3): a factor scales one direction by at most e^3


def n_coefficients(n_neighbours: int) -> int:
    """Real conditioner outputs per site: a_i (one each) and complex g_ij (two per pair i < j)."""
    return n_neighbours + n_neighbours * (n_neighbours - 1)


def rank_one_factors(ys: Sequence[torch.Tensor], raw: torch.Tensor):
    """[(c, u, v, v^+ u)] of the updates 1 + c u v^+ (pair factors first, then the a_i), all (batch, S, .).

    ``ys``: the neighbours y_i (batch, S, N) complex128; ``raw``: (batch, S, n_coefficients) float64.
    """
    n_nb = len(ys)
    alpha = torch.expm1(ALPHA_RANGE * torch.tanh(raw[..., :n_nb] / ALPHA_RANGE))
    g = torch.complex(raw[..., n_nb::2], raw[..., n_nb + 1::2])
    gamma = g / torch.sqrt(1.0 + g.real**2 + g.imag**2)
    factors = []
    pairs = [(i, j) for i in range(n_nb) for j in range(i + 1, n_nb)]
    for k, (i, j) in enumerate(pairs):
        overlap_ij = (ys[i].conj() * ys[j]).sum(-1, keepdim=True)  # y_i^+ y_j
        factors.append((gamma[..., k:k + 1], ys[i] * overlap_ij, ys[j], overlap_ij.real**2 + overlap_ij.imag**2))
    for i in range(n_nb):
        factors.append((alpha[..., i:i + 1].to(torch.complex128), ys[i], ys[i], 1.0))
    return factors


def projective_map(w: torch.Tensor, factors, inverse: bool):
    """(G w/|G w|, log det) or, with ``inverse``, (G^{-1} w/|G^{-1} w|, log det) for unit w (batch, S, N)."""
    log_det_lin = torch.zeros(w.shape[:-1], dtype=torch.float64, device=w.device)
    for c, u, v, vu in (reversed(factors) if inverse else factors):
        det = 1.0 + c * vu  # det(1 + c u v^+) = 1 + c v^+ u
        proj = (v.conj() * w).sum(-1, keepdim=True)
        w = w - (c / det) * u * proj if inverse else w + c * u * proj
        log_det_lin = log_det_lin + torch.log(det.real**2 + det.imag**2).squeeze(-1)
    norm2 = (w.real**2 + w.imag**2).sum(-1)
    log_det = (-log_det_lin if inverse else log_det_lin) - w.shape[-1] * torch.log(norm2)
    return w / torch.sqrt(norm2).unsqueeze(-1), log_det
