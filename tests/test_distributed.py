"""Data parallelism on torch.distributed (CPU, gloo, 2 processes started by torchrun).

The two-process runs go through the real entry point, ``python -m torch.distributed.run
--standalone --nproc_per_node=2 -m lattgen ...``, and are checked against references built
here, in one process, from the same seeds:

* training: rank r draws its half of the global batch from a stream seeded with
  ``rank_seed(seed, r)``; the reference draws both halves from those two streams and averages
  the two losses. Parameters must agree to float64 rounding (negative controls: one stream
  for both halves, or rank 0's half alone, give different parameters).
* sampling: rank r runs its share of the chains from ``rank_seed(seed, r)``; the reference runs
  the same two samplers one after the other, merges their chains and analyses them. Every
  number of the analysis must agree; a tuned HMC run must agree with one process within errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lattgen import distributed
from lattgen.analysis import analyse_chain
from lattgen.build import build_action, build_observables, build_sampler, make_generator
from lattgen.config import load_toml, resolve_config
from lattgen.observable import measure_all
from lattgen.rundir import load_trained, seeded_model
from lattgen.sample import run_sampling
from lattgen.sampler import Chain, merge_chains, merge_infos, run_chain
from lattgen.train import BudgetSchedule, load_checkpoint, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_TOML = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.5
lam = 0.5
[model]
name = "affine"
n_layers = 2
hidden = [4]
[train]
max_steps = 3
batch_size = 8
lr = 0.01
schedule = "constant"
dtype = "float64"
log_every = 2
eval_batch = 16
[run]
seed = 3
"""

HMC_TOML = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.2
lam = 0.0
[sampler]
name = "hmc"
n_chains = 8
[run]
n_samples = 4000
n_therm = 100
seed = 5
observables = ["susceptibility", "abs_magnetisation"]
"""

COMPARE_TOML = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.5
lam = 0.5
[compare]
train_steps = 5
n_samples = 512
n_therm = 20
seed = 1
observables = ["susceptibility", "abs_magnetisation"]
[[entries]]
model = {name = "gaussian"}
sampler = {name = "imh", n_chains = 4}
train = {batch_size = 16, eval_batch = 16}
[[entries]]
label = "hmc"
sampler = {name = "hmc", n_chains = 8}
"""

SCAN_TOML = """
[action]
name = "phi4"
lattice = [4, 4]
lam = 0.5
[scan]
beta = [0.4, 0.5]
n_samples = 256
n_therm = 20
train_steps = 4
seed = 2
observables = ["susceptibility", "abs_magnetisation"]
[[entries]]
label = "cond"
model = {name = "conditional_equivariant", hidden = [4], n_layers = 2}
sampler = {name = "imh", n_chains = 4}
train = {batch_size = 16, eval_batch = 16}
[[entries]]
sampler = {name = "hmc", n_chains = 8}
"""

IMH_SETTINGS = ("run.n_samples=400", "sampler.n_chains=4", "sampler.batch_size=8", "run.n_therm=10",
                'run.observables=["susceptibility", "abs_magnetisation"]')


