"""Data parallelism on torch.distributed: process group, ranks, seeds and the few collectives lattgen uses.

``torchrun --nproc_per_node=N -m lattgen train|sample|compare ...`` starts N processes with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment; ``init(device)`` joins them
into one process group: NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"``: small host-side
values still go through gloo, without a device round trip), gloo on the CPU. Each rank takes
``cuda:LOCAL_RANK`` as its current device, so ``device = "cuda"`` in a config means "this
rank's GPU".

A process started without torchrun (or with one process) never creates a process group: every
helper here is then a no-op or the identity, ``world() == 1`` and ``rank() == 0``. The same
holds when the caller has initialised torch.distributed itself with a world of one; a caller
that initialised a larger group (its own launcher) gets the data-parallel code paths as well.

Who uses what: ``lattgen.train`` (gradients averaged by DistributedDataParallel, the time
budget decided by rank 0's clock, rank 0 writes); ``lattgen.sample`` (chains split over the
ranks, gathered to one chain set, analysed once); the samplers' tuners (``global_mean``: one
step size for every rank); the CLI and the compare harness (rank 0 alone writes and prints).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

#: environment variables torchrun sets for every worker
ENV_WORLD, ENV_RANK, ENV_LOCAL_RANK = "WORLD_SIZE", "RANK", "LOCAL_RANK"


def _dist():
    import torch.distributed as dist

    return dist


def _env_int(name: str, default: int) -> int:
    """An integer environment variable set by the launcher (``default`` if unset or malformed)."""
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


def launched() -> bool:
    """True in a worker that torchrun (or another launcher setting WORLD_SIZE > 1) started."""
    return _env_int(ENV_WORLD, 1) > 1


def env_rank() -> int:
    """This process's rank from the environment (0 without a launcher); valid before ``init``."""
    return _env_int(ENV_RANK, 0)


def secondary() -> bool:
    """A launcher's worker other than rank 0 (which should print only errors); valid before ``init``."""
    return launched() and env_rank() != 0


def active() -> bool:
    """A process group of more than one process is initialised: the data-parallel paths apply."""
    if not torch.distributed.is_available():
        return False
    dist = _dist()
    return dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Number of processes (1 without a process group)."""
    return _dist().get_world_size() if active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return _dist().get_rank() if active() else 0


def local_rank() -> int:
    """This process's rank on its node (LOCAL_RANK; 0 without a launcher)."""
    return _env_int(ENV_LOCAL_RANK, 0)


def is_main() -> bool:
    """Rank 0: the process that writes files and prints (True without a process group)."""
    return rank() == 0


def backend_for(device: str | torch.device) -> str:
    """``"cpu:gloo,cuda:nccl"`` for a CUDA device, ``"gloo"`` otherwise."""
    return "cpu:gloo,cuda:nccl" if torch.device(device).type == "cuda" else "gloo"


def check_device(device: str | torch.device) -> None:
    """Under a launcher each rank owns ``cuda:LOCAL_RANK``: refuse an explicit ``cuda:N``."""
    dev = torch.device(device)
    if launched() and dev.type == "cuda" and dev.index is not None:
        raise ConfigError(
            f"run.device: {str(device)!r} names one GPU, but under torchrun every rank takes its own "
            '(cuda:LOCAL_RANK); use device = "cuda"'
        )


def init(device: str | torch.device = "cpu") -> bool:
    """Join the process group torchrun prepared (idempotent); return whether one is active.

    Does nothing without a launcher (WORLD_SIZE unset or 1). With a CUDA ``device``, selects
    ``cuda:LOCAL_RANK`` as this process's current device and uses NCCL; gloo otherwise. The
    group is destroyed at interpreter exit.
    """
    if not launched():
        return active()
    dist = _dist()
    check_device(device)
    if dist.is_initialized():
        return active()
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError('run.device: "cuda" but torch sees no GPU on this node; use device = "cpu"')
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank()} but this node has {torch.cuda.device_count()} "
                              "GPU(s): start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local_rank())
    kwargs: dict[str, Any] = {}
    if dev.type == "cuda":  # bind NCCL to this rank's GPU (barriers and eager init use it)
        kwargs["device_id"] = torch.device("cuda", local_rank())
    dist.init_process_group(backend=backend_for(dev), **kwargs)
    atexit.register(shutdown)
    return active()


def shutdown() -> None:
    """Destroy the process group if this module (or anyone) initialised one.

    On gloo the ranks first meet at a barrier bounded to 10 s, so that no rank tears its worker
    threads down while another still talks to it (a rank that left early aborted at exit now and
    then: "terminate called without an active exception"); a rank that is gone or stuck only
    costs those seconds.
    """
    if torch.distributed.is_available() and _dist().is_initialized():
        dist = _dist()
        if dist.get_backend() == "gloo":
            # the other rank failed or left: destroy all the same
            with contextlib.suppress(Exception):
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=10))
        dist.destroy_process_group()


# -- seeds and shares ------------------------------------------------------------------------------
def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself on rank 0, so a one-process run
    draws exactly what a run without torchrun draws; for rank > 0 a 63-bit seed mixed from
    (seed, rank) by numpy's SeedSequence (streams of different ranks and seeds do not overlap in
    any practical sense)."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    if rank == 0:
        return int(seed)
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(rank),)).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """(count, offset) of part ``index`` when n items are dealt into ``parts`` contiguous parts
    as evenly as possible (the first n % parts parts get one more)."""
    base, extra = divmod(int(n), int(parts))
    count = base + (1 if index < extra else 0)
    offset = index * base + min(index, extra)
    return count, offset


# -- collectives (identity without a process group) ----------------------------------------------
def barrier() -> None:
    if active():
        _dist().barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (every rank gets bit-identical values); returns ``tensor``."""
    if active():
        _dist().all_reduce(tensor)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, in place; returns ``tensor``."""
    if active():
        _dist().all_reduce(tensor)
        tensor.div_(world())
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Minimum over ranks, in place; returns ``tensor``."""
    if active():
        dist = _dist()
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def global_mean(values: torch.Tensor) -> float:
    """Mean of every element of ``values`` on every rank (weighted by element counts), as a float."""
    if not active():
        return float(values.mean())
    acc = torch.stack([values.sum(dtype=torch.float64),
                       torch.tensor(values.numel(), dtype=torch.float64, device=values.device)]).cpu()
    _dist().all_reduce(acc)
    return float(acc[0] / acc[1])


def gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (sizes may differ), in rank order, on every rank, on the CPU."""
    if not active():
        return [tensor.detach().cpu()]
    return all_gather_object(tensor.detach().cpu())


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    _dist().all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (what the others pass is ignored)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def concat_ranks(arrays: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Concatenate per-rank numpy arrays along ``axis`` (the chain axis of a chain's records)."""
    return np.concatenate([np.asarray(a) for a in arrays], axis=axis)


def run_on_main(fn, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` on rank 0 alone, its result broadcast to every rank.

    A LattgenError raised on rank 0 is raised on every rank (instead of leaving the others
    waiting in the next collective). Without a process group: just ``fn(...)``.
    """
    if not active():
        return fn(*args, **kwargs)
    from .errors import LattgenError

    box: tuple[Any, BaseException | None] = (None, None)
    if is_main():
        try:
            box = (fn(*args, **kwargs), None)
        except LattgenError as exc:
            box = (None, exc)
    result, error = broadcast_object(box)
    if error is not None:
        raise error
    return result
