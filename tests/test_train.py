"""The trainer: reverse KL toward -log Z on the free field, checkpoints, resume, NaN handling,
metrics, budgets, forward KL.

The model is a local stand-in with the exact family: phi = ifftn(G(p)^{1/2} fftn(z)) with
1/G(p) = a p_hat^2 + b and learnable a, b. The free field of form B has
1/G~(p) = beta p_hat^2 + 2 (1 - d beta), so the optimum is known, and
log Z = (V/2) log(2 pi) + (1/2) sum_p log G~(p).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time

import pytest
import torch
from lattgen_phi4 import Phi4Action
from torch import nn

from lattgen import ConfigError, Lattice, RunDirError, TrainingError
from lattgen.build import make_generator
from lattgen.fourier import apply_circulant
from lattgen.model import Bijection, Composition, FlowModel, GenerativeModel
from lattgen.train import (
    CHECKPOINT,
    METRICS,
    MODEL,
    BudgetSchedule,
    load_checkpoint,
    read_metrics,
    train,
)

SHAPE, BETA = [6, 6], 0.2


pytestmark = pytest.mark.usefixtures("one_thread")


class KineticSpectrum(Bijection):
    """phi = ifftn(G^{1/2} fftn(z)), 1/G(p) = a p_hat^2 + b, a = e^log_a, b = e^log_b (learnable)."""

    def __init__(self, lattice: Lattice, a: float = 1.0, b: float = 1.0):
        super().__init__()
        self.lattice = lattice
        self.log_a = nn.Parameter(torch.tensor(math.log(a)))
        self.log_b = nn.Parameter(torch.tensor(math.log(b)))
        self.register_buffer("p2", lattice.p_hat_squared(dtype=torch.float32))

    def log_g(self):
        return -torch.log(self.log_a.exp() * self.p2 + self.log_b.exp())

    def forward_and_log_det(self, z):
        log_g = self.log_g().to(z.dtype)
        return apply_circulant(z, torch.exp(0.5 * log_g), self.lattice), (0.5 * log_g.sum()).expand(z.shape[0])

    def inverse_and_log_det(self, phi):
        log_g = self.log_g().to(phi.dtype)
        return apply_circulant(phi, torch.exp(-0.5 * log_g), self.lattice), (-0.5 * log_g.sum()).expand(phi.shape[0])


class NaNAfter(Bijection):
    """Identity that turns the field NaN from its ``at``-th call in training mode on."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward_and_log_det(self, z):
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                z = z * float("nan")
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)

    def inverse_and_log_det(self, phi):
        return phi, torch.zeros(phi.shape[0], dtype=phi.dtype, device=phi.device)


def spectrum_model(lattice=None, nan_at: int | None = None, seed: int = 0) -> FlowModel:
    lattice = lattice or Lattice(SHAPE)
    torch.manual_seed(seed)
    layers = [KineticSpectrum(lattice)]
    if nan_at is not None:
        layers.append(NaNAfter(nan_at))
    return FlowModel(lattice, Composition(layers))


def free_action() -> Phi4Action:
    return Phi4Action(Lattice(SHAPE), beta=BETA, lam=0.0)


def log_z(action) -> float:
    prop = action.exact()["propagator"]
    return 0.5 * action.lattice.volume * math.log(2 * math.pi) + 0.5 * float(prop.log().sum())


def cfg(**kw):
    base = {"max_steps": 40, "batch_size": 64, "lr": 0.05, "log_every": 10, "checkpoint_every": 20,
            "eval_batch": 256}
    base.update(kw)
    return base


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- learning -------------------------------------------------------------------------------------
def test_reverse_kl_approaches_minus_log_z():
    act = free_action()
    model = spectrum_model()
    res = train(model, act, cfg(max_steps=300, lr=0.05, log_every=50, checkpoint_every=1000),
                generator=make_generator(1))
    recs = res.metrics
    target = -log_z(act)
    model.eval()
    with torch.no_grad():
        phi, log_q = model.sample(4096, make_generator(2))
        per_sample = (log_q.double() + act(phi.double()))
    final = float(per_sample.mean())
    err = float(per_sample.std()) / math.sqrt(per_sample.numel())
    # variational bound: loss >= -log Z (up to its error), and close to it after training
    assert final > target - 4 * err
    assert final - target < 0.01 * abs(target)
    assert recs["ess"] > 0.95 and recs["acceptance"] > 0.9
    a, b = model.flow.layers[0].log_a.exp().item(), model.flow.layers[0].log_b.exp().item()
    assert a == pytest.approx(BETA, rel=0.1) and b == pytest.approx(2 - 4 * BETA, rel=0.1)
    # the loss went down from the untrained model's
    with torch.no_grad():
        phi0, lq0 = spectrum_model().sample(4096, make_generator(2))
        first_loss = float((lq0.double() + act(phi0.double())).mean())
    assert first_loss - target > 20 * (final - target + 4 * err)
    assert res.step == 300 and res.stopped_by == "max_steps"