def torchrun(*args: str, cwd: Path, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=N -m lattgen ARGS`` (one thread per process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "lattgen", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist")
    (path / "train.toml").write_text(TRAIN_TOML)
    (path / "hmc.toml").write_text(HMC_TOML)
    (path / "compare.toml").write_text(COMPARE_TOML)
    (path / "scan.toml").write_text(SCAN_TOML)
    return path


@pytest.fixture(scope="module")
def trained(workdir) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2-rank training run (3 steps, global batch 8) into workdir/run."""
    proc = check_ok(torchrun("train", "train.toml", "--out", "run", cwd=workdir))
    return workdir / "run", proc


# -- the reference, in one process ----------------------------------------------------------------
def reference_training(toml_path: Path, seeds: list[int], world: int) -> dict[str, torch.Tensor]:
    """What data-parallel training must give: each step averages the losses of len(seeds)
    half-batches (global batch / world each) drawn from streams seeded with ``seeds``."""
    config = resolve_config(load_toml(toml_path), require=("action", "model"))
    action = build_action(config["action"])
    model = seeded_model(config["model"], action, config["run"]["seed"], None).to(torch.float64)
    model.train()
    cfg = config["train"]
    streams = [make_generator(s) for s in seeds]
    for g in streams:  # every rank first draws the seed of its evaluation stream from its stream
        torch.randint(0, 2**62, (1,), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    schedule = BudgetSchedule(cfg["lr"], cfg["schedule"], cfg["max_steps"], cfg["max_time_s"])
    for step in range(cfg["max_steps"]):
        for group in opt.param_groups:
            group["lr"] = schedule.lr(step, 0.0)
        losses = []
        for g in streams:
            phi, log_q = model.sample(cfg["batch_size"] // world, g)
            losses.append((log_q + action(phi)).mean())
        loss = sum(losses) / len(losses)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# -- helpers without a process group ---------------------------------------------------------------
def test_without_torchrun_nothing_is_distributed():
    assert not distributed.launched() and not distributed.active()
    assert (distributed.world(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(5) == [5]
    t = torch.tensor([1.0, 3.0])
    assert distributed.all_reduce_mean(t.clone()).tolist() == [1.0, 3.0]
    assert distributed.global_mean(t) == 2.0
    assert distributed.init("cpu") is False  # no launcher: no process group


def test_cuda_device_under_torchrun(monkeypatch):
    """Each rank owns cuda:LOCAL_RANK: an explicit GPU index is refused, a missing GPU explained."""
    from lattgen import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched() and distributed.secondary()
    assert distributed.backend_for("cuda") == "cpu:gloo,cuda:nccl" and distributed.backend_for("cpu") == "gloo"
    with pytest.raises(ConfigError, match='use device = "cuda"'):
        distributed.check_device("cuda:1")
    distributed.check_device("cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            distributed.init("cuda")
    assert not distributed.active()


def test_rank_seed_and_split():
    assert distributed.rank_seed(7, 0) == 7  # one process draws what a plain run draws
    seeds = {distributed.rank_seed(s, r) for s in range(5) for r in range(1, 9)}
    assert len(seeds) == 40 and not seeds & set(range(5))
    assert all(0 <= s < 2**63 for s in seeds)
    for n, parts in ((8, 2), (7, 3), (2, 5)):
        shares = [distributed.split(n, parts, i) for i in range(parts)]
        assert sum(c for c, _ in shares) == n
        assert [o for _, o in shares] == [sum(c for c, _ in shares[:i]) for i in range(parts)]
        assert max(c for c, _ in shares) - min(c for c, _ in shares) <= 1


def test_merge_chains_and_infos():
    def chain(n_chains, offset, info):
        acc = np.full((5, n_chains), offset, dtype=float)
        return Chain(primaries={"m": acc[..., None] + 1}, accepted=acc, n_chains=n_chains,
                     wall_time_s=offset + 1, therm_time_s=offset, info=info,
                     extras={"log_weights": acc * 2})

    a = chain(2, 0.0, {"n_chains": 2, "eps": 0.5, "acc": 0.2, "runs": 3, "name": "x"})
    b = chain(1, 1.0, {"n_chains": 1, "eps": 0.5, "acc": 0.5, "runs": 7, "name": "x"})
    info = merge_infos([a.info, b.info], [2, 1], maxima=("runs",))
    assert info["n_chains"] == 3 and info["eps"] == 0.5 and info["name"] == "x"
    assert info["acc"] == pytest.approx(0.3) and info["runs"] == 7
    assert info["per_rank"] == {"n_chains": [2, 1], "acc": [0.2, 0.5], "runs": [3, 7]}
    merged = merge_chains([a, b], info)
    assert merged.n_chains == 3 and merged.accepted.shape == (5, 3) and merged.primaries["m"].shape == (5, 3, 1)
    assert merged.accepted[0].tolist() == [0.0, 0.0, 1.0] and merged.extras["log_weights"].shape == (5, 3)
    assert (merged.wall_time_s, merged.therm_time_s) == (2.0, 1.0)
    short = Chain(primaries={"m": np.zeros((3, 1, 1))}, accepted=np.zeros((3, 1)), n_chains=1,
                  wall_time_s=0.0, therm_time_s=0.0)
    with pytest.raises(ValueError, match="different lengths"):
        merge_chains([a, short])


# -- training ---------------------------------------------------------------------------------------
def test_two_rank_training_equals_single_process_reference(trained, workdir):
    run_dir, _ = trained
    got = torch.load(run_dir / "model.pt", weights_only=True)
    seed = 3
    ref = reference_training(workdir / "train.toml", [distributed.rank_seed(seed, r) for r in (0, 1)], 2)
    assert max_difference(got, ref) < 1e-10
    # negative controls: the test sees which streams were drawn and that both halves count
    same_stream = reference_training(workdir / "train.toml", [seed, seed], 2)
    rank0_only = reference_training(workdir / "train.toml", [seed], 2)
    initial = seeded_model({"name": "affine", "n_layers": 2, "hidden": [4]},
                           build_action({"name": "phi4", "lattice": [4, 4], "beta": 0.5, "lam": 0.5}), seed,
                           None).state_dict()
    for wrong in (same_stream, rank0_only, initial):
        assert max_difference(got, wrong) > 1e-6


def test_two_rank_training_rank0_writes_once(trained):
    run_dir, proc = trained
    assert proc.stdout.count("trained 3 steps") == 1  # rank 1 prints nothing
    assert "error" not in proc.stderr.lower()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 3]
    assert all(r["ess"] is not None and 0 < r["ess"] <= 1 for r in records)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    states = ckpt["rng"]["train_ranks"]
    assert len(states) == 2 and not torch.equal(states[0], states[1])
    assert torch.equal(states[0], ckpt["rng"]["train"])


def test_two_rank_resume_is_bit_identical(trained, workdir):
    """2 steps, then a resumed session to 3 steps: every rank continues its own stream."""
    run_dir, _ = trained
    check_ok(torchrun("train", "train.toml", "--out", "resumed", "--set", "train.max_steps=2", cwd=workdir))
    proc = check_ok(torchrun("train", "train.toml", "--out", "resumed", cwd=workdir))
    assert "resumed at step 2" in proc.stdout
    got = torch.load(workdir / "resumed" / "model.pt", weights_only=True)
    assert max_difference(got, torch.load(run_dir / "model.pt", weights_only=True)) == 0.0


def test_global_batch_must_divide(workdir):
    proc = torchrun("train", "train.toml", "--out", "bad", "--set", "train.batch_size=7", cwd=workdir)
    assert proc.returncode != 0
    assert "train.batch_size: 7 is the global batch" in proc.stderr
    assert "[rank 1] error:" in proc.stderr  # every rank reports, the others say which they are
    assert not (workdir / "bad" / "checkpoint.pt").exists()


# -- sampling ---------------------------------------------------------------------------------------
def reference_sampling(run_dir: Path, overrides: tuple[str, ...], seeds: list[int]) -> tuple[dict, Chain]:
    """The chains rank r runs (n_chains / 2 of them, seeded with seeds[r]), merged and analysed."""
    from lattgen.config import apply_overrides

    base, _, model = load_trained(run_dir)
    base["sampler"] = {"name": "imh"}
    config = resolve_config(apply_overrides(base, overrides))
    run, section = config["run"], config["sampler"]
    action = build_action(config["action"])
    observables = build_observables(action.lattice, run["observables"])
    per_rank = section["n_chains"] // len(seeds)
    steps = -(-run["n_samples"] // section["n_chains"])
    chains = []
    for seed in seeds:
        sampler = build_sampler(dict(section, n_chains=per_rank), action, run=run,
                                generator=make_generator(seed), model=model)
        chains.append(run_chain(sampler, measure_all(observables), n_samples=steps * per_rank,
                                n_therm=run["n_therm"]))
    merged = merge_chains(chains, type(sampler).merge_info([c.info for c in chains], [per_rank] * len(seeds)))
    return analyse_chain(merged, observables), merged


def test_two_rank_imh_sampling_equals_reference(trained, workdir):
    run_dir, _ = trained
    args = [a for item in IMH_SETTINGS for a in ("--set", item)]
    proc = check_ok(torchrun("sample", str(run_dir), *args, "--out", "imh2", cwd=workdir))
    assert proc.stdout.count("susceptibility") == 1  # one table, from rank 0
    res = json.loads((workdir / "imh2" / "results.json").read_text())
    assert (res["n_chains"], res["n_samples"], res["processes"]) == (4, 400, 2)
    seed = 3
    analysed, merged = reference_sampling(run_dir, IMH_SETTINGS, [distributed.rank_seed(seed, r) for r in (0, 1)])
    assert res["acceptance"] == pytest.approx(merged.acceptance, abs=0)
    assert res["sampler_info"]["n_chains"] == 4
    assert res["sampler_info"]["longest_rejection_run"] == merged.info["longest_rejection_run"]
    for name, obs in analysed.items():
        for key in ("value", "error", "tau_int"):
            assert res["observables"][name][key] == pytest.approx(obs[key], rel=1e-12), (name, key)
    # negative control: both ranks drawing the plain seed's stream would give other numbers
    same, _ = reference_sampling(run_dir, IMH_SETTINGS, [seed, seed])
    assert same["susceptibility"]["value"] != pytest.approx(res["observables"]["susceptibility"]["value"],
                                                            rel=1e-9)


def test_two_rank_hmc_agrees_with_one_rank(workdir):
    """Tuned HMC on the free field: one step size for all ranks; chi and <|m|> as one process gets."""
    proc = check_ok(torchrun("sample", "hmc.toml", "--out", "hmc2", cwd=workdir))
    assert proc.stdout.count("wrote") == 1
    two = json.loads((workdir / "hmc2" / "results.json").read_text())
    config = resolve_config(load_toml(workdir / "hmc.toml"))
    one, _ = run_sampling(config)
    assert (two["n_chains"], two["n_samples"]) == (one["n_chains"], one["n_samples"]) == (8, 4000)
    info = two["sampler_info"]
    assert isinstance(info["step_size"], float) and "step_size" not in info.get("per_rank", {})
    assert 0.6 < two["acceptance"] < 0.95
    chi_exact = 1.0 / (2.0 - 4.0 * 0.2)
    for name in ("susceptibility", "abs_magnetisation"):
        a, b = two["observables"][name], one["observables"][name]
        pull = (a["value"] - b["value"]) / np.hypot(a["error"], b["error"])
        assert abs(pull) < 4.0, (name, a, b)
    chi = two["observables"]["susceptibility"]
    assert abs(chi["value"] - chi_exact) < 4.0 * chi["error"]


def test_two_rank_compare(workdir):
    """compare under torchrun: each entry trained and sampled over both ranks, one report."""
    proc = check_ok(torchrun("compare", "compare.toml", "--out", "cmp", cwd=workdir))
    assert proc.stdout.count("cost and autocorrelation") == 1  # rank 1 prints nothing
    summary = json.loads((workdir / "cmp" / "results.json").read_text())
    assert [e["label"] for e in summary["entries"]] == ["gaussian", "hmc"]
    for entry in summary["entries"]:
        assert entry["processes"] == 2 and entry["consistency"]["consistent"]
    gaussian = summary["entries"][0]
    assert (gaussian["n_chains"], gaussian["n_samples"]) == (4, 512)
    assert gaussian["training"]["steps"] == 5
    assert (workdir / "cmp" / "entries" / "gaussian" / "train" / "model.pt").is_file()
    assert load_checkpoint(workdir / "cmp" / "entries" / "gaussian" / "train" / "checkpoint.pt")["world_size"] == 2


def test_two_rank_scan(workdir):
    """scan under torchrun: the conditional model trained once over both ranks, every point
    sampled over both ranks, one report and one results.json written by rank 0."""
    proc = check_ok(torchrun("scan", "scan.toml", "--out", "scan", cwd=workdir))
    assert proc.stdout.count("total cost of the scan") == 1  # rank 1 prints nothing
    result = json.loads((workdir / "scan" / "results.json").read_text())
    assert [(r["beta"], r["label"]) for r in result["rows"]] == [(0.4, "cond"), (0.5, "cond"), (0.4, "hmc"),
                                                                  (0.5, "hmc")]
    for r in result["rows"]:
        assert 0 < r["acceptance"] <= 1 and r["susceptibility_error"] > 0
    for point in (workdir / "scan" / "points").iterdir():
        for entry in point.iterdir():
            res = json.loads((entry / "results.json").read_text())
            assert res["processes"] == 2, (point.name, entry.name)
    ckpt = load_checkpoint(workdir / "scan" / "train" / "cond" / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    # resumable like a one-process scan: a rerun samples nothing new
    stamps = {p: p.stat().st_mtime_ns for p in (workdir / "scan" / "points").rglob("results.json")}
    check_ok(torchrun("scan", "scan.toml", "--out", "scan", cwd=workdir))
    assert {p: p.stat().st_mtime_ns for p in (workdir / "scan" / "points").rglob("results.json")} == stamps


def test_one_process_resumes_a_two_rank_checkpoint(trained, tmp_path):
    """Another number of processes continues validly: here one process takes rank 0's stream."""
    import shutil

    from lattgen.build import make_generator as gen
    from lattgen.rundir import train_run

    run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    ckpt = load_checkpoint(copy / "checkpoint.pt")
    config = resolve_config(load_toml(copy / "config.toml"), require=("action", "model"))
    config["train"]["max_steps"] = 4
    result = train_run(config, copy)
    assert (result.start_step, result.step) == (3, 4)
    after = load_checkpoint(copy / "checkpoint.pt")
    assert after["world_size"] == 1 and "train_ranks" not in after["rng"]
    # the one process continued rank 0's saved stream with the whole batch of 8: redo that step
    action = build_action(config["action"])
    model = seeded_model(config["model"], action, config["run"]["seed"], None).to(torch.float64)
    model.load_state_dict(ckpt["model"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config["train"]["lr"])
    opt.load_state_dict(ckpt["optimizer"])
    g = gen(0)
    g.set_state(ckpt["rng"]["train"])
    phi, log_q = model.sample(8, g)
    (log_q + action(phi)).mean().backward()
    torch.nn.utils.clip_grad_norm_(params, config["train"]["grad_clip"])
    opt.step()
    assert max_difference(torch.load(copy / "model.pt", weights_only=True), model.state_dict()) < 1e-12
