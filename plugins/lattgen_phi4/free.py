"""Exact results of the free (Gaussian) lattice field S = sum_x [ -kappa sum_mu phi_x phi_{x+mu} + a phi_x^2 ].

S = 1/2 phi^T K phi with the circulant K of eigenvalues K(p) = 2 (a - kappa sum_mu cos p_mu), so
G~(p) = <|phi~(p)|^2>/V = 1/K(p); the Gaussian is normalisable iff K(p) > 0 at every lattice
momentum (for kappa >= 0: a > kappa d). Form B: kappa = beta, a = 1 (lam = 0); form A: kappa = 2,
a = 2d + m2 (lamA = 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lattgen import ConfigError, Lattice


def kernel_eigenvalues(lattice: Lattice, kappa: float, a: float) -> torch.Tensor:
    """K(p) = 2 (a - kappa sum_mu cos p_mu) on the lattice momenta, float64, FFT ordering."""
    return 2.0 * (a - kappa * lattice.cos_sum(dtype=torch.float64))


def check_free_field_stable(lattice: Lattice, kappa: float, a: float, hint: str = "") -> None:
    """Raise ConfigError when some K(p) <= 0, i.e. exp(-S) is not normalisable."""
    k_min = float(kernel_eigenvalues(lattice, kappa, a).min())
    if not k_min > 0:
        raise ConfigError(
            f"the free field is unstable on lattice {list(lattice.shape)}: the quadratic form has "
            f"eigenvalue {k_min:.6g} <= 0, so exp(-S) is not normalisable"
            + (f" ({hint})" if hint else "")
        )


def free_field_exact(lattice: Lattice, kappa: float, a: float, hint: str = "") -> dict[str, Any]:
    """Exact free-field results: the keys of ``Action.exact`` plus two.

    ``propagator`` G~(p) = 1/K(p); ``susceptibility`` chi = G~(0); ``correlation_length`` the
    second-moment xi^2 = (G~(0)/G~(p1) - 1)/(4 sin^2(pi/L)), p1 = 2 pi/L e_mu, averaged over the
    directions mu (all equal here: xi^2 = kappa/K(0)); ``ising_energy`` = (1/d) sum_mu G(e_mu);
    ``abs_magnetisation`` <|m|> = sqrt(2 chi/(pi V)); ``propagator_position`` G(x) =
    (1/V) sum_p G~(p) e^{ipx}, a tensor of lattice.shape (the ``two_point`` observable averages it
    over symmetry orbits).
    """
    check_free_field_stable(lattice, kappa, a, hint)
    prop = 1.0 / kernel_eigenvalues(lattice, kappa, a)
    chi = float(prop.reshape(-1)[0])
    xi2 = []
    for mu, L in enumerate(lattice.shape):
        idx = [0] * lattice.ndim
        idx[mu] = 1
        xi2.append((chi / float(prop[tuple(idx)]) - 1.0) / (4.0 * math.sin(math.pi / L) ** 2))
    g_x = torch.fft.ifftn(prop.to(torch.complex128)).real
    nn = []
    for mu in range(lattice.ndim):
        idx = [0] * lattice.ndim
        idx[mu] = 1
        nn.append(float(g_x[tuple(idx)]))
    return {
        "propagator": prop,
        "susceptibility": chi,
        "correlation_length": math.sqrt(sum(xi2) / len(xi2)),
        "propagator_position": g_x,
        "ising_energy": sum(nn) / len(nn),
        "abs_magnetisation": math.sqrt(2.0 * chi / (math.pi * lattice.volume)),
    }


def power_spectrum_at(phi: torch.Tensor, lattice: Lattice, momenta) -> torch.Tensor:
    """|phi~(p)|^2 / V (float64) at the momentum index tuples n (p_mu = 2 pi n_mu / L_mu), shape (batch, k).

    Its Monte Carlo mean is G~(p): the primaries of a free-field check against ``propagator``.
    """
    pf = torch.fft.fftn(phi.to(torch.float64), dim=lattice.dims)
    power = (pf.real**2 + pf.imag**2) / lattice.volume
    cols = [power[(slice(None), *[int(n) % L for n, L in zip(p, lattice.shape)])] for p in momenta]
    return torch.stack(cols, dim=-1)
