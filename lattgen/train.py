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
record to ``metrics.jsonl``; every ``checkpoint_every`` steps or ``checkpoint_every_s`` training
seconds, whichever comes first, and at the end it writes ``checkpoint.pt`` atomically. See docs/training.md.

Run directory files (``lattgen.checkpoints``; ``lattgen.rundir`` adds config.toml):
``checkpoint.pt``, ``model.pt``, ``metrics.jsonl``. Objectives: ``lattgen.objectives``;
evaluation: ``lattgen.evaluation``; what data-parallel ranks share: ``lattgen.data_parallel``.

Resume: rerunning with the same ``out_dir`` continues from the checkpoint: the step count, the
elapsed time (so the remaining time budget), the optimizer moments and both random streams, so
an interrupted run with a step budget ends with the same parameters as an uninterrupted one.
Ctrl-C is deferred to the next step boundary, where a checkpoint is written before
KeyboardInterrupt is re-raised. A NaN/inf loss, gradient or parameter, or an exception from the
model's forward pass (a spline's bin search on diverged parameters), stops training with a
``TrainingError`` naming the step and the last good checkpoint, which is kept, never overwritten.

Data-parallel (every rank of a torch.distributed group calls ``train``, e.g. under torchrun;
docs/cluster.md): see ``lattgen.data_parallel``; in one process its context is a no-op.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .action import Action
from .checkpoints import (  # noqa: F401  (CHECKPOINT, read_metrics: re-exported for callers of train)
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    METRICS,
    MODEL,
    append_metrics,
    atomic_save,
    load_checkpoint,
    read_metrics,
    remove_stale_temporaries,
    truncate_metrics,
)
from .config import resolve_train
from .data_parallel import SingleProcess, replicas
from .errors import ConfigError, LattgenError, ResourceError, RunDirError, TrainingError
from .evaluation import evaluate, evaluation_log_weights, summarise_log_weights
from .field import DTYPES
from .memory import is_out_of_memory
from .model import GenerativeModel
from .objectives import check_model_fits_loss, forward_kl_objective, load_training_data, reverse_kl_objective
#: what to try after a NaN/inf or a diverged model
REMEDY = 'Lower train.lr, tighten train.grad_clip, or use train.dtype = "float64"'
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
    """A [train] section with defaults filled (``lattgen.config.resolve_train``)."""
    return resolve_train(train_cfg)


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


