"""The trainer: fit a generative model q to exp(-S)/Z by reverse KL (or forward KL from data).

Reverse KL (no data; Albergo, Kanwar, Shanahan, arXiv 1904.12072, eq. 8):

    L(theta) = E_{phi ~ q}[log q(phi) + S(phi)] = KL(q || p) - log Z  >=  -log Z,

estimated on a batch with phi = f_theta(z) reparameterised, so gradients flow through
``model.sample``. The loss reaches -log Z exactly when q = p. Forward KL (``loss =
"forward_kl"``) minimises -mean log q(phi_data) over saved configurations (``model.data_loss``,
which a VAE overrides with its -ELBO).

The loop: Adam, learning rate on a cosine over the budget (``BudgetSchedule``), gradient-norm
clipping, budget by ``max_steps`` and/or ``max_time_s``. Per step it does what a minimal
hand-written loop does plus a few device-side scalar ops (a finiteness flag and a running loss
sum): no host sync except the clock read the time budget needs. Every ``log_every`` steps it
checks finiteness (one sync), evaluates the model on a fresh batch (``evaluate``) and appends a
record to ``metrics.jsonl``; every ``checkpoint_every`` steps and at the end it writes
``checkpoint.pt`` atomically. See docs/training.md.

Run directory files written here (``lattgen.rundir`` adds config.toml):

* ``checkpoint.pt``: model, optimizer and schedule state, step, elapsed training time, RNG states
  (loaded with ``torch.load(weights_only=True)``: tensors and plain containers only);
* ``model.pt``: the final model ``state_dict``;
* ``metrics.jsonl``: one JSON record per ``log_every`` steps (see ``evaluate``).

Resume: rerunning with the same ``out_dir`` continues from the checkpoint: the step count, the
elapsed time (so the remaining time budget), the optimizer moments and both random streams, so
an interrupted run with a step budget ends with the same parameters as an uninterrupted one.
Ctrl-C is deferred to the next step boundary, where a checkpoint is written before
KeyboardInterrupt is re-raised. A NaN/inf loss or gradient stops training with a
``TrainingError`` naming the step; the last good checkpoint is kept, never overwritten.

Data-parallel (every rank of a torch.distributed group calls ``train``, e.g. under torchrun;
docs/cluster.md): the global batch is split over the ranks, each rank draws from its own stream,
DistributedDataParallel averages the gradients, one all-reduce per step shares rank 0's clock
and any rank's Ctrl-C, and rank 0 alone reads and writes the run directory; checkpoints hold
every rank's random states. With one process none of this runs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .action import Action
from .config import TRAIN_PARAMS
from .errors import ConfigError, RunDirError, TrainingError
from .model import GenerativeModel
from .params import validate_params
from .reweight import draw_weighted, log_weight_summary

DTYPES = {"float64": torch.float64, "float32": torch.float32}
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
#: checkpoint layout version (bump when the keys change)
CHECKPOINT_FORMAT = 1
#: seconds between progress callbacks that carry no new metrics
PROGRESS_INTERVAL_S = 0.25

Progress = Callable[[int, "int | None", Mapping[str, Any]], None]


@dataclass
class TrainResult:
    """What a call of ``train`` did: steps done in total, training time, why it stopped."""

    step: int
    elapsed_s: float
    #: "max_steps" or "max_time_s" (budget exhausted; also when it already was at the start)
    stopped_by: str
    #: step the call started from (0 for a fresh run, > 0 after a resume)
    start_step: int
    #: the last metrics record (see ``evaluate``)
    metrics: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def resumed(self) -> bool:
        return self.start_step > 0

    def summary(self) -> str:
        """One line for the terminal."""
        m = self.metrics
        parts = [f"trained {self.step} steps in {self.elapsed_s:.1f} s (stopped by {self.stopped_by}"
                 + (f", resumed at step {self.start_step})" if self.resumed else ")")]
        for key, label in (("loss", "loss"), ("ess", "ESS/N"), ("acceptance", "acceptance")):
            if m.get(key) is not None:
                parts.append(f"{label} {m[key]:.4g}")
        return ", ".join(parts)


# -- configuration --------------------------------------------------------------------------------
def check_train_config(train_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A [train] section with defaults filled (validated against ``TRAIN_PARAMS``)."""
    cfg = validate_params(TRAIN_PARAMS, {k: v for k, v in train_cfg.items() if v is not None}, "train")
    if cfg["max_steps"] is None and cfg["max_time_s"] is None:
        raise ConfigError("train.max_steps: set max_steps and/or max_time_s (the training budget)")
    if cfg["loss"] == "forward_kl" and not cfg["data"]:
        raise ConfigError('train.data: loss = "forward_kl" needs a .pt file of configurations '
                          "(a tensor of shape (N, *lattice))")
    return cfg


