"""Gauge-invariant observables of 2D U(1) on link angles (registered with ``field="circle"``).

All are functions of the plaquette angles theta_P (``action.plaquette_angles``), so they are
gauge invariant by construction. Q = (1/2 pi) sum_P wrap(theta_P) is an integer on the torus
(sum_P theta_P = 0 exactly: every link enters twice with opposite signs). A rectangular R x T
Wilson loop is exp(i sum of the unwrapped theta_P it encloses) (inner links cancel); its real
part is averaged over positions and both orientations.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lattgen import Lattice, Observable, wrap_angle

from .action import plaquette_angles
from .exact import CREUTZ_SIZES, WILSON_SIZES


def _plaq(theta: torch.Tensor) -> torch.Tensor:
    return plaquette_angles(theta.to(torch.float64))


def topological_charge_of(theta: torch.Tensor) -> torch.Tensor:
    """Q = (1/2 pi) sum_P wrap(theta_P), float64 (batch,), rounded to the integer it equals up to rounding."""
    q = wrap_angle(_plaq(theta)).sum(dim=(1, 2)) / (2 * math.pi)
    return torch.round(q)


def block_sum(p: torch.Tensor, r: int, t: int) -> torch.Tensor:
    """sum of p over the r x t block starting at each x (periodic), same shape as p (batch, L1, L2)."""
    rows = p.clone()
    for i in range(1, r):
        rows = rows + torch.roll(p, shifts=-i, dims=1)
    out = rows.clone()
    for j in range(1, t):
        out = out + torch.roll(rows, shifts=-j, dims=2)
    return out


def wilson_loops_of(theta: torch.Tensor, sizes=WILSON_SIZES) -> torch.Tensor:
    """<Re W(R, T)> per configuration, (batch, len(sizes)), averaged over x and both orientations."""
    p = _plaq(theta)
    cols = []
    for r, t in sizes:
        w = torch.cos(block_sum(p, r, t)).mean(dim=(1, 2))
        if r != t:
            w = 0.5 * (w + torch.cos(block_sum(p, t, r)).mean(dim=(1, 2)))
        cols.append(w)
    return torch.stack(cols, dim=-1)


def _creutz(means: np.ndarray) -> np.ndarray:
    w = dict(zip(WILSON_SIZES, means))
    w[(1, 0)] = w[(0, 0)] = 1.0
    out = []
    for r in CREUTZ_SIZES:
        out.append(-math.log(abs(w[(r, r)] * w[(r - 1, r - 1)])) + 2 * math.log(abs(w[(r - 1, r)])))
    return np.asarray(out)


def make_plaquette(lattice: Lattice) -> Observable:
    return Observable("plaquette", lambda th: torch.cos(_plaq(th)).mean(dim=(1, 2))[:, None],
                      doc="<cos theta_P>, averaged over plaquettes")


def make_topological_charge(lattice: Lattice) -> Observable:
    return Observable("topological_charge", lambda th: topological_charge_of(th)[:, None],
                      doc="Q = (1/2 pi) sum_P wrap(theta_P), an integer; <Q> = 0")


def make_topological_charge_squared(lattice: Lattice) -> Observable:
    return Observable("topological_charge_squared", lambda th: (topological_charge_of(th) ** 2)[:, None],
                      doc="<Q^2>")


def make_topological_susceptibility(lattice: Lattice) -> Observable:
    volume = lattice.volume
    return Observable("topological_susceptibility",
                      lambda th: (topological_charge_of(th) ** 2 / volume)[:, None],
                      doc="chi_t = <Q^2> / V")


def make_wilson_loops(lattice: Lattice) -> Observable:
    labels = tuple(f"{r}x{t}" for r, t in WILSON_SIZES)
    return Observable("wilson_loops", wilson_loops_of, derive=lambda m: np.asarray(m), index="RxT",
                      index_values=labels, doc="<Re W(R, T)> of rectangular loops, R x T in " + ", ".join(labels))


def make_creutz_ratio(lattice: Lattice) -> Observable:
    return Observable("creutz_ratio", wilson_loops_of, derive=_creutz, index="R",
                      index_values=CREUTZ_SIZES,
                      doc="Creutz ratios chi(R,R) = -log[W(R,R) W(R-1,R-1) / W(R-1,R)^2], R = 2, 3")


def make_string_tension(lattice: Lattice) -> Observable:
    return Observable("string_tension", wilson_loops_of, derive=lambda m: _creutz(m)[0],
                      doc="string tension estimate chi(2,2) (exact: -log(I_1/I_0) in infinite volume)")


#: name -> (factory, doc) of the observables for link angles
OBSERVABLES = {
    "plaquette": (make_plaquette, "<cos theta_P> averaged over plaquettes"),
    "topological_charge": (make_topological_charge, "Q = (1/2 pi) sum_P wrap(theta_P) (integer)"),
    "topological_charge_squared": (make_topological_charge_squared, "<Q^2>"),
    "topological_susceptibility": (make_topological_susceptibility, "<Q^2>/V"),
    "wilson_loops": (make_wilson_loops, "<W(R,T)> for small rectangular loops"),
    "creutz_ratio": (make_creutz_ratio, "Creutz ratios chi(2,2), chi(3,3)"),
    "string_tension": (make_string_tension, "string tension estimate from the Creutz ratio chi(2,2)"),
}