class _Run:
    """The mutable state of one training call: model, optimizer, RNGs, step and clock.

    ``replicas`` (``lattgen.data_parallel``) decides what the ranks share: one process reads,
    writes and decides alone; data-parallel, every rank holds the same model and optimizer
    state, ``tick`` shares rank 0's clock and any rank's Ctrl-C, so every rank takes the same
    learning rate and stops at the same step, and rank 0 alone reads and writes files.
    """

    def __init__(self, model, action, cfg, out_dir, generator, device, progress, replicas: SingleProcess):
        self.model, self.action, self.cfg = model, action, cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = device
        self.replicas = replicas
        self.progress = progress if replicas.main else None
        self.generator = generator
        self.eval_generator = torch.Generator(device=device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError(f"{type(model).__name__} has no trainable parameters; nothing to train")
        self.optimizer = torch.optim.Adam(self.params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.schedule = BudgetSchedule(cfg["lr"], cfg["schedule"], cfg["max_steps"], cfg["max_time_s"])
        self.step = 0
        self.elapsed_base = 0.0
        #: the training clock: elapsed seconds, or this process's CPU seconds ([train] clock)
        self.clock = time.process_time if cfg.get("clock") == "cpu" else time.perf_counter
        self.t_start = self.clock()
        self.last_checkpoint_step: int | None = None
        self.last_checkpoint_time = 0.0  # training seconds at the last checkpoint (or the start)
        self.metrics: dict[str, Any] = {}
        # device-side accumulators: first non-finite step (-1: none) and the loss sum of the window
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.window_start = 0
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=device)
        self._last_report = 0.0

    # clock ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_base + (self.clock() - self.t_start)

    # files ------------------------------------------------------------------------------------
    def path(self, name: str) -> Path | None:
        """A file of the run directory, on rank 0 (None on other ranks or without a directory)."""
        return self.out_dir / name if self.out_dir is not None and self.replicas.main else None

    def _read_checkpoint(self, resume: bool) -> dict[str, Any] | None:
        ckpt_path = self.path(CHECKPOINT)
        if resume and ckpt_path is not None and ckpt_path.is_file():
            return load_checkpoint(ckpt_path)
        return None

    def restore(self, resume: bool) -> None:
        """Continue from out_dir/checkpoint.pt when resuming; else start fresh (seed the eval stream).

        Data-parallel: rank 0 reads the checkpoint and every rank loads what it read.
        """
        ckpt_path = self.out_dir / CHECKPOINT if self.out_dir is not None else None
        if self.path(CHECKPOINT) is not None:
            remove_stale_temporaries(self.out_dir)  # half-written files of a killed run
        ckpt = self.replicas.on_main(self._read_checkpoint, resume)
        if ckpt is not None:
            try:
                self.model.load_state_dict(ckpt["model"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise RunDirError(f"{ckpt_path} does not fit this model ({type(exc).__name__}: {first}); "
                                  "train into a new directory, or add --force to start over") from None
            self.replicas.restore_rng(ckpt["rng"], self.generator, self.eval_generator, self.device)
            self.step = int(ckpt["step"])
            self.elapsed_base = float(ckpt["elapsed_s"])
            self.last_checkpoint_step = self.step
            self.last_checkpoint_time = self.elapsed_base
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
        """(training seconds, stop for Ctrl-C) at a step boundary, agreed by every rank."""
        return self.replicas.tick(self.elapsed(), interrupt_requested)

    def first_bad_step(self) -> int:
        """The first step whose loss or gradient norm was NaN/inf (-1: none); over all ranks."""
        return self.replicas.first_bad_step(self.bad_step)

    def kept(self) -> str:
        """What a failed run leaves: the last good checkpoint, named."""
        if self.last_checkpoint_step is None:
            return "no checkpoint had been written yet"
        where = f" {self.out_dir / CHECKPOINT}" if self.out_dir is not None else ""
        return f"the last good checkpoint (step {self.last_checkpoint_step}){where} was kept"

    def check_finite(self) -> None:
        """Raise TrainingError if a loss or gradient was NaN/inf since the last check, or a
        parameter is (two syncs: read before every evaluation and checkpoint)."""
        bad = self.first_bad_step()
        if bad >= 0:
            what = f"the loss or its gradient became NaN/inf at step {bad + 1}"
        elif not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            what = f"a model parameter became NaN/inf by step {self.step}"
        else:
            return
        raise TrainingError(f"{what}; training stopped and {self.kept()}. {REMEDY}")

    def failed(self, exc: Exception, during: str, step: int) -> LattgenError:
        """The error for an exception the model raised at ``step`` (``during`` sampling or
        evaluation): a NaN/inf found earlier is the cause if there is one; out of memory is a
        ResourceError; anything else (a spline's bin search on diverged parameters, ...) a
        TrainingError naming the step and the checkpoint kept."""
        if isinstance(exc, LattgenError):
            return exc
        self.check_finite()
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        if is_out_of_memory(exc):
            return ResourceError(f"training ran out of memory at step {step} ({first}); "
                                 f"{self.kept()}. Lower train.batch_size or train.eval_batch")
        return TrainingError(
            f"training failed at step {step}: the model raised {type(exc).__name__} during "
            f"{during} ({first}): its parameters have probably diverged; training stopped and "
            f"{self.kept()}. {REMEDY}"
        )

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (rank 0; every rank's RNG states when data-parallel)."""
        if self.out_dir is None:
            return
        self.check_finite()  # never overwrite a good checkpoint with NaN weights
        rng = self.replicas.rng_states(self.generator.get_state(), self.eval_generator.get_state())
        path = self.path(CHECKPOINT)
        if path is not None:
            atomic_save({
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.schedule.state_dict(),
                "step": self.step,
                "elapsed_s": self.elapsed(),
                "world_size": self.replicas.world,
                "rng": rng,
                "train": {k: v for k, v in self.cfg.items() if v is not None},
                "metrics": {k: v for k, v in self.metrics.items() if isinstance(v, (int, float))},
            }, path)
        self.last_checkpoint_step = self.step
        self.last_checkpoint_time = self.elapsed()

    def checkpoint_due(self, elapsed: float) -> bool:
        """Every checkpoint_every steps, and every checkpoint_every_s training seconds (0: off);
        ``elapsed`` is the step's clock, the same on every rank."""
        every_s = self.cfg["checkpoint_every_s"]
        return self.step % self.cfg["checkpoint_every"] == 0 or \
            (every_s > 0 and elapsed - self.last_checkpoint_time >= every_s)

    def evaluate(self) -> dict[str, float]:
        """The metrics of ``evaluate`` on eval_batch fresh samples (data-parallel: each rank draws
        its share from its own stream, the same numbers on every rank)."""
        n, batch = self.cfg["eval_batch"], max(self.cfg["batch_size"], 256)
        try:
            if not self.replicas.active:
                return evaluate(self.model, self.action, n, self.eval_generator, batch_size=batch)

            def draw(count: int, size: int) -> torch.Tensor:
                return evaluation_log_weights(self.model, self.action, count, self.eval_generator,
                                              batch_size=size)

            return summarise_log_weights(self.replicas.evaluation_log_weights(draw, n, batch))
        except Exception as exc:  # noqa: BLE001 - the model's code may raise anything
            raise self.failed(exc, "evaluation", self.step) from None

    def log(self) -> None:
        """Check finiteness, evaluate, append a metrics record (one host sync)."""
        self.check_finite()
        n_window = max(self.step - self.window_start, 1)
        loss, gnorm = self.replicas.mean(torch.stack([self.loss_sum / n_window, self.grad_norm.to(torch.float64)]))
        record = {"step": self.step, "time": self.elapsed(), "loss": loss}
        record.update(self.evaluate())
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["grad_norm"] = gnorm
        record = self.replicas.same_everywhere(record)  # rank 0's clock: the same record everywhere
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
        try:
            loss = objective()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except Exception as exc:  # noqa: BLE001 - the model's code may raise anything
            raise self.failed(exc, "sampling", self.step + 1) from None
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
    ranks = replicas()
    batch_size = ranks.local_batch(cfg["batch_size"])
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if torch.device(generator.device).type != device.type:
        raise ConfigError(f"the training generator is on {generator.device} but training runs on {device}; "
                          "create it with lattgen.make_generator(seed, device)")
    ranks.seed_stream(generator)
    if out_dir is not None and ranks.main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.to(device=device, dtype=DTYPES[cfg["dtype"]])
    model.train()
    run = _Run(model, action, cfg, out_dir, generator, device, progress, ranks)
    run.restore(resume)
    data = None
    if cfg["loss"] == "forward_kl":
        data = load_training_data(cfg["data"], model, action).to(device=device, dtype=DTYPES[cfg["dtype"]])

    def make_objective(n: int, gen: torch.Generator) -> Callable[[], torch.Tensor]:
        if data is not None:
            return forward_kl_objective(model, data, n, gen)
        return reverse_kl_objective(model, action, n, gen)

    objective = ranks.wrap(model, make_objective(batch_size, generator),
                           lambda: make_objective(min(2, batch_size), torch.Generator(device=device).manual_seed(0)),
                           device)
    start_step = run.step
    run.t_start = run.clock()
    log_every = cfg["log_every"]
    at_boundary = True
    agreed_stop = False  # data-parallel: every rank stops at this boundary for a Ctrl-C
    try:
        with deferred_interrupt(data_parallel=ranks.active) as interrupt:
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
                if run.checkpoint_due(elapsed):
                    run.save_checkpoint()
    except KeyboardInterrupt:
        # data-parallel, only a stop every rank agreed on may run collectives (a second Ctrl-C
        # raised inside a step leaves the ranks out of step: keep the last checkpoint then)
        if (agreed_stop or not ranks.active) and at_boundary and run.first_bad_step() < 0 \
                and run.last_checkpoint_step != run.step:
            run.save_checkpoint()
        if agreed_stop:
            ranks.barrier()
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
    # rank 0's time, sent once model.pt is written (a barrier for readers of the directory)
    elapsed = ranks.same_everywhere(run.elapsed())
    return TrainResult(step=run.step, elapsed_s=elapsed, stopped_by=stopped_by,
                       start_step=start_step, metrics=dict(run.metrics), out_dir=run.out_dir)