def check_model_fits_loss(model: GenerativeModel, loss: str) -> None:
    """Reverse KL needs an exact density and no training data; say what to do otherwise."""
    if loss != "reverse_kl":
        return
    name = type(model).__name__
    if getattr(model, "requires_data", False) or not getattr(model, "exact_density", True):
        raise ConfigError(
            f"train.loss: {name} cannot be trained by reverse KL (it "
            + ("needs training data" if model.requires_data else "only estimates its density")
            + '); set train.loss = "forward_kl" and train.data = "configs.pt" (e.g. from '
            "lattgen_generative.make_training_data)"
        )


# -- learning-rate schedule -----------------------------------------------------------------------
class BudgetSchedule:
    """Learning rate as a function of the fraction of the budget used.

    f = max(step / max_steps, elapsed / max_time_s) over the budgets that are set (so with both,
    the one closer to exhaustion drives it), clipped to [0, 1];
    cosine: lr = lr0 (1 + cos(pi f)) / 2 (Loshchilov & Hutter, arXiv 1608.03983, without
    restarts); constant: lr = lr0. A pure function of (config, step, elapsed time), so resuming
    reproduces it; ``state_dict`` records the settings in the checkpoint.
    """

    def __init__(self, lr: float, kind: str, max_steps: int | None, max_time_s: float | None):
        if kind not in ("cosine", "constant"):
            raise ConfigError(f"train.schedule: {kind!r} is not valid; choose cosine or constant")
        self.lr0 = float(lr)
        self.kind = kind
        self.max_steps = max_steps
        self.max_time_s = max_time_s

    def fraction(self, step: int, elapsed_s: float) -> float:
        f = 0.0
        if self.max_steps:
            f = max(f, step / self.max_steps)
        if self.max_time_s:
            f = max(f, elapsed_s / self.max_time_s)
        return min(f, 1.0)

    def lr(self, step: int, elapsed_s: float) -> float:
        if self.kind == "constant":
            return self.lr0
        return 0.5 * self.lr0 * (1.0 + math.cos(math.pi * self.fraction(step, elapsed_s)))

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr0, "kind": self.kind, "max_steps": self.max_steps,
                "max_time_s": self.max_time_s}


def budget_exhausted(cfg: Mapping[str, Any], step: int, elapsed_s: float) -> str | None:
    """Which budget is used up ("max_steps" / "max_time_s"), or None to keep training."""
    if cfg["max_steps"] is not None and step >= cfg["max_steps"]:
        return "max_steps"
    if cfg["max_time_s"] is not None and elapsed_s >= cfg["max_time_s"]:
        return "max_time_s"
    return None


# -- objectives -----------------------------------------------------------------------------------
def reverse_kl_objective(model: GenerativeModel, action: Action, batch_size: int,
                         generator: torch.Generator) -> Callable[[], torch.Tensor]:
    """loss() = mean over phi ~ q of log q(phi) + S(phi) (reparameterised; an upper bound on -log Z)."""

    def loss() -> torch.Tensor:
        phi, log_q = model.sample(batch_size, generator)
        return (log_q + action(phi)).mean()

    return loss


