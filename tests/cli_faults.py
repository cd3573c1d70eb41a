"""Helpers of the fault tests: run the real `lattgen` in a subprocess, check the fault contract
(exit status 2, exactly one `error:` line, no traceback), small configs that run in seconds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

#: a narrow terminal: an error line that rich wrapped would show up as two lines
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "60",
       "PYTHONUNBUFFERED": "1"}

SAMPLE = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.3
lam = 0.5
[sampler]
name = "hmc"
n_chains = 4
[run]
n_samples = {n}
seed = {seed}
"""

TRAIN = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.3
lam = 0.5
[model]
name = "{model}"
[train]
max_steps = {steps}
batch_size = 16
log_every = 10
eval_batch = 32
checkpoint_every = {every}
threads = 1
lr = {lr}
[run]
seed = 3
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sample_config(tmp: Path, n: int = 200, seed: int = 1) -> Path:
    return write(tmp / f"sample{seed}.toml", SAMPLE.format(n=n, seed=seed))


def train_config(tmp: Path, model: str = "gaussian", steps: int = 40, every: int = 20, lr: float = 0.01,
                 name: str = "train.toml") -> Path:
    return write(tmp / name, TRAIN.format(model=model, steps=steps, every=every, lr=lr))


def lattgen_args(*args) -> list[str]:
    return [sys.executable, "-m", "lattgen", *map(str, args)]


def lattgen(*args, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """`lattgen ARGS` in a fresh process (no inherited signal handlers or threads)."""
    return subprocess.run(lattgen_args(*args), capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, stdin=subprocess.DEVNULL, check=False)


def start(*args, env: dict | None = None) -> subprocess.Popen:
    """`lattgen ARGS` started in the background (stdout/stderr to pipes)."""
    return subprocess.Popen(lattgen_args(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or ENV, stdin=subprocess.DEVNULL)


def assert_one_error_line(proc, *needles: str) -> str:
    """Exit status 2, exactly one line starting with `error:` that holds every needle, no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "error:" not in proc.stdout
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every visible file under ``directory`` (to show that nothing was touched)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(".")}
