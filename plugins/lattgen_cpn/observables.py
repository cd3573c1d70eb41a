"""Observables of CP^{N-1} fields (registered for ``field="sphere"``; docs/physics.md#cpn).

All are functions of the projectors P_x = z_x z_x^dagger, so gauge (local U(1)) and global U(N)
invariant. Primaries are float64 per configuration; derived quantities (xi, chi_t, ...) are
functions of the primaries' means so that the Gamma method propagates their errors.

* ``cpn_energy``: E = (1/(d V)) sum_{x,mu} |z_x^dagger z_{x+mu}|^2 (S = -beta N d V E).
* ``cpn_chi_m``: magnetic susceptibility chi_m = sum_x G(x), G(x) = <tr P_x P_0> - 1/N.
* ``cpn_xi``: second-moment correlation length from G~(0), G~(p_min) (all directions).
* ``cpn_correlator``: G(t) of the zero-momentum time slices (axis 0).
* ``topological_charge``: geometric Q from the triangle phases of projector plaquettes.
* ``topological_charge_squared``, ``topological_susceptibility`` = <Q^2>/V, ``cpn_chi_t_xi2`` = chi_t xi^2.
* ``o3_topological_charge``: the Berg-Luscher solid-angle charge of n = z^dagger sigma z (CP^1 only).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lattgen import Lattice, LatticeError, Observable

from .geometry import link_overlaps, su2_vector, triangle_phases

TWO_PI = 2.0 * math.pi


def _c128(z: torch.Tensor) -> torch.Tensor:
    return z.to(torch.complex128)


def traceless_projectors(z: torch.Tensor) -> torch.Tensor:
    """Q_x = P_x - 1/N, shape (batch, *lattice, N, N): tr Q_x Q_y = tr P_x P_y - 1/N."""
    n = z.shape[-1]
    p = z.unsqueeze(-1) * z.conj().unsqueeze(-2)
    return p - torch.eye(n, dtype=z.dtype, device=z.device) / n


def momentum_correlators(z: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """(G~(0), G~(p_min) averaged over the directions) per configuration, shape (batch, 2).

    G~(p) = (1/V) sum_{ab} |sum_x e^{i p x} (Q_x)_{ab}|^2 = sum_x e^{ipx} (tr P_x P_0 - 1/N) (translation averaged).
    """
    q = traceless_projectors(_c128(z))
    dims = tuple(range(1, lattice.ndim + 1))
    v = lattice.volume
    g0 = (q.sum(dim=dims).abs() ** 2).sum((-1, -2)) / v
    coords = lattice.coordinates(z.device).to(torch.float64)
    gp = []
    for mu in range(lattice.ndim):
        phase = torch.exp(1j * TWO_PI * coords[..., mu] / lattice.shape[mu]).to(torch.complex128)
        ft = (q * phase[None, ..., None, None]).sum(dim=dims)
        gp.append((ft.abs() ** 2).sum((-1, -2)) / v)
    return torch.stack([g0, torch.stack(gp).mean(0)], dim=-1)


def second_moment_xi(g0: float, gp: float, length: int) -> float:
    """xi_2 = sqrt((G~(0)/G~(p) - 1) / (4 sin^2(pi/L))) (nan where G~(0) <= G~(p))."""
    ratio = g0 / gp - 1.0 if gp > 0 else float("nan")
    return math.sqrt(ratio) / (2.0 * math.sin(math.pi / length)) if ratio > 0 else float("nan")


def topological_charge(z: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """Geometric charge Q = (1/2 pi) sum_triangles arg tr(P_x P_y P_w) in the (0, 1) plane, (batch,)."""
    if lattice.ndim != 2:
        raise LatticeError(f"the CP^(N-1) topological charge needs a 2-dimensional lattice, got {list(lattice.shape)}")
    return triangle_phases(_c128(z)).sum(dim=(1, 2, 3)) / TWO_PI


def solid_angle_charge(z: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """Berg-Luscher charge of n = z^dagger sigma z (Nucl. Phys. B190 (1981) 412), (batch,).

    Each triangle (n1, n2, n3) spans the signed solid angle A with
    exp(i A / 2) ~ 1 + n1.n2 + n2.n3 + n3.n1 + i n1.(n2 x n3); Q = (1/4 pi) sum A.
    """
    if lattice.ndim != 2:
        raise LatticeError(f"the Berg-Luscher charge needs a 2-dimensional lattice, got {list(lattice.shape)}")
    if z.shape[-1] != 2:
        raise LatticeError(f"the Berg-Luscher (O(3)) charge needs CP^1 fields (N = 2), got N = {z.shape[-1]}")
    n = su2_vector(_c128(z))

    def sh(a, mu):
        return torch.roll(a, shifts=-1, dims=1 + mu)

    def area(a, b, c):
        dot = lambda u, v: (u * v).sum(-1)
        re = 1 + dot(a, b) + dot(b, c) + dot(c, a)
        im = dot(a, torch.linalg.cross(b, c, dim=-1))
        return 2.0 * torch.atan2(im, re)

    x, a, c = n, sh(n, 0), sh(n, 1)
    b = sh(a, 1)
    total = area(x, a, b) + area(x, b, c)
    return total.sum(dim=(1, 2)) / (2.0 * TWO_PI)


# -- factories (lattice -> Observable) ------------------------------------------------------------
def make_energy(lattice: Lattice) -> Observable:
    """E = (1/(d V)) sum_{x,mu} |z_x^dagger z_{x+mu}|^2 (the action is -beta N d V E)."""
    def primaries(z):
        t = link_overlaps(_c128(z), lattice.ndim)
        return t.mean(dim=tuple(range(1, t.dim()))).unsqueeze(-1)

    return Observable("cpn_energy", primaries, doc=make_energy.__doc__)


def make_chi_m(lattice: Lattice) -> Observable:
    """Magnetic susceptibility chi_m = sum_x <tr P_x P_0 - 1/N> = <G~(0)>."""
    return Observable("cpn_chi_m", lambda z: momentum_correlators(z, lattice)[:, :1], doc=make_chi_m.__doc__)


def make_xi(lattice: Lattice) -> Observable:
    """Second-moment correlation length xi_2 from <G~(0)> and <G~(p_min)> (p_min = 2 pi/L)."""
    length = lattice.shape[0]
    return Observable("cpn_xi", lambda z: momentum_correlators(z, lattice),
                      derive=lambda m: second_moment_xi(m[0], m[1], length), doc=make_xi.__doc__)


def make_correlator(lattice: Lattice) -> Observable:
    """G(t) = (1/V) sum_{t0} tr Qbar(t0 + t) Qbar(t0), Qbar(t) the time-slice sum of P_x - 1/N."""
    length = lattice.shape[0]
    v = lattice.volume

    def primaries(z):
        q = traceless_projectors(_c128(z))
        if lattice.ndim > 1:
            q = q.sum(dim=tuple(range(2, lattice.ndim + 1)))  # (batch, L0, N, N)
        ft = torch.fft.fft(q, dim=1)
        corr = torch.fft.ifft((ft.abs() ** 2).sum((-1, -2)), dim=1).real / v
        return corr[:, : length // 2 + 1]

    return Observable("cpn_correlator", primaries, derive=lambda m: m, doc=make_correlator.__doc__, index="t",
                      index_values=tuple(range(length // 2 + 1)))


def make_topological_charge(lattice: Lattice) -> Observable:
    """Geometric topological charge Q (an integer on every configuration): <Q> = 0 by parity."""
    return Observable("topological_charge", lambda z: topological_charge(z, lattice).unsqueeze(-1),
                      doc=make_topological_charge.__doc__)


def make_q2(lattice: Lattice) -> Observable:
    """<Q^2> of the geometric charge (its tau_int is the freezing figure of merit)."""
    return Observable("topological_charge_squared", lambda z: topological_charge(z, lattice).pow(2).unsqueeze(-1),
                      doc=make_q2.__doc__)


def make_chi_t(lattice: Lattice) -> Observable:
    """Topological susceptibility chi_t = <Q^2>/V."""
    v = lattice.volume
    return Observable("topological_susceptibility", lambda z: topological_charge(z, lattice).pow(2).unsqueeze(-1) / v,
                      doc=make_chi_t.__doc__)


def make_chi_t_xi2(lattice: Lattice) -> Observable:
    """chi_t xi_2^2, the dimensionless combination that has a continuum limit."""
    v = lattice.volume
    length = lattice.shape[0]

    def primaries(z):
        q2 = topological_charge(z, lattice).pow(2).unsqueeze(-1) / v
        return torch.cat([q2, momentum_correlators(z, lattice)], dim=-1)

    def derive(m: np.ndarray) -> float:
        return m[0] * second_moment_xi(m[1], m[2], length) ** 2

    return Observable("cpn_chi_t_xi2", primaries, derive=derive, doc=make_chi_t_xi2.__doc__)


def make_o3_charge(lattice: Lattice) -> Observable:
    """Berg-Luscher solid-angle charge of the O(3) field n = z^dagger sigma z (CP^1 only)."""
    return Observable("o3_topological_charge", lambda z: solid_angle_charge(z, lattice).unsqueeze(-1),
                      doc=make_o3_charge.__doc__)


#: name -> factory; the O(3) charge is measured on request only (it needs N = 2)
OBSERVABLES = {
    "cpn_energy": make_energy,
    "cpn_chi_m": make_chi_m,
    "cpn_xi": make_xi,
    "cpn_correlator": make_correlator,
    "topological_charge": make_topological_charge,
    "topological_charge_squared": make_q2,
    "topological_susceptibility": make_chi_t,
    "cpn_chi_t_xi2": make_chi_t_xi2,
    "o3_topological_charge": make_o3_charge,
}
DEFAULT_OBSERVABLES = tuple(n for n in OBSERVABLES if n != "o3_topological_charge")
