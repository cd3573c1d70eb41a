"""The third-party example plugin: installed like any package, listed, and sampled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lattgen-phi6"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into a scratch target directory (the environment is untouched)."""
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(target), str(EXAMPLE)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"installing the example plugin failed:\n{proc.stderr}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def lattgen(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lattgen", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_listed_with_its_plugin(installed):
    proc = lattgen(installed, "list", "--json", "--kind", "action")
    assert proc.returncode == 0, proc.stderr
    actions = {a["name"]: a for a in json.loads(proc.stdout)["actions"]}
    assert actions["phi6"]["plugin"] == "phi6"
    assert {p["name"] for p in actions["phi6"]["params"]} == {"beta", "g"}


def test_sampled_with_hmc(installed, tmp_path):
    cfg = tmp_path / "phi6.toml"
    cfg.write_text(
        '[action]\nname = "phi6"\nlattice = [4, 4]\nbeta = 0.2\ng = 0.5\n'
        '[sampler]\nname = "hmc"\nn_chains = 8\n'
        '[run]\nn_samples = 800\nseed = 1\nobservables = ["susceptibility", "abs_magnetisation"]\n'
    )
    proc = lattgen(installed, "sample", str(cfg), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["action"]["name"] == "phi6"
    chi = res["observables"]["susceptibility"]
    assert chi["value"] > 0 and chi["error"] > 0


def test_absent_without_install():
    proc = subprocess.run([sys.executable, "-m", "lattgen", "list", "--json", "--kind", "action"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "phi6" not in {a["name"] for a in json.loads(proc.stdout)["actions"]}
