"""Faults the CLI must survive: each is exit status 2, exactly one `error:` line, no traceback,
and nothing already on disk lost (issue 14). The real `lattgen` runs in a subprocess where the
behaviour is the process's (status, stderr, files); in-process (CliRunner) where only the
message matters."""

from __future__ import annotations

import json
import pickle
import textwrap

import pytest
import torch
from cli_faults import (
    ENV,
    assert_one_error_line,
    digests,
    lattgen,
    sample_config,
    train_config,
)
from click.testing import CliRunner

from lattgen import outdir
from lattgen.cli import cli
from lattgen.config import load_toml, resolve_config
from lattgen.rundir import train_run


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line(result, *needles):
    """The in-process version of the contract: status 2, one error line holding the needles."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


@pytest.fixture
def run_dir(tmp_path):
    """A finished training run directory of a tiny model (trained in-process, 4 steps)."""
    config = resolve_config(load_toml(train_config(tmp_path, steps=4, every=2)), require=("action", "model"))
    train_run(config, tmp_path / "run")
    return tmp_path / "run"


# -- messages -------------------------------------------------------------------------------------
def test_error_text_is_not_rich_markup(tmp_path):
    """`[action]` in a message is text: rich used to eat it (`error: : required section...`)."""
    (tmp_path / "empty.toml").write_text("")
    line = assert_one_error_line(lattgen("sample", tmp_path / "empty.toml"))
    assert line == "error: [action]: required section is missing"


def test_absurd_lattice_is_refused_with_the_figure_before_allocating(tmp_path):
    """10^14 sites: refused from the estimate (TiB), instead of a traceback from the allocator."""
    cfg = sample_config(tmp_path)
    line = assert_one_error_line(lattgen("sample", cfg, "--set", "action.lattice=[10000000, 10000000]",
                                         "--out", tmp_path / "o"), "action.lattice", "TiB", "smaller lattice")
    assert "1e+14 sites" in line
    assert not (tmp_path / "o").exists()


def test_out_that_cannot_be_created(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_one_error_line(lattgen("sample", sample_config(tmp_path), "--out", tmp_path / "afile" / "sub"),
                          "cannot be created")


def test_permission_and_disk_errors_are_one_line(tmp_path, monkeypatch):
    """A PermissionError creating --out, an OSError writing the results: one line each, and an
    interrupted write leaves no partial results."""
    cfg = sample_config(tmp_path, n=40)
    real_mkdir = type(tmp_path).mkdir

    def denied(self, *a, **k):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(type(tmp_path), "mkdir", denied)
    one_line(invoke("sample", cfg, "--out", tmp_path / "locked"), "Permission denied")

    def full(directory, files):
        raise OSError(28, "No space left on device", str(directory / "results.json"))

    monkeypatch.setattr(outdir, "write_together", full)
    one_line(invoke("sample", cfg, "--out", tmp_path / "full"), "No space left on device", "results.json")
    assert not (tmp_path / "full" / "results.json").exists()


def test_an_allocation_failure_the_estimate_let_through_is_one_line(tmp_path, monkeypatch):
    """The estimate is a lower bound: a later allocation failure is still one line, not torch's text."""
    import lattgen.sample

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 10240000000000 bytes.\nmore")

    monkeypatch.setattr(lattgen.sample, "run_sampling", oom)
    line = one_line(invoke("sample", sample_config(tmp_path), "--out", tmp_path / "o"), "out of memory",
                    "can't allocate memory", "sampler.n_chains")
    assert "more" not in line and not (tmp_path / "o" / "results.json").exists()


def test_diverging_spline_flow_is_a_training_error_naming_the_last_good_checkpoint(tmp_path):
    """lr = 1e3 makes the equivariant (spline) flow diverge; normflows' bin search used to raise
    IndexError before the NaN guard. Now: one line naming the checkpoint kept, which still loads."""
    cfg = train_config(tmp_path, model="equivariant", steps=30, every=1, lr=1e3)
    out = tmp_path / "run"
    line = assert_one_error_line(lattgen("train", cfg, "--out", out), "training")
    assert "checkpoint" in line and ("diverged" in line or "NaN/inf" in line)
    assert "lr" in line  # says what to do
    from lattgen.checkpoints import load_checkpoint

    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert f"step {ckpt['step']}" in line
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert load_toml(out / "config.toml")["train"]["lr"] == 1e3


