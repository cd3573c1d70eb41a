"""Circular rational-quadratic splines: diffeomorphisms of the circle for angle-valued fields.

An RQ spline on [-pi, pi] with f(-pi) = -pi, f(pi) = pi and the same slope at both ends is
smooth across the wrap, so it maps the circle onto itself (Rezende et al., "Normalizing flows on
tori and spheres", arXiv 2002.02428; the spline of Durkan et al., arXiv 1906.04032). A rotation
theta -> theta + shift after it moves the fixed point -pi, so that the composition is a general
orientation-preserving diffeomorphism. The spline kernel is normflows'
``rational_quadratic_spline``; ours is the circular slope condition and the wrap. U(1) link flows
and the phases of CP^{N-1} flows use it.
"""

from __future__ import annotations

import math

import torch
from normflows.utils.splines import rational_quadratic_spline

from lattgen import wrap_angle

MIN_DERIVATIVE = 1e-3
MIN_BIN = 1e-3
#: raw slope giving slope 1 after normflows' softplus(raw) + MIN_DERIVATIVE: zero raws = identity
SLOPE_ONE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def circular_rq_spline(theta: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, slopes: torch.Tensor,
                       inverse: bool = False, shift: torch.Tensor | float | None = None):
    """theta' = wrap(f(theta) + shift) (or its inverse), elementwise, with log|dtheta'/dtheta|.

    ``theta`` in (-pi, pi] (any shape S); ``widths``, ``heights``, ``slopes``: (*S, K) raw
    parameters, K bins and K knot slopes (the knot at pi shares the slope of the knot at -pi).
    All-zero raws and no shift give the identity. The inverse takes theta' and returns theta.
    """
    derivatives = torch.cat([slopes, slopes[..., :1]], dim=-1) + SLOPE_ONE
    x = theta if shift is None or inverse is False else wrap_angle(theta - shift)
    y, log_jac = rational_quadratic_spline(
        x, widths, heights, derivatives, inverse=inverse, left=-math.pi, right=math.pi,
        bottom=-math.pi, top=math.pi, min_bin_width=MIN_BIN, min_bin_height=MIN_BIN,
        min_derivative=MIN_DERIVATIVE,
    )
    if not inverse and shift is not None:
        y = y + shift
    return wrap_angle(y), log_jac
