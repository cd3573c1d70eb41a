"""Short training runs for tests through the generic trainer (``lattgen.train.train``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from lattgen import make_generator
from lattgen.train import METRICS, read_metrics, train


def adam_steps(model, action, *, n_steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
               data: torch.Tensor | None = None) -> list[float]:
    """``n_steps`` Adam steps (constant lr, no clipping) by reverse KL, or on ``model.data_loss``
    over ``data`` when given; returns the loss of every step (one metrics record per step)."""
    dtype = "float64" if model.dtype == torch.float64 else "float32"
    cfg = {"max_steps": n_steps, "batch_size": batch_size, "lr": lr, "schedule": "constant",
           "grad_clip": 0.0, "log_every": 1, "eval_batch": 2, "dtype": dtype}
    with tempfile.TemporaryDirectory() as tmp:
        if data is not None:
            torch.save(data, Path(tmp) / "data.pt")
            cfg.update(loss="forward_kl", data=str(Path(tmp) / "data.pt"))
        train(model, action, cfg, out_dir=Path(tmp) / "run", generator=make_generator(seed, model.device))
        return [r["loss"] for r in read_metrics(Path(tmp) / "run" / METRICS)]
