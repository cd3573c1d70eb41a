"""Circular RQ splines: bijections of the circle, exact log-det, smooth across the wrap."""

from __future__ import annotations

import math

import pytest
import torch
from lattgen_flows.circular import circular_rq_spline
from rounding import assert_close_to_rounding

from lattgen import wrap_angle

pytestmark = pytest.mark.numerical


def raw(shape, k, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn((*shape, k), generator=g, dtype=torch.float64) for _ in range(3)]


def circle_distance(a, b):
    return wrap_angle(a - b).abs()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 5])
def test_round_trip_and_log_det(seed, k):
    theta = wrap_angle(math.pi - 2 * math.pi * torch.rand(200, generator=torch.Generator().manual_seed(seed),
                                                              dtype=torch.float64))
    w, h, d = raw((200,), k, seed + 10)
    shift = torch.randn(200, generator=torch.Generator().manual_seed(seed + 20), dtype=torch.float64) * 3
    y, ld = circular_rq_spline(theta, w, h, d, shift=shift)
    assert bool(((y > -math.pi) & (y <= math.pi)).all()), "outputs wrapped into (-pi, pi]"
    back, ld_inv = circular_rq_spline(y, w, h, d, inverse=True, shift=shift)
    # slopes down to 1e-3: rounding eps (pi + |shift|) of y reaches theta amplified by |df^-1/dy|
    amplification = (math.pi + shift.abs()) * torch.exp(ld_inv.clamp(min=0))
    assert_close_to_rounding(circle_distance(back, theta), torch.zeros_like(theta), amplification,
                             "round trip")
    # ... and the log-det through its slope d log f'/d theta at that point
    x = theta.clone().requires_grad_(True)
    (curvature,) = torch.autograd.grad(circular_rq_spline(x, w, h, d, shift=shift)[1].sum(), x)
    assert_close_to_rounding(ld_inv, -ld, 1 + ld.abs() + curvature.abs() * amplification, "inverse log-det")
    # log|f'| against autograd (elementwise map: the Jacobian is diagonal)
    (g,) = torch.autograd.grad(circular_rq_spline(x, w, h, d, shift=shift)[0].sum(), x)
    torch.testing.assert_close(torch.log(g.abs()), ld, rtol=1e-9, atol=1e-9)


def test_zero_parameters_are_the_identity():
    theta = torch.linspace(-math.pi + 1e-3, math.pi, 101, dtype=torch.float64)
    zeros = [torch.zeros(101, 4, dtype=torch.float64)] * 3
    y, ld = circular_rq_spline(theta, *zeros)
    torch.testing.assert_close(y, theta, rtol=0, atol=1e-12)
    torch.testing.assert_close(ld, torch.zeros_like(ld), rtol=0, atol=1e-12)


def test_smooth_across_the_wrap():
    """f and f' are continuous at theta = pi ~ -pi: the map is a diffeomorphism of the circle."""
    w, h, d = raw((1,), 6, 3)
    delta = 1e-10
    ends = torch.tensor([math.pi - delta, -math.pi + delta], dtype=torch.float64)
    y, ld = circular_rq_spline(ends, w.expand(2, -1), h.expand(2, -1), d.expand(2, -1), shift=0.7)
    assert float(circle_distance(y[0], y[1])) < 1e-8, "f is continuous across the wrap"
    assert abs(float(ld[0] - ld[1])) < 1e-6, "f' is continuous across the wrap"


def test_monotone_and_onto():
    """A full turn of theta makes exactly one full turn of f(theta) (degree 1, increasing)."""
    theta = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)[1:]
    w, h, d = raw((1,), 8, 4, scale=2.0)
    y, _ = circular_rq_spline(theta, w.expand(theta.numel(), -1), h.expand(theta.numel(), -1),
                              d.expand(theta.numel(), -1), shift=-2.0)
    steps = wrap_angle(y.diff())
    assert bool((steps > 0).all())
    assert abs(float(steps.sum()) + float(wrap_angle(y[0] - y[-1])) - 2 * math.pi) < 1e-9
