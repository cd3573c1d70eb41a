"""Small numerical kernels shared by the analysis and the reweighting code (one of each)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def finite_difference_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, steps: np.ndarray,
                               n_out: int) -> np.ndarray:
    """d f_j / d x_a, shape (n_out, x.size), by central differences with steps h_a (h_a <= 0: f
    does not vary with x_a, e.g. a constant primary, and the column is 0)."""
    jac = np.zeros((n_out, x.size))
    for a, h in enumerate(steps):
        if h > 0:
            up, down = x.copy(), x.copy()
            up[a] += h
            down[a] -= h
            jac[:, a] = (f(up) - f(down)) / (2.0 * h)
    return jac


def kish_ess(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size (sum w)^2 / sum w^2 as a 0-d float64 tensor on log_w's device.

    exp(2 logsumexp(log w) - logsumexp(2 log w)): overflow-free for any finite log-weights, no
    host sync, no checks (callers validate).
    """
    lw = log_w.to(torch.float64).reshape(-1)
    return torch.exp(2.0 * torch.logsumexp(lw, 0) - torch.logsumexp(2.0 * lw, 0))