def test_forward_kl_from_saved_configurations(tmp_path):
    from lattgen.fourier import sample_gaussian_field

    act = free_action()
    data = sample_gaussian_field(act.exact()["propagator"], act.lattice, 2048, make_generator(3))
    torch.save(data, tmp_path / "configs.pt")
    model = spectrum_model()
    res = train(model, act, cfg(loss="forward_kl", data=str(tmp_path / "configs.pt"), max_steps=300,
                                log_every=100, checkpoint_every=1000), generator=make_generator(4))
    assert res.metrics["ess"] > 0.9
    # bad data files are ConfigErrors that name the key
    torch.save(data[:, :3], tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match="train.data.*expected"):
        train(spectrum_model(), act, cfg(loss="forward_kl", data=str(tmp_path / "wrong.pt")))
    with pytest.raises(ConfigError, match="does not exist"):
        train(spectrum_model(), act, cfg(loss="forward_kl", data=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="needs a .pt file"):
        train(spectrum_model(), act, cfg(loss="forward_kl"))


def test_reverse_kl_refuses_an_estimated_density():
    class Estimated(GenerativeModel):
        exact_density = False

        def sample(self, n, generator=None):
            raise NotImplementedError

        def log_prob(self, phi):
            raise NotImplementedError

    with pytest.raises(ConfigError, match="forward_kl"):
        train(Estimated(Lattice(SHAPE)), free_action(), cfg())


# -- checkpoints and resume ------------------------------------------------------------------------
def test_resume_after_interrupt_gives_identical_parameters(tmp_path):
    act = free_action()
    c = cfg(max_steps=45, log_every=5, checkpoint_every=20)
    ref = spectrum_model()
    train(ref, act, c, out_dir=tmp_path / "ref", generator=make_generator(7))

    class Stop:
        fired_at = None

        def __call__(self, step, total, metrics):
            if self.fired_at is None and step >= 17:
                self.fired_at = step
                raise KeyboardInterrupt

    stop = Stop()
    with pytest.raises(KeyboardInterrupt):
        train(spectrum_model(), act, c, out_dir=tmp_path / "run", generator=make_generator(7), progress=stop)
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ckpt["step"] == stop.fired_at  # saved at the interrupted step, nothing lost
    assert not (tmp_path / "run" / MODEL).exists()
    # resume in a new process-like setting: fresh model object and a differently seeded generator
    resumed = spectrum_model(seed=123)
    res = train(resumed, act, c, out_dir=tmp_path / "run", generator=make_generator(999))
    assert res.start_step == stop.fired_at and res.step == 45
    assert_same_params(params_of(ref), params_of(resumed))
    assert_same_params(torch.load(tmp_path / "ref" / MODEL, weights_only=True),
                       torch.load(tmp_path / "run" / MODEL, weights_only=True))
    # Adam moments too, and the metric records (except the wall time) are the same
    a = load_checkpoint(tmp_path / "ref" / CHECKPOINT)["optimizer"]["state"]
    b = load_checkpoint(tmp_path / "run" / CHECKPOINT)["optimizer"]["state"]
    for k in a:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a[k][key], b[k][key])
    strip = [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(tmp_path / "ref" / METRICS)]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(tmp_path / "run" / METRICS)]


def test_resume_after_a_hard_kill_drops_later_records(tmp_path):
    """A run killed without its final checkpoint resumes from the last periodic one."""
    act = free_action()
    c = cfg(max_steps=30, log_every=5, checkpoint_every=10)
    ref = spectrum_model()
    train(ref, act, c, out_dir=tmp_path / "ref", generator=make_generator(8))
    out = tmp_path / "run"

    def die(step, total, metrics):  # any exception but KeyboardInterrupt: no checkpoint is saved
        if step >= 15:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(spectrum_model(), act, c, out_dir=out, generator=make_generator(8), progress=die)
    assert load_checkpoint(out / CHECKPOINT)["step"] == 10
    assert [r["step"] for r in read_metrics(out / METRICS)][-1] >= 15
    model = spectrum_model()
    train(model, act, c, out_dir=out, generator=make_generator(8))
    assert_same_params(params_of(ref), params_of(model))
    steps = [r["step"] for r in read_metrics(out / METRICS)]
    assert steps == [5, 10, 15, 20, 25, 30]


