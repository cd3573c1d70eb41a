"""Run metadata (lattgen/metadata.py): every run directory records versions, device, threads, git."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest
import torch
from click.testing import CliRunner

import lattgen
from lattgen.cli import cli
from lattgen.metadata import METADATA, git_revision, run_metadata

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(lattgen.__file__).resolve().parent.parent

CONFIG = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.45
lam = 1.0
[sampler]
name = "metropolis"
n_chains = 4
[run]
n_samples = 400
n_therm = 20
seed = 3
"""


def test_record_names_the_packages_device_and_threads():
    meta = run_metadata("cpu")
    assert meta["packages"]["torch"] == torch.__version__.split("+")[0] or \
        meta["packages"]["torch"] == torch.__version__
    assert meta["packages"]["numpy"] == numpy.__version__
    assert meta["packages"]["lattgen"] == lattgen.__version__
    assert meta["packages"]["normflows"] is not None
    assert meta["device"] == "cpu" and meta["torch_threads"] == torch.get_num_threads() == 1
    json.dumps(meta)  # JSON-ready


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None,
                    reason="lattgen is not imported from a git checkout")
def test_git_revision_is_the_checkouts_head():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    rev = git_revision()
    assert rev["commit"] == head and isinstance(rev["dirty"], bool)


def test_sample_run_directory_records_metadata(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    res = CliRunner().invoke(cli, ["sample", str(cfg), "--out", str(tmp_path / "out")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "out" / METADATA).read_text())
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert meta == results["metadata"]
    assert meta["packages"]["torch"] and meta["device"] == "cpu" and meta["torch_threads"] >= 1


def test_training_run_directory_records_metadata(tmp_path, registry):
    from lattgen.config import resolve_config
    from lattgen.rundir import train_run

    config = resolve_config({"action": {"name": "phi4", "lattice": [4, 4], "beta": 0.45, "lam": 1.0},
                             "model": {"name": "gaussian"},
                             "train": {"max_steps": 2, "batch_size": 8, "eval_batch": 8}}, registry,
                            require=("action", "model"))
    train_run(config, tmp_path / "run", registry=registry)
    meta = json.loads((tmp_path / "run" / METADATA).read_text())
    assert meta["packages"]["lattgen"] == lattgen.__version__ and meta["device"] == "cpu"