# -- output directories -----------------------------------------------------------------------------
def test_a_directory_holding_results_is_refused_unless_forced(tmp_path):
    cfg = sample_config(tmp_path, n=40)
    out = tmp_path / "out"
    assert invoke("sample", cfg, "--out", out).exit_code == 0
    before = digests(out)
    assert_one_error_line(lattgen("sample", cfg, "--out", out, "--set", "run.seed=5"), "already holds", "--force")
    assert digests(out) == before
    # another command into it: refused too (in-process: only the message matters)
    one_line(invoke("train", train_config(tmp_path), "--out", out), "already holds", "lattgen sample")
    one_line(invoke("compare", "--out", out), "already holds")
    assert digests(out) == before
    forced = invoke("sample", cfg, "--out", out, "--set", "run.seed=5", "--force")
    assert forced.exit_code == 0, forced.output
    assert load_toml(out / "config.toml")["run"]["seed"] == 5
    assert json.loads((out / "results.json").read_text())["run"]["seed"] == 5


def test_train_force_starts_over_and_resume_refuses_another_model(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", train_config(tmp_path, steps=4, every=2), "--out", out).exit_code == 0
    other = train_config(tmp_path, model="affine", steps=2, every=2, name="other.toml")
    one_line(invoke("train", other, "--out", out), "different action/model", "--force")
    assert load_toml(out / "config.toml")["model"]["name"] == "gaussian"
    assert invoke("train", other, "--out", out, "--force").exit_code == 0
    assert load_toml(out / "config.toml")["model"]["name"] == "affine"


# -- files that are not what they should be ---------------------------------------------------------
def test_truncated_model_file_is_one_line_naming_it(tmp_path, run_dir):
    data = (run_dir / "model.pt").read_bytes()
    (run_dir / "model.pt").write_bytes(data[: len(data) // 2])
    line = assert_one_error_line(lattgen("sample", run_dir, "--out", tmp_path / "o"), "model.pt", "truncated")
    assert "weights_only" not in line


class Foreign:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


def test_foreign_checkpoint_is_refused_without_torch_advice(tmp_path, run_dir):
    from lattgen.checkpoints import load_checkpoint
    from lattgen.errors import RunDirError

    torch.save({"format": 1, "model": Foreign()}, run_dir / "checkpoint.pt")
    with pytest.raises(RunDirError) as exc:
        load_checkpoint(run_dir / "checkpoint.pt")
    message = str(exc.value)
    assert "checkpoint.pt" in message and "not a file lattgen wrote" in message and "no code in it ran" in message
    assert "weights_only" not in message and "\n" not in message
    (run_dir / "checkpoint.pt").write_bytes(pickle.dumps([1, 2]))  # not even a zip archive
    with pytest.raises(RunDirError, match="checkpoint.pt") as exc:
        load_checkpoint(run_dir / "checkpoint.pt")
    assert "weights_only" not in str(exc.value) and "\n" not in str(exc.value)


def test_sampling_a_run_directory_at_another_target_says_so(tmp_path, run_dir):
    res = invoke("sample", run_dir, "--set", "action.beta=0.35", "--set", "run.n_samples=64",
                 "--set", "sampler.n_chains=4", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert "note: sampling another target" in res.output and "0.3 -> 0.35" in res.output
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["action"]["beta"] == 0.35 and results["training_action"]["beta"] == 0.3
    same = invoke("sample", run_dir, "--set", "run.n_samples=64", "--set", "sampler.n_chains=4",
                  "--out", tmp_path / "t")
    assert same.exit_code == 0 and "note:" not in same.output
    assert json.loads((tmp_path / "t" / "results.json").read_text())["training_action"]["beta"] == 0.3


# -- plugins ---------------------------------------------------------------------------------------
def test_third_party_plugin_with_a_builtin_name_leaves_every_command_working(tmp_path):
    """An installed distribution (a dist-info on the path) registering sampler "hmc": `lattgen
    list` works, hmc stays the built-in, one warning names the plugin."""
    site = tmp_path / "site"
    (site / "squatter_dist-1.0.dist-info").mkdir(parents=True)
    (site / "squatter_dist-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: squatter-dist\nVersion: 1.0\n")
    (site / "squatter_dist-1.0.dist-info" / "entry_points.txt").write_text("[lattgen]\nsquatter = squatter_mod\n")
    (site / "squatter_mod.py").write_text(textwrap.dedent("""
        from lattgen import hookimpl

        @hookimpl
        def lattgen_register_samplers(register):
            register("hmc", lambda action, **kw: None, doc="not the real hmc")
    """))
    env = {**ENV, "PYTHONPATH": str(site) + (":" + ENV["PYTHONPATH"] if ENV.get("PYTHONPATH") else "")}
    proc = lattgen("list", "--json", "--kind", "sampler", env=env)
    assert proc.returncode == 0, proc.stderr
    samplers = {s["name"]: s["plugin"] for s in json.loads(proc.stdout)["samplers"]}
    assert samplers["hmc"] == "classical"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'squatter'" in warnings[0] and "built-in" in warnings[0]
