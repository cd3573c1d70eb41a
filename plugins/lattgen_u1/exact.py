"""Exact results of 2D compact U(1) with the Wilson action on the periodic L1 x L2 torus.

Character expansion (docs/physics.md#exact-results-on-the-torus; e.g. Bonati & Rossi, arXiv 1901.09830, and
Kanwar et al., arXiv 2003.06413, app. A): with V = L1 L2 plaquettes and the topological charge
Q = (1/2 pi) sum_P wrap(theta_P),

    Z(theta) = sum_n f_n(theta)^V,  f_n(theta) = (1/2 pi) int dphi e^{beta cos phi} cos((theta/2 pi - n) phi),

so Z = Z(0) = sum_n I_n(beta)^V. From it: <cos theta_P> = sum_n w_n I_n'/I_n with
w_n = I_n^V / Z; <Q^2> = -Z''(0)/Z = V sum_n w_n [g_n/I_n - (V - 1) (h_n/I_n)^2] with
g_n = -f_n''(0), h_n = f_n'(0) summed from the Fourier series of phi^2 and phi on (-pi, pi]:

    g_n = (1/4 pi^2) [ pi^2/3 I_n + sum_k 2 (-1)^k / k^2 (I_{n+k} + I_{n-k}) ]
    h_n = (1/2 pi) sum_k (-1)^{k+1} / k (I_{n-k} - I_{n+k})

and a contractible Wilson loop of area A: W(A) = sum_n I_{n+1}^A I_n^{V-A} / Z. Everything is
evaluated with exponentially scaled Bessel functions (``scipy.special.ive``) in log space with
logsumexp, so V = 64^2 (I_0(beta)^V ~ 10^4000) does not overflow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import ive, logsumexp

from lattgen import Lattice

#: the Wilson loops (R, T) of the ``wilson_loops`` observable; the Creutz ratios chi(2,2), chi(3,3)
#: need exactly these
WILSON_SIZES = ((1, 1), (1, 2), (2, 2), (2, 3), (3, 3))
#: Creutz ratios chi(R, R) = -log[W(R,R) W(R-1,R-1) / W(R,R-1)^2] of the ``creutz_ratio`` observable
CREUTZ_SIZES = (2, 3)


class BesselTable:
    """log I_m(beta) - beta (``ive``) for |m| <= M, with the range M large enough that every
    neglected term of the sums over n and k is below double precision."""

    def __init__(self, beta: float):
        self.beta = float(beta)
        self.n_max = math.ceil(self.beta) + 20          # the sum over n (w_n <= (I_N/I_0)^2)
        self.k_max = self.n_max + math.ceil(self.beta) + 20  # the Fourier sums over k
        self.m_max = self.n_max + self.k_max + 1
        m = np.arange(0, self.m_max + 1)
        self._ive = ive(m, self.beta)

    def scaled(self, m) -> np.ndarray:
        """I_m(beta) e^{-beta} for integer arrays m (I_{-m} = I_m)."""
        return self._ive[np.abs(np.asarray(m))]

    def log(self, m) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.scaled(m))


def _weights_log(table: BesselTable, volume: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(n, log I~_n, log Z~) over n in [-N, N] (scaled by e^{-beta V})."""
    n = np.arange(-table.n_max, table.n_max + 1)
    log_i = table.log(n)
    return n, log_i, float(logsumexp(volume * log_i))


def _power(log_i: np.ndarray, p: float) -> np.ndarray:
    """p log I (with 0 log 0 = 0 where I underflowed)."""
    return np.where(np.isneginf(log_i), -np.inf if p > 0 else 0.0, p * np.where(np.isneginf(log_i), 0.0, log_i))


