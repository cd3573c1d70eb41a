"""Fault injection at small size (issue 14): kill -9 at random points of training and resume,
kill -9 in the middle of `sample`, and two runs into one directory. Seeded (the kill times come
from random.Random(14)), bounded in time (every wait has a deadline), the real `lattgen` in
subprocesses. What must hold whatever the kill point: nothing finished is lost, the resumed run
ends with the uninterrupted run's parameters bit for bit, and a second run fails in one line."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
import torch
from cli_faults import assert_one_error_line, digests, lattgen, sample_config, start, train_config
from click.testing import CliRunner

from lattgen.checkpoints import read_metrics
from lattgen.cli import cli
from lattgen.config import load_toml, resolve_config
from lattgen.outdir import MARKER
from lattgen.rundir import train_run

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = random.Random(14)
DEADLINE_S = 120


def marker_id(out):
    try:
        return os.stat(out / MARKER).st_ino, os.stat(out / MARKER).st_mtime_ns
    except FileNotFoundError:
        return None


def wait_for_claim(out, proc, before=None):
    """Until ``proc`` has claimed ``out`` (its lock is taken once it rewrote the marker)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()}")
        now = marker_id(out)
        if now is not None and now != before:
            return
        time.sleep(0.02)
    raise AssertionError("the run never claimed its directory")


def logged_step(out) -> int:
    """The last step in metrics.jsonl (complete lines only: the writer may be mid-line)."""
    try:
        lines = (out / "metrics.jsonl").read_text().split("\n")[:-1]
    except FileNotFoundError:
        return 0
    steps = [0]
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            pass
    return max(steps)


def wait_for_step(out, proc, step):
    """Until ``proc`` has logged ``step`` (or exited)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and proc.poll() is None and logged_step(out) < step:
        time.sleep(0.01)


def kill9(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def test_kill_minus_9_at_random_points_of_training_then_resume(tmp_path):
    """Three kill -9 at seeded random points (after a random logged step and a random delay:
    mid-step, mid-checkpoint or mid-append, wherever they land), then the same command: the same
    parameters as an uninterrupted run, every metrics record once, no temporary left behind."""
    cfg = train_config(tmp_path, steps=200, every=20, lr=0.01)
    reference = train_run(resolve_config(load_toml(cfg), require=("action", "model")), tmp_path / "ref")
    out = tmp_path / "run"
    kills = []
    for step in sorted(RNG.sample(range(0, 160, 10), 3)):
        before = marker_id(out)
        proc = start("train", cfg, "--out", out)
        wait_for_claim(out, proc, before)
        wait_for_step(out, proc, step)
        time.sleep(RNG.uniform(0.0, 0.05))
        kills.append(proc.poll() is None)
        kill9(proc)
    assert any(kills), "no kill landed while training ran"
    done = CliRunner().invoke(cli, ["train", str(cfg), "--out", str(out)])  # the same command
    assert done.exit_code == 0, done.output
    ours = torch.load(out / "model.pt", weights_only=True)
    ref = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    assert reference.step == 200
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == list(range(10, 201, 10))
    assert not list(out.glob(".*.tmp-*")) and not (out / ".lattgen-commit.json").exists()


def test_kill_minus_9_during_sample_leaves_the_old_pair(tmp_path):
    """An interrupted `sample --force` into a directory holding results: the old config.toml and
    results.json stay, byte for byte, and the next run cleans up what the killed one left."""
    out = tmp_path / "out"
    cfg = sample_config(tmp_path, n=40)
    assert CliRunner().invoke(cli, ["sample", str(cfg), "--out", str(out)]).exit_code == 0
    before = digests(out)
    long = sample_config(tmp_path, n=10**6, seed=2)  # minutes of sampling: it is killed first
    marker = marker_id(out)
    proc = start("sample", long, "--out", out, "--force")
    wait_for_claim(out, proc, marker)
    time.sleep(RNG.uniform(0.2, 1.0))
    assert proc.poll() is None
    kill9(proc)
    assert digests(out) == before
    again = CliRunner().invoke(cli, ["sample", str(cfg), "--out", str(out), "--force", "--set", "run.seed=9"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["run"]["seed"] == 9
    assert load_toml(out / "config.toml")["run"]["seed"] == 9
    assert not list(out.glob(".*.tmp-*"))


def test_two_runs_into_one_directory(tmp_path):
    """The second run fails at once in one line, the first is untouched; the lock dies with its
    holder (kill -9), so the directory can be resumed afterwards."""
    cfg = train_config(tmp_path, steps=10**6, every=5)  # runs until it is killed
    out = tmp_path / "run"
    first = start("train", cfg, "--out", out)
    try:
        wait_for_claim(out, first)
        second = lattgen("train", cfg, "--out", out)
        assert_one_error_line(second, "in use by another lattgen run")
        assert first.poll() is None
        deadline = time.monotonic() + DEADLINE_S
        while not (out / "checkpoint.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        kill9(first)
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    resumed = CliRunner().invoke(cli, ["train", str(cfg), "--out", str(out), "--set", f"train.max_steps={step + 5}"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed at step {step}" in " ".join(resumed.output.split())  # the summary may wrap
