"""Minimal training loops for this plugin's models (tests, benchmarks, and until the generic
trainer ``lattgen.train`` covers them): reverse KL for exact densities, data loss for the VAE.

Reverse KL (no data; Albergo, Kanwar, Shanahan, arXiv 1904.12072):
    L(theta) = E_{phi ~ q}[log q(phi) + S(phi)] = KL(q || p) - log Z  >=  -log Z,
with phi = f_theta(z) reparameterised, so gradients flow through ``model.sample``.

Data loss (forward KL / ELBO / IWAE): L(theta) = mean over a batch of training configurations
of ``model.data_loss(phi)``.
"""

from __future__ import annotations

import inspect

import torch

from lattgen.action import Action
from lattgen.errors import ConfigError, TrainingError
from lattgen.model import GenerativeModel


def reverse_kl_loss(model: GenerativeModel, action: Action, n: int, generator=None) -> torch.Tensor:
    """Per-configuration log q(phi) + S(phi) for n model samples (keeps gradients): shape (n,)."""
    phi, log_q = model.sample(n, generator)
    return log_q + action(phi)


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"the loss became {float(loss)} at step {step}; lower the learning rate or the batch "
            f"size, or start from the last good parameters"
        )


def train_reverse_kl(
    model: GenerativeModel, action: Action, *, n_steps: int, batch_size: int = 64, lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Adam on the reverse-KL loss; returns the loss of every step."""
    if not model.exact_density:
        raise ConfigError(
            f"reverse-KL training needs an exact density; {type(model).__name__} only estimates "
            f"q (train it on data with train_on_data)"
        )
    generator = torch.Generator(device=model.device).manual_seed(seed)
    return _adam_loop(model, lambda: reverse_kl_loss(model, action, batch_size, generator).mean(), n_steps, lr)


def train_on_data(
    model: GenerativeModel, data: torch.Tensor, *, n_steps: int, batch_size: int = 64,
    lr: float = 1e-3, seed: int = 0,
) -> list[float]:
    """Adam on ``model.data_loss`` over random mini-batches of ``data``; returns the losses.

    For the VAE this maximises the ELBO (or the IWAE bound, ``n_train_importance`` > 1).
    """
    model.lattice.check_field(data)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    data = data.to(device=model.device, dtype=model.dtype)
    kwargs = {"generator": generator} if "generator" in inspect.signature(model.data_loss).parameters else {}

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=model.device)
        return model.data_loss(data[idx], **kwargs)

    return _adam_loop(model, batch_loss, n_steps, lr)


def _adam_loop(model: GenerativeModel, loss_fn, n_steps: int, lr: float) -> list[float]:
    """n_steps of Adam on ``loss_fn()``, stopping with a TrainingError on a non-finite loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(n_steps):
        loss = loss_fn()
        _check_finite(loss, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
