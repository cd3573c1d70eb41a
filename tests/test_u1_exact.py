"""Exact results of 2D U(1) on the torus (lattgen_u1.exact) against independent integrals and limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lattgen_u1 import U1Action
from lattgen_u1.exact import (
    exact_results,
    log_partition_function,
    plaquette,
    string_tension_infinite_volume,
    susceptibility_infinite_volume,
    topological_charge_squared,
    wilson_loop,
)
from lattgen_u1.observables import topological_charge_of, wilson_loops_of
from scipy import integrate

from lattgen import Lattice

pytestmark = pytest.mark.numerical


#: links of the 2 x 2 torus left free by the maximal-tree gauge theta_1(0,0) = theta_2(0,0) = theta_2(1,0) = 0
FREE_LINKS = ((0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1))


def link_grid(n: int) -> torch.Tensor:
    """Every configuration of the 2 x 2 torus in a maximal-tree gauge (exact for gauge-invariant
    integrands: the tree's links integrate out) on an n^5 midpoint grid of the free links."""
    a = -math.pi + 2 * math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    grids = torch.meshgrid(*([a] * len(FREE_LINKS)), indexing="ij")
    theta = torch.zeros((n ** len(FREE_LINKS), 2, 2, 2), dtype=torch.float64)
    for (mu, x, y), g in zip(FREE_LINKS, grids):
        theta[:, mu, x, y] = g.reshape(-1)
    return theta


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_smooth_averages_against_a_link_integral_on_the_2x2_torus(beta):
    """Z, <cos P> and the 1x2 Wilson loop by the rectangle rule over the links, with the real action
    and observables (periodic analytic integrands: the error falls like I_{n/2}(beta)^2, below
    1e-12 at n = 14), against the character expansion."""
    lat = Lattice([2, 2])
    theta = link_grid(14)
    w = torch.exp(-U1Action(lat, beta).action_float64(theta))
    z = float(w.mean())  # Haar measure normalised to 1 per link
    assert math.log(z) == pytest.approx(log_partition_function(lat, beta), rel=1e-11, abs=1e-11)
    loops = wilson_loops_of(theta)
    assert float((loops[:, 0] * w).sum() / w.sum()) == pytest.approx(plaquette(lat, beta), rel=1e-10)
    assert float((loops[:, 1] * w).sum() / w.sum()) == pytest.approx(wilson_loop(lat, beta, 2), rel=1e-9)
    q = topological_charge_of(theta)
    assert torch.equal(q, torch.round(q)) and int(q.abs().max()) >= 1, "integer charges, some non-zero"


@pytest.mark.parametrize("beta", [0.5, 1.7, 3.0])
def test_q2_against_adaptive_quadrature_on_three_plaquettes(beta):
    """Three plaquettes on a torus (a 1 x 3 strip): with one link gauged to 0 the plaquettes are
    (-a, a - b, b), Q = +-1 exactly where |a - b| > pi, else 0; <Q^2> by adaptive quadrature of
    the smooth regions against the formula at V = 3 (any V: the expansion only counts plaquettes)."""
    def weight(b, a):
        return math.exp(beta * (math.cos(a) + math.cos(a - b) + math.cos(b)))

    total, _ = integrate.dblquad(weight, -math.pi, math.pi, -math.pi, math.pi, epsabs=0, epsrel=1e-12)
    upper, _ = integrate.dblquad(weight, 0, math.pi, -math.pi, lambda a: a - math.pi, epsabs=0, epsrel=1e-12)
    lower, _ = integrate.dblquad(weight, -math.pi, 0, lambda a: a + math.pi, math.pi, epsabs=0, epsrel=1e-12)
    assert topological_charge_squared(ThreePlaquettes(), beta) == pytest.approx((upper + lower) / total, rel=1e-9)


class ThreePlaquettes:
    """A stand-in lattice of volume 3 (extents >= 2 are required of a real one)."""

    volume = 3
    shape = (1, 3)


def test_large_volume_limits():
    """V -> infinity: chi_t -> <(phi/2pi)^2> of one plaquette (quadrature), W(A) -> (I1/I0)^A, the
    plaquette -> I1/I0; no overflow at V = 64^2 (I_0^V ~ 10^4000)."""
    for beta in (1.0, 4.0, 8.0):
        num, _ = integrate.quad(lambda p, b=beta: (p / (2 * math.pi)) ** 2 * math.exp(b * (math.cos(p) - 1)),
                                -math.pi, math.pi, epsabs=0, epsrel=1e-13)
        den, _ = integrate.quad(lambda p, b=beta: math.exp(b * (math.cos(p) - 1)), -math.pi, math.pi,
                                epsabs=0, epsrel=1e-13)
        assert susceptibility_infinite_volume(beta) == pytest.approx(num / den, rel=1e-11)
        big = Lattice([64, 64])
        ex = exact_results(big, beta)
        assert all(np.isfinite(v) for v in (ex["log_partition_function"], ex["topological_charge_squared"]))
        assert ex["topological_susceptibility"] == pytest.approx(num / den, rel=1e-9)
        ratio = math.exp(-string_tension_infinite_volume(beta))
        assert ex["plaquette"] == pytest.approx(ratio, rel=1e-12)
        assert ex["wilson_loops"][-1] == pytest.approx(ratio**9, rel=1e-10)
        assert ex["string_tension"] == pytest.approx(string_tension_infinite_volume(beta), rel=1e-10)


def test_small_beta_and_consistency():
    """beta -> 0: <cos P> ~ beta/2 and W(1x1) = <cos P>; <Q^2> grows with the volume at fixed beta."""
    lat = Lattice([8, 8])
    assert plaquette(lat, 1e-4) == pytest.approx(0.5e-4, rel=1e-3)
    ex = exact_results(lat, 2.0)
    assert ex["wilson_loops"][0] == pytest.approx(ex["plaquette"], rel=1e-12)
    assert topological_charge_squared(Lattice([16, 16]), 2.0) > ex["topological_charge_squared"]
