"""Ensembles on disk (lattgen/ensemble.py), `lattgen analyse` and bad ensemble files.

Judged by: the analysis of a saved ensemble equals the live analysis of the same run (bit for bit:
the stored configurations are the sampler's states and each step is measured as the same batch).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ensemble_helpers import VectorsPlugin

from lattgen import LattgenWarning, Lattice, LinkAngles, RealField, UnitVectors
from lattgen.cli import cli
from lattgen.config import resolve_config
from lattgen.ensemble import Ensemble, EnsembleError, EnsembleWriter
from lattgen.jsonio import json_text
from lattgen.reanalysis import analyse_ensemble
from lattgen.registry import Registry
from lattgen.sample import run_sampling

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.45
lam = 1.0
[sampler]
name = "hmc"
n_chains = 4
[run]
n_samples = 1200
n_therm = 30
seed = 5
"""


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An HMC run sampled with --save-configs: (run directory, its results)."""
    tmp = tmp_path_factory.mktemp("saved")
    cfg = tmp / "c.toml"
    cfg.write_text(CONFIG)
    res = invoke("sample", str(cfg), "--out", str(tmp / "run"), "--save-configs")
    assert res.exit_code == 0, res.output
    return tmp / "run", json.loads((tmp / "run" / "results.json").read_text())


# -- the writer on every kind of field space ---------------------------------------------------
class _Recorded:
    """A stand-in sampler whose states are given (to test the writer on any field space)."""

    def __init__(self, state, log_weight=None):
        self.state = state
        if log_weight is not None:
            self.log_weight = log_weight


@pytest.mark.parametrize("space", [RealField(Lattice([3, 4])), LinkAngles(Lattice([3, 4])),
                                   UnitVectors(Lattice([3, 4]), 3)], ids=["real", "circle", "sphere"])
def test_writer_stores_every_field_space_exactly(tmp_path, space):
    gen = torch.Generator().manual_seed(1)
    n_chains, n_steps, every = 3, 11, 2
    states = [space.random(n_chains, generator=gen) for _ in range(n_steps)]
    log_w = [torch.randn(n_chains, generator=gen, dtype=torch.float64) for _ in range(n_steps)]
    acc = [(torch.rand(n_chains, generator=gen) < 0.5).to(torch.float64) for _ in range(n_steps)]
    config = {"action": {"name": "fake", "lattice": [3, 4]}, "sampler": {"name": "imh"}, "run": {"seed": 9}}
    writer = EnsembleWriter(tmp_path / "e.h5", space, n_chains=n_chains, config=config, save_every=every,
                            block_steps=2)  # several blocks and a remainder
    for s, w, a in zip(states, log_w, acc):
        writer(_Recorded(s, w), a)
    writer.close()
    kept = list(range(0, n_steps, every))
    with Ensemble(tmp_path / "e.h5") as ens:
        assert ens.n_steps == len(kept) and ens.complete and ens.config == config
        assert ens.attrs["seed"] == 9 and ens.attrs["sampler"] == "imh" and ens.attrs["save_every"] == every
        (lo, block), = list(ens.blocks(space, block_steps=100))
        assert lo == 0 and block.dtype == space.dtype(torch.float64)
        assert torch.equal(block, torch.stack([states[i] for i in kept]))  # exact, complex included
        np.testing.assert_array_equal(ens.log_weight(), torch.stack([log_w[i] for i in kept]).numpy())
        np.testing.assert_array_equal(ens.accepted(), torch.stack([acc[i] for i in kept]).numpy())
    with h5py.File(tmp_path / "e.h5", "r") as f:
        ds = f["configs/chain_0000"]
        assert ds.compression == "gzip" and ds.shuffle and ds.chunks[1:] == space.shape


def test_values_off_the_manifold_are_refused_on_reading(tmp_path):
    space = LinkAngles(Lattice([2, 2]))
    writer = EnsembleWriter(tmp_path / "e.h5", space, n_chains=1, config={"action": {}, "run": {}})
    bad = space.random(1)
    bad[0, 0, 1, 1] = 4.0  # an angle outside (-pi, pi]
    writer(_Recorded(bad), torch.ones(1))
    writer.close()
    with Ensemble(tmp_path / "e.h5") as ens, pytest.raises(EnsembleError, match="outside"):
        list(ens.blocks(space))


def test_a_killed_run_leaves_a_readable_file_with_its_blocks(tmp_path):
    """kill -9 between blocks: the file opens, holds the blocks written and says it is incomplete."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from lattgen import Lattice, RealField
        from lattgen.ensemble import EnsembleWriter
        space = RealField(Lattice([4, 4]))
        w = EnsembleWriter({str(tmp_path / 'e.h5')!r}, space, n_chains=2, config={{"action": {{}}, "run": {{}}}},
                           block_steps=3)
        class S: pass
        s = S()
        for i in range(7):  # two full blocks written, one step buffered
            s.state = torch.full((2, 4, 4), float(i), dtype=torch.float64)
            w(s, torch.ones(2))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr
    with Ensemble(tmp_path / "e.h5") as ens:
        assert ens.n_steps == 6 and not ens.complete
        (_, block), = list(ens.blocks(RealField(Lattice([4, 4]))))
        assert block[:, :, 0, 0].tolist() == [[float(i)] * 2 for i in range(6)]


