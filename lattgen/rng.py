"""Random streams: every random draw of a run comes from one seeded ``torch.Generator``."""

from __future__ import annotations

import torch


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``: every random draw of a run uses it."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g
