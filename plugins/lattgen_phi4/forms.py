"""Exact maps between the two forms of the phi^4 action (docs/physics.md, "Conversion between the forms").

Form B (the seed's form), hopping parameter beta and coupling lam:

    S_B(phi) = sum_x [ -beta sum_mu phi_{x+mu} phi_x + phi_x^2 + lam (phi_x^2 - 1)^2 ]

Form A (standard form of arXiv 1904.12072 and 2101.08176), bare mass m2 and coupling lamA:

    S_A(phi) = sum_x [ -2 sum_mu phi_x phi_{x+mu} + (2d + m2) phi_x^2 + lamA phi_x^4 ]

With phi_A = sqrt(beta/2) phi_B, m2 = 2(1 - 2 lam)/beta - 2d and lamA = 4 lam/beta^2 one has
S_A(phi_A) = S_B(phi_B) - lam V exactly: the same Boltzmann weights up to a constant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from lattgen import ConfigError


class FormA(NamedTuple):
    """Couplings of the standard form: bare mass squared m2 and quartic coupling lamA."""

    m2: float
    lamA: float


class FormB(NamedTuple):
    """Couplings of the seed's form: hopping parameter beta and quartic coupling lam."""

    beta: float
    lam: float


def _check_ndim(ndim: int) -> None:
    if int(ndim) != ndim or ndim < 1:
        raise ConfigError(f"lattice dimension must be a positive integer, got {ndim!r}")


def form_b_to_a(beta: float, lam: float, ndim: int) -> FormA:
    """(beta, lam) in d = ndim dimensions -> (m2, lamA): m2 = 2(1-2lam)/beta - 2d, lamA = 4lam/beta^2.

    Needs beta > 0 (the rescaling phi_A = sqrt(beta/2) phi_B is real only then).
    """
    _check_ndim(ndim)
    if not beta > 0:
        raise ConfigError(
            f"form B -> form A needs beta > 0 (phi_A = sqrt(beta/2) phi_B), got beta = {beta}; "
            "at beta <= 0 the sites decouple or the hopping term changes sign, which form A "
            "(fixed hopping coefficient 2) cannot express"
        )
    if lam < 0:
        raise ConfigError(f"lam must be >= 0 (the action is unbounded below otherwise), got {lam}")
    return FormA(m2=2.0 * (1.0 - 2.0 * lam) / beta - 2.0 * ndim, lamA=4.0 * lam / beta**2)


def form_a_to_b(m2: float, lamA: float, ndim: int) -> FormB:
    """(m2, lamA) -> (beta, lam): beta > 0 solves lamA beta^2 + (2d + m2) beta - 2 = 0, lam = lamA beta^2/4.

    The positive root is written as beta = 4 / (c + sqrt(c^2 + 8 lamA)), c = 2d + m2, which is
    stable for lamA -> 0; with lamA = 0 it needs c > 0 (else no beta > 0 exists).
    """
    _check_ndim(ndim)
    if lamA < 0:
        raise ConfigError(f"lamA must be >= 0 (the action is unbounded below otherwise), got {lamA}")
    c = 2.0 * ndim + m2
    denom = c + math.sqrt(c * c + 8.0 * lamA)
    if not denom > 0:
        raise ConfigError(
            f"form A -> form B is impossible for lamA = 0 and 2d + m2 = {c} <= 0 (no beta > 0 exists; "
            "the free field is not normalisable there either): raise m2 above -2d or set lamA > 0"
        )
    beta = 4.0 / denom
    return FormB(beta=beta, lam=lamA * beta * beta / 4.0)


def field_scale_b_to_a(beta: float) -> float:
    """The factor s with phi_A = s phi_B, s = sqrt(beta/2) (beta > 0)."""
    if not beta > 0:
        raise ConfigError(f"the field rescaling phi_A = sqrt(beta/2) phi_B needs beta > 0, got {beta}")
    return math.sqrt(beta / 2.0)


def action_offset(lam: float, volume: int) -> float:
    """S_B(phi_B) - S_A(phi_A) = lam V for matched couplings and fields (constant in phi)."""
    return float(lam) * int(volume)