def load_training_data(path: str | Path, model: GenerativeModel) -> torch.Tensor:
    """Configurations (N, *lattice) from a .pt file (safe loading), checked against the lattice."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"train.data: file {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many unrelated types
        raise ConfigError(f"train.data: {path} is not a tensor file torch.load can read safely: {exc}") from None
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise ConfigError(f"train.data: {path} must hold one floating-point tensor of shape (N, *lattice)")
    shape = tuple(model.lattice.shape)
    if data.dim() != len(shape) + 1 or tuple(data.shape[1:]) != shape or data.shape[0] < 1:
        raise ConfigError(f"train.data: {path} holds a tensor of shape {tuple(data.shape)}; expected "
                          f"(N, {', '.join(map(str, shape))}) for lattice {list(shape)}")
    return data


def forward_kl_objective(model: GenerativeModel, data: torch.Tensor, batch_size: int,
                         generator: torch.Generator) -> Callable[[], torch.Tensor]:
    """loss() = model.data_loss on a random mini-batch of data (-mean log q; a VAE's -ELBO)."""
    import inspect

    n = data.shape[0]
    takes_generator = "generator" in inspect.signature(model.data_loss).parameters

    def loss() -> torch.Tensor:
        idx = torch.randint(0, n, (batch_size,), generator=generator, device=data.device)
        if takes_generator:
            return model.data_loss(data[idx], generator=generator)
        return model.data_loss(data[idx])

    return loss


# -- evaluation -----------------------------------------------------------------------------------
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


# -- checkpoints ----------------------------------------------------------------------------------
def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by ``train`` (safe loading: tensors and plain containers only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many unrelated types
        raise RunDirError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to start "
                          "training over") from None
    needed = {"format", "model", "optimizer", "step", "elapsed_s", "rng"}
    if not isinstance(ckpt, dict) or not needed <= set(ckpt):
        raise RunDirError(f"{path} is not a lattgen training checkpoint; delete it to start over")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise RunDirError(f"{path} has checkpoint format {ckpt['format']}, this lattgen writes "
                          f"{CHECKPOINT_FORMAT}; delete it to start over")
    return ckpt


# -- metrics --------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Floats that JSON can hold (NaN/inf become null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (an empty list if there is none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


# -- interruption ---------------------------------------------------------------------------------
class _Interrupt:
    requested = False


@contextmanager
def deferred_interrupt(data_parallel: bool = False):
    """Defer SIGINT (Ctrl-C) to the next step boundary; a second Ctrl-C interrupts at once.

    Only in the main thread (elsewhere signals cannot be handled and nothing changes).
    ``data_parallel``: SIGTERM is deferred too, and a repeated signal only repeats the request:
    torchrun forwards the terminal's Ctrl-C (and a scheduler's SIGTERM) to every worker right
    after the worker got its own, and kills them itself if they do not exit in time; an
    immediate interrupt inside a step would leave the ranks at different steps.
    """
    flag = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    signums = (signal.SIGINT, signal.SIGTERM) if data_parallel else (signal.SIGINT,)
    previous = {s: signal.getsignal(s) for s in signums}
    if any(h is None for h in previous.values()):  # a handler installed outside Python: leave it
        yield flag
        return

    def handler(signum, frame):
        if flag.requested and not data_parallel:
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
            raise KeyboardInterrupt
        flag.requested = True

    for s in signums:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# -- the trainer ----------------------------------------------------------------------------------
def _grad_norm(params: list[torch.nn.Parameter], clip: float) -> torch.Tensor:
    """Clip the total gradient norm to ``clip`` (0: no clipping) and return the norm before."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads)


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


def data_parallel(model: GenerativeModel, objective: Callable[[], torch.Tensor],
                  probe: Callable[[], torch.Tensor], device: torch.device) -> Callable[[], torch.Tensor]:
    """``objective`` wrapped in DistributedDataParallel: calling it returns this rank's loss, and
    its backward leaves the gradients averaged over the ranks (bucketed all-reduce overlapping
    the backward pass). DDP broadcasts rank 0's parameters and buffers when it is built.
    ``find_unused_parameters`` is switched on only if ``probe`` finds a parameter the loss does
    not reach (it costs a graph traversal every step)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    unused = unused_parameters(model, probe)
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


_NO_BAD_STEP = torch.iinfo(torch.int64).max


class _Run:
    """The mutable state of one training call: model, optimizer, RNGs, step and clock.

    Data-parallel (a process group of W > 1 ranks, see ``lattgen.distributed``): every rank
    holds the same model and optimizer state; ``tick`` shares rank 0's clock and any rank's
    Ctrl-C, so every rank takes the same learning rate and stops at the same step; rank 0 alone
    reads and writes files.
    """

    def __init__(self, model, action, cfg, out_dir, generator, device, progress):
        self.model, self.action, self.cfg = model, action, cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = device
        self.dist = distributed.active()
        self.world, self.rank = distributed.world(), distributed.rank()
        self.main = self.rank == 0
        self.progress = progress if self.main else None
        self.generator = generator
        self.eval_generator = torch.Generator(device=device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError(f"{type(model).__name__} has no trainable parameters; nothing to train")
        self.optimizer = torch.optim.Adam(self.params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.schedule = BudgetSchedule(cfg["lr"], cfg["schedule"], cfg["max_steps"], cfg["max_time_s"])
        self.step = 0
        self.elapsed_base = 0.0
        self.t_start = time.perf_counter()
        self.last_checkpoint_step: int | None = None
        self.metrics: dict[str, Any] = {}
        # device-side accumulators: first non-finite step (-1: none) and the loss sum of the window
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.window_start = 0
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=device)
        self._last_report = 0.0

    # clock ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_base + (time.perf_counter() - self.t_start)

    # files ------------------------------------------------------------------------------------
    def path(self, name: str) -> Path | None:
        """A file of the run directory, on rank 0 (None on other ranks or without a directory)."""
        return self.out_dir / name if self.out_dir is not None and self.main else None

    def _read_checkpoint(self, resume: bool) -> dict[str, Any] | None:
        ckpt_path = self.path(CHECKPOINT)
        if resume and ckpt_path is not None and ckpt_path.is_file():
            return load_checkpoint(ckpt_path)
        return None

    def _restore_rng(self, rng: Mapping[str, Any]) -> None:
        """This rank's training and evaluation streams from a checkpoint's RNG states.

        A checkpoint of a data-parallel run holds every rank's states (``train_ranks``); resumed
        with the same number of ranks, each continues its own stream (bit-identical resume). With
        another number, rank 0 continues the saved main stream and rank r > 0 starts a stream
        seeded with ``rank_seed(s, r)``, s drawn from that saved state.
        """
        if len(rng.get("train_ranks", ())) == self.world and self.world > 1:
            self.generator.set_state(rng["train_ranks"][self.rank])
            self.eval_generator.set_state(rng["eval_ranks"][self.rank])
        elif self.rank == 0:
            self.generator.set_state(rng["train"])
            self.eval_generator.set_state(rng["eval"])
        else:
            saved = torch.Generator(device=self.device)
            saved.set_state(rng["train"])
            base = int(torch.randint(0, 2**62, (1,), generator=saved, device=self.device))
            self.generator.manual_seed(distributed.rank_seed(base, self.rank))
            seed = torch.randint(0, 2**62, (1,), generator=self.generator, device=self.device)
            self.eval_generator.manual_seed(int(seed))

    def restore(self, resume: bool) -> None:
        """Continue from out_dir/checkpoint.pt when resuming; else start fresh (seed the eval stream).

        Data-parallel: rank 0 reads the checkpoint and every rank loads what it read.
        """
        ckpt_path = self.out_dir / CHECKPOINT if self.out_dir is not None else None
        ckpt = distributed.run_on_main(self._read_checkpoint, resume) if self.dist else self._read_checkpoint(resume)
        if ckpt is not None:
            try:
                self.model.load_state_dict(ckpt["model"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise RunDirError(f"{ckpt_path} does not fit this model ({exc}); train into a new "
                                  "directory or delete the checkpoint") from None
            self._restore_rng(ckpt["rng"])
            self.step = int(ckpt["step"])
            self.elapsed_base = float(ckpt["elapsed_s"])
            self.last_checkpoint_step = self.step
            self.metrics = dict(ckpt.get("metrics", {}))
        else:
            if not resume and self.path(CHECKPOINT) is not None:  # starting over: no stale files
                for name in (CHECKPOINT, MODEL):
                    self.path(name).unlink(missing_ok=True)
            seed = torch.randint(0, 2**62, (1,), generator=self.generator, device=self.device)
            self.eval_generator.manual_seed(int(seed))
        self.window_start = self.step
        metrics_path = self.path(METRICS)
        if metrics_path is not None:
            truncate_metrics(metrics_path, self.step)

    def tick(self, interrupt_requested: bool) -> tuple[float, bool]:
        """(training seconds, stop for Ctrl-C) at a step boundary: this process's clock and flag,
        or, data-parallel, rank 0's clock and any rank's flag (one all-reduce of two host numbers),
        so every rank takes the same learning rate and budget decision."""
        if not self.dist:
            return self.elapsed(), interrupt_requested
        shared = torch.tensor([self.elapsed() if self.main else 0.0, 1.0 if interrupt_requested else 0.0],
                              dtype=torch.float64)
        elapsed, stop = distributed.all_reduce_sum(shared).tolist()
        return elapsed, stop > 0

    def first_bad_step(self) -> int:
        """The first step whose loss or gradient norm was NaN/inf (-1: none); over all ranks."""
        if not self.dist:
            return int(self.bad_step)
        bad = torch.where(self.bad_step < 0, _NO_BAD_STEP, self.bad_step).reshape(1)
        bad = int(distributed.all_reduce_min(bad))
        return -1 if bad == _NO_BAD_STEP else bad

    def check_finite(self) -> None:
        """Raise TrainingError if a loss or gradient was NaN/inf since the last check (one sync)."""
        bad = self.first_bad_step()
        if bad < 0:
            return
        kept = (f"the last good checkpoint (step {self.last_checkpoint_step}) in {self.out_dir} was kept"
                if self.last_checkpoint_step is not None else "no checkpoint had been written yet")
        raise TrainingError(
            f"the loss or its gradient became NaN/inf at step {bad + 1}; training stopped and "
            f"{kept}. Lower train.lr, tighten train.grad_clip, or use train.dtype = \"float64\""
        )

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (rank 0; every rank's RNG states when data-parallel)."""
        if self.out_dir is None:
            return
        self.check_finite()  # never overwrite a good checkpoint with NaN weights
        rng = {"train": self.generator.get_state(), "eval": self.eval_generator.get_state()}
        if self.dist:
            states = distributed.all_gather_object((rng["train"], rng["eval"]))
            rng["train_ranks"] = [s[0] for s in states]
            rng["eval_ranks"] = [s[1] for s in states]
        path = self.path(CHECKPOINT)
        if path is not None:
            atomic_save({
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "step": self.step,
                "elapsed_s": self.elapsed(),
                "world_size": self.world,
                "rng": rng,
                "train": {k: v for k, v in self.cfg.items() if v is not None},
                "metrics": {k: v for k, v in self.metrics.items() if isinstance(v, (int, float))},
            }, path)
        self.last_checkpoint_step = self.step

    def evaluate(self) -> dict[str, float]:
        """The metrics of ``evaluate`` on eval_batch fresh samples; data-parallel, each rank draws
        its share from its own stream and the log-weights are gathered (same numbers on every rank)."""
        n, batch = self.cfg["eval_batch"], max(self.cfg["batch_size"], 256)
        if not self.dist:
            return evaluate(self.model, self.action, n, self.eval_generator, batch_size=batch)
        count, _ = distributed.split(n, self.world, self.rank)
        local = (evaluation_log_weights(self.model, self.action, count, self.eval_generator,
                                        batch_size=max(batch // self.world, 1))
                 if count > 0 else torch.zeros(0, dtype=torch.float64))
        return summarise_log_weights(torch.cat(distributed.gather_tensors(local)))

    def log(self) -> None:
        """Check finiteness, evaluate, append a metrics record (one host sync)."""
        self.check_finite()
        n_window = max(self.step - self.window_start, 1)
        stats = torch.stack([self.loss_sum / n_window, self.grad_norm.to(torch.float64)])
        loss, gnorm = distributed.all_reduce_mean(stats).cpu().tolist() if self.dist else stats.cpu().tolist()
        record = {"step": self.step, "time": self.elapsed(), "loss": loss}
        record.update(self.evaluate())
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["grad_norm"] = gnorm
        if self.dist:  # rank 0's clock: the same record everywhere
            record = distributed.broadcast_object(record)
        self.metrics = record
        self.loss_sum.zero_()
        self.window_start = self.step
        path = self.path(METRICS)
        if path is not None:
            append_metrics(path, record)

    def report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if force or now - self._last_report >= PROGRESS_INTERVAL_S:
            self._last_report = now
            self.progress(self.step, self.cfg["max_steps"], dict(self.metrics))

    def one_step(self, objective: Callable[[], torch.Tensor], elapsed: float) -> None:
        """lr from the schedule; loss; backward; clip; Adam. Device-side finiteness bookkeeping only."""
        lr = self.schedule.lr(self.step, elapsed)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = objective()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = _grad_norm(self.params, self.cfg["grad_clip"])
        finite = torch.isfinite(loss.detach() + norm)
        self.bad_step = torch.where((self.bad_step < 0) & ~finite, self.step, self.bad_step)
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.grad_norm = norm.detach()


def train(
    model: GenerativeModel,
    action: Action,
    train_cfg: Mapping[str, Any],
    *,
    out_dir: str | Path | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` on ``action`` with a resolved [train] section; see the module docstring.

    ``out_dir`` (None: no files) receives checkpoint.pt, model.pt and metrics.jsonl; with
    ``resume`` and a checkpoint there, training continues from it. ``generator`` (on ``device``)
    drives every training draw (default: seed 0). ``progress(step, max_steps or None, metrics)``
    is called at every metrics record and at most every 0.25 s in between. Raises
    ``TrainingError`` on NaN/inf (keeping the last good checkpoint); on KeyboardInterrupt a
    checkpoint is written at the step boundary and the interrupt re-raised.

    Data-parallel (called on every rank of a torch.distributed group of W > 1 processes, e.g.
    under torchrun; see docs/cluster.md): ``batch_size`` is the global batch, each rank draws
    batch_size / W configurations per step; rank r > 0 reseeds ``generator`` with
    ``rank_seed(generator.initial_seed(), r)`` (rank 0 keeps it), so the ranks draw different
    streams; gradients are averaged by DistributedDataParallel; rank 0 alone reads and writes
    ``out_dir`` and reports ``progress``; the returned ``elapsed_s`` and metrics are rank 0's.
    """
    cfg = check_train_config(train_cfg)
    check_model_fits_loss(model, cfg["loss"])
    device = torch.device(device)
    dist_on, world, rank = distributed.active(), distributed.world(), distributed.rank()
    batch_size = cfg["batch_size"]
    if dist_on:
        if batch_size % world:
            raise ConfigError(f"train.batch_size: {batch_size} is the global batch and must be divisible by "
                              f"the number of processes ({world}); e.g. {world * -(-batch_size // world)}")
        batch_size //= world
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if torch.device(generator.device).type != device.type:
        raise ConfigError(f"the training generator is on {generator.device} but training runs on {device}; "
                          "create it with lattgen.build.make_generator(seed, device)")
    if dist_on and rank > 0:
        generator.manual_seed(distributed.rank_seed(generator.initial_seed(), rank))
    if out_dir is not None and distributed.is_main():
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.to(device=device, dtype=DTYPES[cfg["dtype"]])
    model.train()
    run = _Run(model, action, cfg, out_dir, generator, device, progress)
    run.restore(resume)
    data = None
    if cfg["loss"] == "forward_kl":
        data = load_training_data(cfg["data"], model).to(device=device, dtype=DTYPES[cfg["dtype"]])

    def make_objective(n: int, gen: torch.Generator) -> Callable[[], torch.Tensor]:
        if data is not None:
            return forward_kl_objective(model, data, n, gen)
        return reverse_kl_objective(model, action, n, gen)

    objective = make_objective(batch_size, generator)
    if dist_on:
        probe = make_objective(min(2, batch_size), torch.Generator(device=device).manual_seed(0))
        objective = data_parallel(model, objective, probe, device)
    start_step = run.step
    run.t_start = time.perf_counter()
    log_every, ckpt_every = cfg["log_every"], cfg["checkpoint_every"]
    at_boundary = True
    agreed_stop = False  # data-parallel: every rank stops at this boundary for a Ctrl-C
    try:
        with deferred_interrupt(data_parallel=dist_on) as interrupt:
            while True:
                elapsed, stop = run.tick(interrupt.requested)
                if (stopped_by := budget_exhausted(cfg, run.step, elapsed)) is not None:
                    break
                if stop:
                    agreed_stop = True
                    raise KeyboardInterrupt
                at_boundary = False
                run.one_step(objective, elapsed)
                run.step += 1
                at_boundary = True
                if run.step % log_every == 0:
                    run.log()
                    run.report(force=True)
                else:
                    run.report()
                if run.step % ckpt_every == 0:
                    run.save_checkpoint()
    except KeyboardInterrupt:
        # data-parallel, only a stop every rank agreed on may run collectives (a second Ctrl-C
        # raised inside a step leaves the ranks out of step: keep the last checkpoint then)
        if (agreed_stop or not dist_on) and at_boundary and run.first_bad_step() < 0 \
                and run.last_checkpoint_step != run.step:
            run.save_checkpoint()
        if agreed_stop:
            distributed.barrier()
        raise
    if run.step > start_step and run.step != run.window_start:
        run.log()  # a final record for the last partial window
    run.check_finite()
    if run.last_checkpoint_step != run.step:
        run.save_checkpoint()
    if run.path(MODEL) is not None:
        atomic_save(model.state_dict(), run.path(MODEL))
    run.report(force=True)
    model.eval()
    elapsed = run.elapsed()
    if dist_on:  # rank 0's time, sent once model.pt is written (a barrier for readers of the directory)
        elapsed = distributed.broadcast_object(elapsed)
    return TrainResult(step=run.step, elapsed_s=elapsed, stopped_by=stopped_by,
                       start_step=start_step, metrics=dict(run.metrics), out_dir=run.out_dir)