def test_an_ensemble_being_written_is_refused_in_one_line(tmp_path):
    """Another process holds the file open for writing (HDF5's lock): named as such, not as damaged."""
    path = tmp_path / "e.h5"
    code = f"import h5py, sys, time\nf = h5py.File({str(path)!r}, 'w')\nprint('open', flush=True)\ntime.sleep(60)"
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(EnsembleError, match="open for writing by another process"):
            Ensemble(path)
    finally:
        writer.kill()
        writer.wait()


# -- save -> analyse equals the live analysis --------------------------------------------------
def test_analyse_equals_the_live_analysis_exactly(saved, tmp_path):
    run, live = saved
    before = digest(run / "ensemble.h5")
    res = invoke("analyse", str(run / "ensemble.h5"), "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "a" / "results.json").read_text())
    assert again["observables"] == live["observables"]  # exact by construction
    assert again["acceptance"] == live["acceptance"] and again["n_samples"] == live["n_samples"]
    assert live["ensemble"] == {"file": "ensemble.h5", "save_every": 1, "n_steps": 300, "n_chains": 4}
    assert digest(run / "ensemble.h5") == before  # opened read-only
    with Ensemble(run / "ensemble.h5") as ens:
        assert ens.complete and ens.attrs["n_therm"] == 30 and ens.attrs["n_steps_planned"] == 300
        assert ens.attrs["acceptance"] == live["acceptance"] and ens.attrs["sampler"] == "hmc"
        assert json.loads(ens.attrs["metadata"])["packages"]["h5py"] == h5py.__version__


def test_analyse_a_subset_of_observables_and_thinned_ensembles(saved, tmp_path):
    run, live = saved
    results, _ = analyse_ensemble(run / "ensemble.h5", ["susceptibility"])
    assert list(results["observables"]) == ["susceptibility"]
    assert results["observables"]["susceptibility"] == live["observables"]["susceptibility"]


@pytest.mark.parametrize("theory, space", [("u1", "LinkAngles"), ("cpn", "UnitVectors")])
def test_installed_theories_save_and_analyse_exactly(registry, tmp_path, theory, space):
    """The link-angle and complex unit-vector theories through save -> analyse (NaN-aware: JSON)."""
    if theory not in registry.names("action"):
        pytest.skip(f"theory {theory} is not installed")
    config = resolve_config({"action": {"name": theory, "lattice": [4, 4], "beta": 1.0},
                             "sampler": {"n_chains": 4}, "run": {"n_samples": 160, "n_therm": 10, "seed": 3}},
                            registry)
    live, _ = run_sampling(config, registry=registry, save_configs=tmp_path / "e.h5")
    again, _ = analyse_ensemble(tmp_path / "e.h5", registry=registry)
    as_json = lambda r: json.loads(json_text(r["observables"]))  # noqa: E731
    assert as_json(again) == as_json(live)
    with Ensemble(tmp_path / "e.h5") as ens:
        assert ens.attrs["field_space"] == space and ens.n_steps == 40


def test_an_interrupted_ensemble_is_analysed_with_a_warning(saved, tmp_path):
    run, _ = saved
    cut = tmp_path / "cut.h5"
    shutil.copy(run / "ensemble.h5", cut)
    with h5py.File(cut, "r+") as f:  # as a run killed after its first 100 steps' block
        f.attrs["n_steps_valid"], f.attrs["complete"] = 100, False
    with pytest.warns(LattgenWarning, match="incomplete"):
        results, chain = analyse_ensemble(cut)
    assert chain.n_steps == 100 and results["ensemble"]["complete"] is False


def test_complex_field_ensemble_analyses_like_the_live_run(tmp_path):
    """A complex field space (unit 2-vectors) through sample -> HDF5 -> analyse, with log-weights."""
    reg = Registry([("vectors", VectorsPlugin())], entry_points=True)
    config = resolve_config({"action": {"name": "uniform_vectors", "lattice": [3, 3]},
                             "run": {"n_samples": 400, "seed": 4, "n_therm": 2}}, reg)
    live, _ = run_sampling(config, registry=reg, save_configs=tmp_path / "e.h5", save_every=1)
    again, _ = analyse_ensemble(tmp_path / "e.h5", registry=reg)
    # exact by construction; as JSON text so that NaN (an installed theory's xi on random unit
    # vectors, say) compares equal to NaN
    assert json.dumps(again["observables"], sort_keys=True) == json.dumps(live["observables"], sort_keys=True)
    w = live["observables"]["weight0"]
    assert abs(w["value"] - 0.5) < 4 * w["error"]  # exact mean 1/N
    with Ensemble(tmp_path / "e.h5") as ens:
        assert ens.is_complex and ens.field_shape == (3, 3, 2) and ens.log_weight().shape == (100, 4)
    # real-field observables do not apply to this theory's configurations
    with pytest.raises(EnsembleError, match="not registered for the ensemble's field space"):
        analyse_ensemble(tmp_path / "e.h5", ["susceptibility"], registry=reg)
    # an ensemble of one theory relabelled as another (complex data, real field): refused
    relabelled = tmp_path / "relabelled.h5"
    shutil.copy(tmp_path / "e.h5", relabelled)
    with h5py.File(relabelled, "r+") as f:
        cfg = json.loads(f.attrs["config_json"])
        cfg["action"] = {"name": "phi4", "lattice": [3, 3, 2], "beta": 0.5, "lam": 1.0}
        f.attrs["config_json"] = json.dumps(cfg)
    with pytest.raises(EnsembleError, match="another theory or lattice"):
        analyse_ensemble(relabelled, registry=reg)


# -- bad input: one line, exit 2, the file untouched ------------------------------------------
def _truncated(src, dst):
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])


