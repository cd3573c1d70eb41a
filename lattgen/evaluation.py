"""Sampling quality of a model during training: log-weights log w = -S - log q of fresh samples."""

from __future__ import annotations

import torch

from .action import Action
from .model import GenerativeModel
from .reweight import draw_weighted, log_weight_summary


@torch.no_grad()
def evaluation_log_weights(model: GenerativeModel, action: Action, n: int, generator: torch.Generator,
                           batch_size: int = 1024) -> torch.Tensor:
    """float64 log-weights -S - log q of n fresh samples, drawn in eval mode (no gradients)."""
    was_training = model.training
    model.eval()
    try:
        log_w, _ = draw_weighted(model, action, n, generator=generator, batch_size=batch_size)
    finally:
        model.train(was_training)
    return log_w


def summarise_log_weights(log_w: torch.Tensor) -> dict[str, float]:
    """The metrics of ``evaluate`` from a set of log-weights."""
    summary = log_weight_summary(log_w)
    summary.pop("finite_fraction")
    return summary


def evaluate(model: GenerativeModel, action: Action, n: int, generator: torch.Generator,
             batch_size: int = 1024) -> dict[str, float]:
    """Sampling quality of q on n fresh samples from log w = -S - log q (float64).

    ``ess``: importance-weight ESS/N = (sum w)^2 / (N sum w^2); ``acceptance``: expected IMH
    acceptance at stationarity from the same weights (``reweight.expected_imh_acceptance``);
    ``log_w_mean``, ``log_w_var``: mean and variance of log w (var -> 0 as q -> p; -mean is an
    estimate of KL(q||p) - log Z, like the loss).
    """
    return summarise_log_weights(evaluation_log_weights(model, action, n, generator, batch_size))