class SigintAt(NaNAfter):
    """Identity that sends this process SIGINT during its ``at``-th training call (mid-step)."""

    def forward_and_log_det(self, z):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)


def test_ctrl_c_is_deferred_to_a_step_boundary(tmp_path):
    lat = Lattice(SHAPE)
    torch.manual_seed(0)
    model = FlowModel(lat, Composition([KineticSpectrum(lat), SigintAt(12)]))
    before = signal.getsignal(signal.SIGINT)  # inherited: SIG_IGN in a background process
    with pytest.raises(KeyboardInterrupt):
        train(model, free_action(), cfg(max_steps=200, log_every=5), out_dir=tmp_path,
              generator=make_generator(9))
    # the signal arrived inside step 12's forward pass: the step completed, was checkpointed
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 12
    assert signal.getsignal(signal.SIGINT) is before, "the handler installed before train() is restored"


def test_nan_stops_with_training_error_and_keeps_the_last_good_checkpoint(tmp_path):
    act = free_action()
    c = cfg(max_steps=40, log_every=5, checkpoint_every=10, schedule="constant")
    with pytest.raises(TrainingError, match=r"step 13\b.*checkpoint \(step 10\).*kept"):
        train(spectrum_model(nan_at=13), act, c, out_dir=tmp_path / "bad", generator=make_generator(10))
    ckpt = load_checkpoint(tmp_path / "bad" / CHECKPOINT)
    assert ckpt["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (tmp_path / "bad" / MODEL).exists()
    # the kept checkpoint is exactly the clean run's state at step 10
    clean = spectrum_model()
    train(clean, act, dict(c, max_steps=10), generator=make_generator(10))
    assert_same_params({k: v for k, v in ckpt["model"].items()}, params_of(clean))
    # a huge learning rate: also a TrainingError, never a NaN checkpoint
    with pytest.raises(TrainingError, match="NaN/inf"):
        train(spectrum_model(), act, cfg(lr=1e30, grad_clip=0.0, schedule="constant", log_every=2,
                                         checkpoint_every=2),
              out_dir=tmp_path / "lr", generator=make_generator(11))
    if (tmp_path / "lr" / CHECKPOINT).exists():
        ck = load_checkpoint(tmp_path / "lr" / CHECKPOINT)
        assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_checkpoint_contents_and_atomic_write(tmp_path):
    act = free_action()
    train(spectrum_model(), act, cfg(max_steps=20), out_dir=tmp_path, generator=make_generator(12))
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # safe loading works
    for key in ("model", "optimizer", "scheduler", "step", "elapsed_s", "rng", "train"):
        assert key in ckpt
    assert ckpt["step"] == 20 and ckpt["elapsed_s"] > 0
    assert ckpt["scheduler"] == {"lr": 0.05, "kind": "cosine", "max_steps": 20, "max_time_s": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, METRICS, MODEL]  # no temp files
    (tmp_path / CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="delete it"):
        train(spectrum_model(), act, cfg(max_steps=30), out_dir=tmp_path, generator=make_generator(12))


def test_resume_false_starts_over(tmp_path):
    act = free_action()
    train(spectrum_model(), act, cfg(max_steps=20), out_dir=tmp_path, generator=make_generator(13))
    res = train(spectrum_model(), act, cfg(max_steps=10), out_dir=tmp_path, generator=make_generator(13),
                resume=False)
    assert res.start_step == 0 and res.step == 10
    assert [r["step"] for r in read_metrics(tmp_path / METRICS)] == [10]
    # resuming a finished run with a larger budget continues it
    res = train(spectrum_model(), act, cfg(max_steps=25), out_dir=tmp_path, generator=make_generator(13))
    assert (res.start_step, res.step) == (10, 25)


# -- metrics, budgets, schedule, seeds ---------------------------------------------------------------
def test_metrics_records(tmp_path):
    act = free_action()
    calls = []
    res = train(spectrum_model(), act, cfg(max_steps=37, log_every=10), out_dir=tmp_path,
                generator=make_generator(14), progress=lambda s, t, m: calls.append((s, t, dict(m))))
    recs = read_metrics(tmp_path / METRICS)
    assert [r["step"] for r in recs] == [10, 20, 30, 37]  # every log_every steps and at the end
    keys = {"step", "time", "loss", "ess", "acceptance", "log_w_mean", "log_w_var", "lr", "grad_norm"}
    for r in recs:
        assert set(r) == keys
        assert 0 < r["ess"] <= 1 and 0 <= r["acceptance"] <= 1 and r["log_w_var"] >= 0
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in keys - {"step"})
    times = [r["time"] for r in recs]
    assert times == sorted(times) and times[-1] <= res.elapsed_s
    sched = BudgetSchedule(0.05, "cosine", 37, None)
    for r in recs:  # the lr of the last step of each window
        assert r["lr"] == pytest.approx(sched.lr(r["step"] - 1, 0.0))
    assert res.metrics == recs[-1]
    # the progress callback saw every record, with max_steps as total
    logged = [(s, m) for s, t, m in calls if m and m.get("step") == s]
    assert [s for s, _ in logged][:4] == [10, 20, 30, 37] and all(t == 37 for _, t, _ in calls)


