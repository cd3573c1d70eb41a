"""What training shares between data-parallel ranks, behind one interface that is a no-op alone.

``replicas()`` gives ``SingleProcess`` (no process group: every method is the identity) or
``DataParallel`` (a torch.distributed group of W > 1 ranks, e.g. under torchrun;
docs/cluster.md): the global batch is split over the ranks, each rank draws from its own stream,
DistributedDataParallel averages the gradients, one all-reduce per step shares rank 0's clock and
any rank's Ctrl-C, rank 0 alone reads and writes files, and checkpoints hold every rank's random
states. The trainer (``lattgen.train``) calls these methods and has no branch on the mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import distributed
from .errors import ConfigError
from .model import GenerativeModel

_NO_BAD_STEP = torch.iinfo(torch.int64).max


class SingleProcess:
    """One process: the whole batch, this process's clock and streams, this process writes."""

    active = False
    world = 1
    rank = 0
    main = True

    def local_batch(self, batch_size: int) -> int:
        """Configurations this rank draws per step for a global ``batch_size``."""
        return batch_size

    def seed_stream(self, generator: torch.Generator) -> None:
        """Give this rank its own training stream (rank 0 keeps the run's)."""

    def wrap(self, model: GenerativeModel, objective: Callable[[], torch.Tensor],
             probe: Callable[[], Callable[[], torch.Tensor]], device: torch.device) -> Callable[[], torch.Tensor]:
        """The objective whose backward leaves the gradients the ranks agree on."""
        return objective

    def on_main(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(*args)`` run on rank 0, its result given to every rank."""
        return fn(*args)

    def tick(self, elapsed: float, interrupt: bool) -> tuple[float, bool]:
        """(training seconds, stop for Ctrl-C) every rank agrees on at a step boundary."""
        return elapsed, interrupt

    def first_bad_step(self, bad_step: torch.Tensor) -> int:
        """The first non-finite step over all ranks (-1: none); one host sync."""
        return int(bad_step)

    def rng_states(self, train: torch.Tensor, eval_: torch.Tensor) -> dict[str, Any]:
        """The checkpoint's RNG entry: rank 0's streams (and every rank's when data-parallel)."""
        return {"train": train, "eval": eval_}

    def restore_rng(self, rng: Mapping[str, Any], generator: torch.Generator,
                    eval_generator: torch.Generator, device: torch.device) -> None:
        """This rank's training and evaluation streams from a checkpoint's RNG entry."""
        generator.set_state(rng["train"])
        eval_generator.set_state(rng["eval"])

    def evaluation_log_weights(self, draw: Callable[[int, int], torch.Tensor], n: int, batch: int) -> torch.Tensor:
        """log-weights of ``n`` fresh samples: ``draw(count, batch)`` of this rank's share, gathered."""
        return draw(n, batch)

    def mean(self, stats: torch.Tensor) -> list[float]:
        """Per-rank statistics averaged over the ranks, on the host."""
        return stats.cpu().tolist()

    def same_everywhere(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait for every rank."""


class DataParallel(SingleProcess):
    """A torch.distributed group of W > 1 ranks (see the module docstring)."""

    active = True

    def __init__(self) -> None:
        self.world, self.rank = distributed.world(), distributed.rank()
        self.main = self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world:
            raise ConfigError(f"train.batch_size: {batch_size} is the global batch and must be divisible by "
                              f"the number of processes ({self.world}); for example "
                              f"{self.world * -(-batch_size // self.world)}")
        return batch_size // self.world

    def seed_stream(self, generator: torch.Generator) -> None:
        if self.rank > 0:
            generator.manual_seed(distributed.rank_seed(generator.initial_seed(), self.rank))

    def wrap(self, model, objective, probe, device):
        """``objective`` in DistributedDataParallel (bucketed all-reduce overlapping the backward
        pass); DDP broadcasts rank 0's parameters and buffers when it is built.
        ``find_unused_parameters`` only if ``probe()`` finds a parameter the loss does not reach
        (it costs a graph traversal every step)."""
        from torch.nn.parallel import DistributedDataParallel

        unused = unused_parameters(model, probe())
        # buffers (masks, lattice tables) are built identically everywhere: synced once at
        # construction, never per forward (the keyword changed name in torch 2.13)
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        return DistributedDataParallel(
            _Objective(model, objective),
            device_ids=[device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda" else None,
            find_unused_parameters=bool(unused),
            **no_buffer_sync,
        )

    def on_main(self, fn, *args):
        return distributed.run_on_main(fn, *args)

    def tick(self, elapsed, interrupt):
        """Rank 0's clock and any rank's flag: one all-reduce of two host numbers."""
        shared = torch.tensor([elapsed if self.main else 0.0, 1.0 if interrupt else 0.0], dtype=torch.float64)
        elapsed, stop = distributed.all_reduce_sum(shared).tolist()
        return elapsed, stop > 0

    def first_bad_step(self, bad_step):
        bad = torch.where(bad_step < 0, _NO_BAD_STEP, bad_step).reshape(1)
        bad = int(distributed.all_reduce_min(bad))
        return -1 if bad == _NO_BAD_STEP else bad

    def rng_states(self, train, eval_):
        states = distributed.all_gather_object((train, eval_))
        return {"train": train, "eval": eval_, "train_ranks": [s[0] for s in states],
                "eval_ranks": [s[1] for s in states]}

    def restore_rng(self, rng, generator, eval_generator, device):
        """Resumed with the same number of ranks, each continues its own stream (bit-identical);
        with another number, rank 0 continues the saved main stream and rank r > 0 starts a
        stream seeded with ``rank_seed(s, r)``, s drawn from that saved state."""
        if len(rng.get("train_ranks", ())) == self.world:
            generator.set_state(rng["train_ranks"][self.rank])
            eval_generator.set_state(rng["eval_ranks"][self.rank])
        elif self.rank == 0:
            super().restore_rng(rng, generator, eval_generator, device)
        else:
            saved = torch.Generator(device=device)
            saved.set_state(rng["train"])
            base = int(torch.randint(0, 2**62, (1,), generator=saved, device=device))
            generator.manual_seed(distributed.rank_seed(base, self.rank))
            seed = torch.randint(0, 2**62, (1,), generator=generator, device=device)
            eval_generator.manual_seed(int(seed))

    def evaluation_log_weights(self, draw, n, batch):
        """Each rank draws its share from its own stream; the log-weights are gathered (the same
        numbers on every rank)."""
        count, _ = distributed.split(n, self.world, self.rank)
        local = draw(count, max(batch // self.world, 1)) if count > 0 else torch.zeros(0, dtype=torch.float64)
        return torch.cat(distributed.gather_tensors(local))

    def mean(self, stats):
        return distributed.all_reduce_mean(stats).cpu().tolist()

    def same_everywhere(self, obj):
        return distributed.broadcast_object(obj)

    def barrier(self):
        distributed.barrier()


def replicas() -> SingleProcess:
    """The data-parallel context of this process (``SingleProcess`` without a process group)."""
    return DataParallel() if distributed.active() else SingleProcess()


class _Objective(torch.nn.Module):
    """The training loss as a module: DistributedDataParallel wraps modules and prepares its
    gradient all-reduce in ``forward``, while the loss calls ``model.sample``, not ``model()``."""

    def __init__(self, model: GenerativeModel, objective: Callable[[], torch.Tensor]):
        super().__init__()
        self.model = model
        self._objective = objective

    def forward(self) -> torch.Tensor:
        return self._objective()


def unused_parameters(model: GenerativeModel, probe: Callable[[], torch.Tensor]) -> list[str]:
    """Names of trainable parameters that get no gradient from one evaluation of ``probe``
    (a loss on a tiny batch from a throwaway generator); gradients are cleared afterwards."""
    model.zero_grad(set_to_none=True)
    probe().backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    return unused