def _foreign(src, dst):
    with h5py.File(dst, "w") as f:
        f["data"] = np.zeros(3)


def _other_lattice(src, dst):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["config_json"])
        cfg["action"]["lattice"] = [6, 6]
        f.attrs["config_json"] = json.dumps(cfg)


def _uninstalled_theory(src, dst):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["config_json"])
        cfg["action"] = {"name": "no_such_theory", "lattice": [4, 4]}
        f.attrs["config_json"] = json.dumps(cfg)


def _missing_dataset(src, dst):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f["configs/chain_0002"]


def _not_hdf5(src, dst):
    dst.write_text("[action]\nname = 'phi4'\n")


@pytest.mark.parametrize("make, message", [
    (_truncated, "not a readable HDF5 file"),
    (_foreign, "not a lattgen ensemble"),
    (_other_lattice, "another theory or lattice"),
    (_uninstalled_theory, "its config does not build here"),
    (_missing_dataset, "configs/chain_0002 is missing"),
    (_not_hdf5, "not a readable HDF5 file"),
], ids=["truncated", "foreign", "other-lattice", "uninstalled-theory", "missing-dataset", "not-hdf5"])
def test_bad_ensembles_are_one_line_exit_2_and_untouched(saved, tmp_path, make, message):
    run, _ = saved
    bad = tmp_path / "bad.h5"
    make(run / "ensemble.h5", bad)
    before = digest(bad)
    res = CliRunner().invoke(cli, ["analyse", str(bad), "--out", str(tmp_path / "a")])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output
    assert "Traceback" not in res.output
    assert digest(bad) == before
    assert not (tmp_path / "a").exists()  # nothing created for a refused input


def test_save_every_must_be_positive(saved, tmp_path):
    res = CliRunner().invoke(cli, ["sample", str(saved[0] / "config.toml"), "--save-configs",
                                   "--save-every", "0", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--save-every" in res.output
    res = CliRunner().invoke(cli, ["sample", str(saved[0] / "config.toml"), "--save-every", "5",
                                   "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "add --save-configs" in res.output and not (tmp_path / "y").exists()
