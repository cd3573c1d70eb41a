"""Tolerances from the conditioning of a computation, not bare absolute numbers.

Two float64 evaluations of the same quantity (a sampled log q against log_prob of the sample,
a cached pass against a full one) differ by rounding amplified by how sensitive the quantity
is to its input. Rounding phi by eps |phi| moves a scalar F(phi) by up to

    eps * (|F| + sum_i |dF/dphi_i| |phi_i|)

(its condition number times eps): a spline bin of slope 1e-3 makes that 1e7 eps on a value of
25, about 1e-9, on any CPU. A tolerance of ``ROUNDING_OPS`` such units covers the few
operations per site; a bug (a wrong density, a wrong cache) is off by O(1), far above it.
"""

from __future__ import annotations

import torch

#: rounding error of one evaluation in units of eps * (condition number): a few operations per
#: site; measured ratios on AVX512, AVX2 and default kernels stay below 3 (log q) and 1/30 of
#: the bound for the flows' round trips
ROUNDING_OPS = 16


def scalar_condition(f, x: torch.Tensor) -> torch.Tensor:
    """|f(x)| + sum_i |df/dx_i| |x_i| per configuration of the batch x, f: (B, ...) -> (B,)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = f(x)
        (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach().abs() + (g.abs() * x.detach().abs()).flatten(1).sum(1)


def assert_close_to_rounding(a: torch.Tensor, b: torch.Tensor, condition: torch.Tensor, what: str,
                             ops: float = ROUNDING_OPS) -> None:
    """|a - b| <= ops * eps * condition elementwise (condition broadcast against a)."""
    eps = torch.finfo(a.dtype).eps
    tol = ops * eps * condition
    worst = float(((a - b).detach().abs() / tol).max())
    assert worst <= 1.0, f"{what}: difference {worst:.3g} x its rounding tolerance"