def _g_h(table: BesselTable, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g~_n = (1/2pi) int e^{beta cos phi} (phi/2pi)^2 cos(n phi) e^{-beta} and
    h~_n = (1/2pi) int e^{beta cos phi} (phi/2pi) sin(n phi) e^{-beta}, from the Fourier series
    phi^2 = pi^2/3 + sum_k 4 (-1)^k cos(k phi)/k^2 and phi = sum_k 2 (-1)^{k+1} sin(k phi)/k."""
    k = np.arange(1, table.k_max + 1)[None, :]
    nn = n[:, None]
    sign = np.where(k % 2 == 0, 1.0, -1.0)  # (-1)^k
    plus, minus = table.scaled(nn + k), table.scaled(nn - k)
    g = (math.pi**2 / 3.0 * table.scaled(n) + (2.0 * sign / k**2 * (plus + minus)).sum(1)) / (4 * math.pi**2)
    h = (-sign / k * (minus - plus)).sum(1) / (2 * math.pi)
    return g, h


def log_partition_function(lattice: Lattice, beta: float) -> float:
    """log Z = log sum_n I_n(beta)^V (Haar measure normalised to 1 per link)."""
    table = BesselTable(beta)
    _, _, log_z = _weights_log(table, lattice.volume)
    return log_z + beta * lattice.volume


def plaquette(lattice: Lattice, beta: float) -> float:
    """<cos theta_P> = (1/V) d log Z / d beta = sum_n w_n (I_{n-1} + I_{n+1}) / (2 I_n)."""
    table = BesselTable(beta)
    n, log_i, log_z = _weights_log(table, lattice.volume)
    deriv = 0.5 * (table.scaled(n - 1) + table.scaled(n + 1))
    return float(np.sum(np.exp(_power(log_i, lattice.volume - 1) - log_z) * deriv))


def topological_charge_squared(lattice: Lattice, beta: float) -> float:
    """<Q^2> = -Z''(0)/Z = V sum_n [I_n^{V-1} g_n - (V-1) I_n^{V-2} h_n^2] / Z."""
    table = BesselTable(beta)
    volume = lattice.volume
    n, log_i, log_z = _weights_log(table, volume)
    g, h = _g_h(table, n)
    first = np.exp(_power(log_i, volume - 1) - log_z) * g
    second = (volume - 1) * np.exp(_power(log_i, volume - 2) - log_z) * h * h
    return float(volume * np.sum(first - second))


def susceptibility_infinite_volume(beta: float) -> float:
    """chi_t = <Q^2>/V as V -> infinity: <(phi/2pi)^2> of one plaquette, g_0 / I_0."""
    table = BesselTable(beta)
    g, _ = _g_h(table, np.array([0]))
    return float(g[0] / table.scaled(0))


def wilson_loop(lattice: Lattice, beta: float, area: int) -> float:
    """<W> of a contractible loop enclosing ``area`` plaquettes: sum_n I_{n+1}^A I_n^{V-A} / Z."""
    volume = lattice.volume
    if not 0 <= area <= volume:
        raise ValueError(f"a loop on {list(lattice.shape)} encloses 0..{volume} plaquettes, not {area}")
    table = BesselTable(beta)
    n, log_i, log_z = _weights_log(table, volume)
    log_i1 = table.log(n + 1)
    return float(np.sum(np.exp(_power(log_i1, area) + _power(log_i, volume - area) - log_z)))


def creutz_ratio(lattice: Lattice, beta: float, r: int, t: int) -> float:
    """chi(R, T) = -log[W(R,T) W(R-1,T-1) / (W(R,T-1) W(R-1,T))] (W of area 0 is 1)."""
    w = lambda a: wilson_loop(lattice, beta, a)
    return -math.log(w(r * t) * w((r - 1) * (t - 1)) / (w(r * (t - 1)) * w((r - 1) * t)))


def string_tension_infinite_volume(beta: float) -> float:
    """sigma = -log(I_1(beta)/I_0(beta)): the area law W = (I_1/I_0)^A is exact in infinite volume."""
    return -math.log(float(ive(1, beta) / ive(0, beta)))


def exact_results(lattice: Lattice, beta: float) -> dict[str, Any]:
    """Every exact value, keyed like the observables (vector ones as lists in their index order)."""
    q2 = topological_charge_squared(lattice, beta)
    return {
        "log_partition_function": log_partition_function(lattice, beta),
        "plaquette": plaquette(lattice, beta),
        "topological_charge": 0.0,
        "topological_charge_squared": q2,
        "topological_susceptibility": q2 / lattice.volume,
        "wilson_loops": [wilson_loop(lattice, beta, r * t) for r, t in WILSON_SIZES],
        "creutz_ratio": [creutz_ratio(lattice, beta, r, r) for r in CREUTZ_SIZES],
        "string_tension": creutz_ratio(lattice, beta, 2, 2),
        "string_tension_infinite_volume": string_tension_infinite_volume(beta),
    }
