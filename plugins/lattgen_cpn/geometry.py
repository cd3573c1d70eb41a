"""Gauge-invariant building blocks of CP^{N-1} fields z (batch, *lattice, N), complex unit vectors.

The physical field is the projector P_x = z_x z_x^dagger (z modulo a phase, the local U(1));
every quantity here is built from overlaps z_x^dagger z_y, vectorised with torch.roll.
"""

from __future__ import annotations

import torch


def shift(z: torch.Tensor, mu: int, n: int = 1) -> torch.Tensor:
    """z_{x + n mu_hat} (periodic) for z of shape (batch, *lattice, N)."""
    return torch.roll(z, shifts=-n, dims=1 + mu)


def at_offset(z: torch.Tensor, offset) -> torch.Tensor:
    """z_{x + offset} (periodic) for z of shape (batch, *lattice, N) and an integer vector ``offset``."""
    return torch.roll(z, shifts=[-c for c in offset], dims=list(range(1, len(offset) + 1)))


def with_sites(z: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """z (batch, *lattice, N) with its ``mask`` sites replaced by ``values`` (batch, S, N), out of
    place: the other sites keep their gradient."""
    out = z.clone()
    out[:, mask] = values
    return out


def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a_x^dagger b_x per site, shape (batch, *lattice)."""
    return (a.conj() * b).sum(-1)


def abs2(c: torch.Tensor) -> torch.Tensor:
    """|c|^2 elementwise as a real tensor."""
    return c.real**2 + c.imag**2


def link_overlaps(z: torch.Tensor, ndim: int) -> torch.Tensor:
    """|z_x^dagger z_{x+mu}|^2 = tr P_x P_{x+mu}, shape (batch, ndim, *lattice)."""
    return torch.stack([abs2(overlap(z, shift(z, mu))) for mu in range(ndim)], dim=1)


def neighbour_projector_sum(z: torch.Tensor, ndim: int) -> torch.Tensor:
    """M_x = sum_{+-mu} P_{x+-mu} (Hermitian N x N per site), shape (batch, *lattice, N, N)."""
    m = None
    for mu in range(ndim):
        for n in (1, -1):
            y = shift(z, mu, n)
            p = y.unsqueeze(-1) * y.conj().unsqueeze(-2)
            m = p if m is None else m + p
    return m


def neighbour_apply(z: torch.Tensor, ndim: int) -> torch.Tensor:
    """M_x z_x = sum_{+-mu} z_{x+-mu} (z_{x+-mu}^dagger z_x) without forming M, shape of z."""
    out = torch.zeros_like(z)
    for mu in range(ndim):
        for n in (1, -1):
            y = shift(z, mu, n)
            out = out + y * overlap(y, z).unsqueeze(-1)
    return out


def triangle_phases(z: torch.Tensor, mu: int = 0, nu: int = 1) -> torch.Tensor:
    """arg tr(P_x P_y P_w) of the two triangles of each (mu, nu) plaquette, shape (batch, 2, *lattice).

    Triangles (x, x+mu, x+mu+nu) and (x, x+mu+nu, x+nu); tr(P_a P_b P_c) = (a^+b)(b^+c)(c^+a).
    The sum over all triangles of the torus is 2 pi Q with Q an integer (each link is shared by
    two triangles with opposite orientation): the geometric charge, Luscher Nucl. Phys. B200
    (1982) 61; Campostrini, Rossi, Vicari, Phys. Rev. D 46 (1992) 2647.
    """
    x = z
    a = shift(z, mu)
    c = shift(z, nu)
    b = shift(a, nu)
    t1 = overlap(x, a) * overlap(a, b) * overlap(b, x)
    t2 = overlap(x, b) * overlap(b, c) * overlap(c, x)
    return torch.stack([torch.angle(t1), torch.angle(t2)], dim=1)


def su2_vector(z: torch.Tensor) -> torch.Tensor:
    """n = z^dagger sigma z (real unit 3-vector per site) of a CP^1 field, shape (batch, *lattice, 3)."""
    z1, z2 = z[..., 0], z[..., 1]
    off = z1.conj() * z2
    return torch.stack([2 * off.real, 2 * off.imag, abs2(z1) - abs2(z2)], dim=-1)
