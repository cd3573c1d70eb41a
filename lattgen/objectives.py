"""Training objectives: reverse KL on the action (no data) and forward KL on saved configurations.

Reverse KL (Albergo, Kanwar, Shanahan, arXiv 1904.12072, eq. 8):

    L(theta) = E_{phi ~ q}[log q(phi) + S(phi)] = KL(q || p) - log Z  >=  -log Z,

estimated on a batch with phi = f_theta(z) reparameterised, so gradients flow through
``model.sample``. Forward KL minimises ``model.data_loss`` (-mean log q; a VAE's -ELBO) on
random mini-batches of data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .action import Action
from .checkpoints import safe_load
from .errors import ConfigError
from .model import GenerativeModel


def check_model_fits_loss(model: GenerativeModel, loss: str) -> None:
    """Reverse KL needs an exact density and no training data; say what to do otherwise."""
    if loss != "reverse_kl":
        return
    name = type(model).__name__
    if model.requires_data or not model.exact_density:
        raise ConfigError(
            f"train.loss: {name} cannot be trained by reverse KL (it "
            + ("needs training data" if model.requires_data else "only estimates its density")
            + '); set train.loss = "forward_kl" and train.data = "configs.pt" (for example from '
            "lattgen.make_training_data)"
        )


def reverse_kl_objective(model: GenerativeModel, action: Action, batch_size: int,
                         generator: torch.Generator) -> Callable[[], torch.Tensor]:
    """loss() = mean over phi ~ q of log q(phi) + S(phi) (reparameterised; an upper bound on -log Z).

    A ``ConditionalModel`` draws its couplings c per configuration from its trained box:
    mean of log q(phi|c) + S(phi; c) (``Action.action_at``)."""

    from .conditional import ConditionalModel

    if isinstance(model, ConditionalModel):  # amortised: couplings drawn per configuration
        def conditional_loss() -> torch.Tensor:
            c = model.draw_couplings(batch_size, generator)
            phi, log_q = model.sample_at(c, generator)
            return (log_q + action.action_at(phi, c)).mean()

        return conditional_loss

    def loss() -> torch.Tensor:
        phi, log_q = model.sample(batch_size, generator)
        return (log_q + action(phi)).mean()

    return loss


def load_training_data(path: str | Path, model: GenerativeModel, action: Action) -> torch.Tensor:
    """Configurations (N, *field shape) from a .pt file (safe loading), checked against the
    action's field space (shape, element type, finite values, the manifold's constraints)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"train.data: file {str(path)!r} does not exist")
    try:
        data = safe_load(path, ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"train.data: {exc}") from None
    space = action.field_space
    if not isinstance(data, torch.Tensor) or not (data.is_floating_point() or data.is_complex()):
        raise ConfigError(f"train.data: {path} must hold one tensor of shape (N, *{list(space.shape)})")
    if data.dim() != len(space.shape) + 1 or tuple(data.shape[1:]) != space.shape or data.shape[0] < 1:
        raise ConfigError(f"train.data: {path} holds a tensor of shape {tuple(data.shape)}; expected "
                          f"(N, {', '.join(map(str, space.shape))}) for lattice {list(action.lattice.shape)}")
    from .errors import LatticeError

    try:
        space.check(data, what=f"train.data {path}")
    except LatticeError as exc:
        raise ConfigError(str(exc)) from None
    return data


def forward_kl_objective(model: GenerativeModel, data: torch.Tensor, batch_size: int,
                         generator: torch.Generator) -> Callable[[], torch.Tensor]:
    """loss() = model.data_loss on a random mini-batch of data (-mean log q; a VAE's -ELBO)."""
    n = data.shape[0]

    def loss() -> torch.Tensor:
        idx = torch.randint(0, n, (batch_size,), generator=generator, device=data.device)
        return model.data_loss(data[idx], generator=generator)

    return loss
