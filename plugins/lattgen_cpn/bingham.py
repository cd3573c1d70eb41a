"""The complex Bingham distribution p(z) ~ exp(z^+ A z) on S^{2N-1}: exact normaliser, density and sampler.

It is the exact conditional of one site of the quartic CP^{N-1} action given its neighbours
(A = beta N sum_{+-mu} P_{x+-mu}), and so of a whole checkerboard colour given the other.
Used by the decimated flow (decimated.py).

*Normaliser* (Kent, Biometrika 81 (1994) 41). Under the Haar measure the weights s_k = |v_k^+ z|^2
in the eigenbasis of A are uniform on the simplex, so with eigenvalues l_1..l_N

    E_Haar[exp(z^+ A z)] = (N-1)! exp[l_1, ..., l_N],

the divided difference of exp at the eigenvalues (Hermite-Genocchi). It is computed as the corner
entry of exp(B), B bidiagonal with the l_k on the diagonal and ones above it (Opitz 1964): stable
at (near-)degenerate eigenvalues, which the closed form sum_j e^{l_j} / prod_{i != j}(l_j - l_i)
is not. The eigenvalues come from ``eigvalsh`` (whose backward pass never divides by l_i - l_j).

*Sampler* (Kent, Constable and Er, Comput. Stat. Data Anal. 45 (2004) 747). With mu_k = l_max - l_k
>= 0 the weights have density ~ exp(-sum_{k >= 2} mu_k s_k) on the simplex. Two exact rejection
samplers, chosen per site by their exactly known acceptance rates: independent exponentials
truncated to [0, 1], accepted when sum_{k >= 2} s_k <= 1 (good for large mu), or a uniform point
of the simplex accepted with probability exp(-mu . s) (good for small mu). The phases of v_k^+ z
are uniform and independent.
"""

from __future__ import annotations

import math

import torch

from lattgen import LatticeError

#: rejection rounds before giving up (each round redraws only the sites still pending)
MAX_ROUNDS = 100_000


def log_divided_difference_exp(evals: torch.Tensor) -> torch.Tensor:
    """log exp[l_1, ..., l_N] per row of ``evals`` (..., N), float64 (Opitz: corner of exp(bidiagonal))."""
    n = evals.shape[-1]
    top = evals.max(-1).values
    if n == 1:
        return top
    shifted = evals - top.unsqueeze(-1)
    b = torch.diag_embed(shifted) + torch.diag_embed(torch.ones_like(shifted[..., 1:]), offset=1)
    corner = torch.linalg.matrix_exp(b)[..., 0, n - 1]
    return top + torch.log(corner)


def log_haar_mgf(evals: torch.Tensor) -> torch.Tensor:
    """log E_Haar[exp(z^+ A z)] on S^{2N-1} for Hermitian A with eigenvalues ``evals`` (..., N)."""
    n = evals.shape[-1]
    return math.lgamma(n) + log_divided_difference_exp(evals)


def padded_eigvalsh(y: torch.Tensor, weight: float) -> torch.Tensor:
    """Eigenvalues (..., N) of A = weight Y Y^+ for Y (..., N, m): from the m x m Gram matrix when
    N > m (A then has N - m exact zeros, appended), so no eigen-solver sees the degenerate zeros."""
    n, m = y.shape[-2], y.shape[-1]
    if n <= m:
        return weight * torch.linalg.eigvalsh(y @ y.conj().transpose(-1, -2))
    gram = weight * torch.linalg.eigvalsh(y.conj().transpose(-1, -2) @ y)
    return torch.cat([gram, gram.new_zeros((*gram.shape[:-1], n - m))], -1)


def _truncated_exponentials(u: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Inverse CDF of Exp(mu) truncated to [0, 1] (uniform at mu = 0)."""
    safe = mu.clamp_min(1e-300)
    s = -torch.log1p(u * torch.expm1(-safe)) / safe
    return torch.where(mu > 1e-12, s, u)


def sample_weights(mu: torch.Tensor, log_accept_uniform: torch.Tensor, generator=None) -> torch.Tensor:
    """Weights (s_1, ..., s_N) on the simplex with density ~ exp(-sum_k mu_k s_k), mu (M, N) >= 0 with
    mu[:, 0] = 0 (the top eigenvalue). ``log_accept_uniform``: log E_unif[exp(-mu . s)] per row."""
    m_rows, n = mu.shape
    rest = mu[:, 1:]
    # acceptance of the truncated-exponential sampler: vol(simplex) E_unif[exp(-mu s)] / prod (1 - e^-mu)/mu
    log_box = torch.where(rest > 1e-12, torch.log(-torch.expm1(-rest.clamp_min(1e-300))) - torch.log(rest.clamp_min(1e-300)),
                          torch.zeros_like(rest)).sum(-1)
    log_accept_trunc = log_accept_uniform - math.lgamma(n) - log_box
    use_trunc = log_accept_trunc > log_accept_uniform
    out = torch.empty_like(mu)
    pending = torch.arange(m_rows, device=mu.device)
    for _ in range(MAX_ROUNDS):
        if pending.numel() == 0:
            return out
        mu_p, trunc_p = mu[pending], use_trunc[pending]
        u = torch.rand(mu_p.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        # truncated exponentials for k >= 2, s_1 = 1 - sum
        s_t = _truncated_exponentials(u[:, 1:], mu_p[:, 1:])
        s_t = torch.cat([1.0 - s_t.sum(-1, keepdim=True), s_t], -1)
        ok_t = s_t[:, 0] >= 0.0
        # uniform on the simplex (normalised exponentials), accepted with probability exp(-mu . s)
        e = -torch.log(torch.rand(mu_p.shape, generator=generator, dtype=mu.dtype, device=mu.device).clamp_min(1e-300))
        s_u = e / e.sum(-1, keepdim=True)
        ok_u = torch.log(u[:, 0].clamp_min(1e-300)) <= -(mu_p * s_u).sum(-1)
        s = torch.where(trunc_p.unsqueeze(-1), s_t, s_u)
        ok = torch.where(trunc_p, ok_t, ok_u)
        out[pending[ok]] = s[ok]
        pending = pending[~ok]
    raise LatticeError(f"complex Bingham sampler: {pending.numel()} sites still rejected after {MAX_ROUNDS} rounds "
                       f"(largest mu {float(mu.max()):.3g}, N = {n})")


def sample_bingham(a: torch.Tensor, generator=None) -> torch.Tensor:
    """Unit vectors z (..., N) with density ~ exp(z^+ A z) per Hermitian A (..., N, N) complex128.

    Exact (rejection in the eigenbasis of A); no gradient. Within a degenerate eigenspace (the N - 2d
    null directions for N > 2d) the weights are exchangeable and the phases uniform, so the draw does
    not depend on the eigen-solver's choice of basis there.
    """
    with torch.no_grad():
        batch_shape, n = a.shape[:-2], a.shape[-1]
        evals, vecs = torch.linalg.eigh(a.reshape(-1, n, n))
        evals, vecs = evals.flip(-1), vecs.flip(-1)
        mu = (evals[:, :1] - evals).clamp_min(0.0)
        s = sample_weights(mu, log_haar_mgf(evals) - evals[:, 0], generator)
        phases = torch.exp(2j * math.pi * torch.rand(s.shape, generator=generator, dtype=torch.float64,
                                                     device=a.device))
        z = (vecs @ (torch.sqrt(s) * phases).unsqueeze(-1)).squeeze(-1)
        z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        return z.reshape(*batch_shape, n)