def test_time_budget_is_respected(tmp_path):
    act = free_action()
    budget = 1.5
    t0 = time.perf_counter()
    res = train(spectrum_model(), act, {"max_time_s": budget, "batch_size": 64, "log_every": 20,
                                        "eval_batch": 256}, out_dir=tmp_path, generator=make_generator(15))
    wall = time.perf_counter() - t0
    per_step = res.elapsed_s / res.step
    recs = read_metrics(tmp_path / METRICS)
    assert res.stopped_by == "max_time_s" and res.step > 10
    assert budget <= res.elapsed_s
    # it stops after the step that crossed the budget: overshoot = one step + the final
    # evaluation and checkpoint, each a few steps' worth here
    assert res.elapsed_s - budget < 10 * per_step + 0.5, (res.elapsed_s, per_step)
    assert wall < res.elapsed_s + 1.0
    assert recs[-1]["lr"] < 0.1 * 1e-3  # the cosine ran (nearly) to its end over the time budget


def test_budget_schedule():
    s = BudgetSchedule(1.0, "cosine", 100, None)
    assert s.lr(0, 0.0) == 1.0 and s.lr(50, 1e9) == pytest.approx(0.5) and s.lr(100, 0.0) == pytest.approx(0)
    t = BudgetSchedule(1.0, "cosine", None, 10.0)
    assert t.lr(10**6, 5.0) == pytest.approx(0.5) and t.lr(0, 20.0) == pytest.approx(0.0)
    both = BudgetSchedule(1.0, "cosine", 100, 10.0)
    assert both.fraction(25, 5.0) == 0.5 and both.fraction(75, 5.0) == 0.75
    assert BudgetSchedule(0.3, "constant", 10, None).lr(9, 0.0) == 0.3
    with pytest.raises(ConfigError):
        BudgetSchedule(1.0, "linear", 10, None)


def test_seeds_reproduce_and_differ():
    act = free_action()
    runs = []
    for seed in (21, 21, 22):
        m = spectrum_model()
        train(m, act, cfg(max_steps=15), generator=make_generator(seed))
        runs.append(params_of(m))
    assert_same_params(runs[0], runs[1])
    assert not torch.equal(runs[0]["flow.layers.0.log_a"], runs[2]["flow.layers.0.log_a"])


def test_config_errors():
    act = free_action()
    with pytest.raises(ConfigError, match="max_steps"):
        train(spectrum_model(), act, {"batch_size": 4})
    with pytest.raises(ConfigError, match="train.lr"):
        train(spectrum_model(), act, cfg(lr=-1.0))
    with pytest.raises(TrainingError, match="no trainable parameters"):
        m = spectrum_model()
        m.requires_grad_(False)
        train(m, act, cfg())


def test_time_budget_counts_earlier_sessions(tmp_path):
    act = free_action()
    c = {"max_time_s": 1.0, "batch_size": 64, "log_every": 10, "eval_batch": 256}

    def stop(step, total, metrics):
        if step >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spectrum_model(), act, c, out_dir=tmp_path, generator=make_generator(16), progress=stop)
    first = load_checkpoint(tmp_path / CHECKPOINT)
    assert 0 < first["elapsed_s"] < 1.0
    res = train(spectrum_model(), act, c, out_dir=tmp_path, generator=make_generator(16))
    assert res.start_step == first["step"] and res.stopped_by == "max_time_s"
    per_step = res.elapsed_s / res.step
    assert 1.0 <= res.elapsed_s < 1.0 + 10 * per_step + 0.5
    times = [r["time"] for r in read_metrics(tmp_path / METRICS)]
    assert times == sorted(times) and times[-1] <= res.elapsed_s


# -- faults (issue 14) ------------------------------------------------------------------------------
class RaiseAfter(NaNAfter):
    """Identity that raises IndexError from its ``at``-th training call on, as normflows' spline
    bin search does on diverged parameters."""

    def forward_and_log_det(self, z):
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                raise IndexError("index -1 is out of bounds for dimension 3 with size 9")
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)


def test_a_failure_in_the_forward_pass_is_a_training_error_naming_the_checkpoint(tmp_path):
    act = free_action()
    lattice = Lattice(SHAPE)
    model = FlowModel(lattice, Composition([KineticSpectrum(lattice), RaiseAfter(14)]))
    c = cfg(max_steps=40, log_every=5, checkpoint_every=10)
    with pytest.raises(TrainingError) as exc:
        train(model, act, c, out_dir=tmp_path, generator=make_generator(4))
    message = str(exc.value)
    assert "step 14" in message and "IndexError" in message and "during sampling" in message
    assert f"checkpoint (step 10) {tmp_path / CHECKPOINT} was kept" in message and "train.lr" in message
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 10 and not (tmp_path / MODEL).exists()


def test_a_parameter_gone_non_finite_is_never_checkpointed(tmp_path):
    """A parameter that became inf after a step whose loss and gradient were finite (an update
    that overflowed) is caught before the checkpoint is written: the last good one stays."""
    act = free_action()
    model = spectrum_model()

    def poison(step, total, metrics):  # called at the metrics record, just before the checkpoint
        if step == 10:
            with torch.no_grad():
                model.flow.layers[0].log_a.fill_(math.inf)

    with pytest.raises(TrainingError, match=r"parameter became NaN/inf by step 10.*checkpoint \(step 5\)"):
        train(model, act, cfg(log_every=5, checkpoint_every=5), out_dir=tmp_path,
              generator=make_generator(4), progress=poison)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["step"] == 5 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_time_based_checkpoints_beside_the_step_interval(tmp_path):
    """checkpoint_every_s writes checkpoints that checkpoint_every alone would not (a time-budget
    run killed early keeps its work); 0 switches it off."""
    act = free_action()
    seen = {}

    def watch(out):
        def progress(step, total, metrics):
            if step < 30 and (out / CHECKPOINT).is_file():
                seen.setdefault(out.name, load_checkpoint(out / CHECKPOINT)["step"])
        return progress

    for name, every_s in (("timed", 1e-9), ("off", 0.0)):
        out = tmp_path / name
        train(spectrum_model(), act, cfg(max_steps=30, checkpoint_every=10**6, checkpoint_every_s=every_s),
              out_dir=out, generator=make_generator(5), progress=watch(out))
    assert 1 <= seen["timed"] < 30 and "off" not in seen
    with pytest.raises(ConfigError, match="checkpoint_every_s"):
        train(spectrum_model(), act, cfg(checkpoint_every_s=-1.0))


def test_a_torn_metrics_line_is_dropped_and_stale_temporaries_cleaned(tmp_path):
    """kill -9 during an append leaves half a line: the resume drops it with a warning instead of
    dying on JSONDecodeError; a killed process's .tmp-PID file is deleted, a live one's kept."""
    from lattgen.errors import LattgenWarning

    act = free_action()
    c = cfg(max_steps=20, log_every=5, checkpoint_every=10)
    ref = spectrum_model()
    train(ref, act, c, out_dir=tmp_path / "ref", generator=make_generator(6))
    out = tmp_path / "run"

    def die(step, total, metrics):
        if step >= 15:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train(spectrum_model(), act, c, out_dir=out, generator=make_generator(6), progress=die)
    with open(out / METRICS, "a") as fh:
        fh.write('{"step": 16, "time": 0.1, "lo')
    other = subprocess.Popen(["sleep", "60"])  # a live process that is not this one
    stale, live = out / f".checkpoint.pt.tmp-{_dead_pid()}", out / f".checkpoint.pt.tmp-{other.pid}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    with pytest.warns(LattgenWarning, match="incomplete"):
        assert len(read_metrics(out / METRICS)) == 3
    model = spectrum_model()
    try:
        with pytest.warns(LattgenWarning, match="incomplete"):
            train(model, act, c, out_dir=out, generator=make_generator(6))
        assert not stale.exists() and live.exists()
    finally:
        other.kill()
        other.wait()
    assert_same_params(params_of(ref), params_of(model))
    assert [r["step"] for r in read_metrics(out / METRICS)] == [5, 10, 15, 20]
    (out / METRICS).write_text('{"step": 5}\nnot json\n{"step": 10}\n')  # damage inside: named
    with pytest.raises(RunDirError, match=r"metrics.jsonl: line 2"):
        read_metrics(out / METRICS)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
