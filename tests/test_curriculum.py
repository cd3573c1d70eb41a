"""Curriculum training (lattgen/curriculum.py): stages at smaller lattices, then the config's own action,
within one budget; validation of the [train] curriculum list; resume skips finished stages."""

from __future__ import annotations

import pytest
import torch

from lattgen import ConfigError
from lattgen import rundir as rundir_module
from lattgen.config import resolve_config
from lattgen.curriculum import (
    final_train_section,
    parse_curriculum,
    read_record,
    stage_train_section,
)
from lattgen.rundir import load_trained, train_run
from lattgen.train import MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_EQUIVARIANT = {"name": "equivariant", "n_layers": 2, "hidden": [4], "bins": 3}


def config(registry, curriculum, model=None, **train):
    raw = {
        "action": {"name": "phi4", "lattice": [8, 8], "beta": 0.577, "lam": 0.5},
        "model": dict(model or TINY_EQUIVARIANT),
        "train": {"max_steps": 6, "batch_size": 16, "eval_batch": 32, "log_every": 2,
                  "curriculum": curriculum, **train},
        "run": {"seed": 3},
    }
    return resolve_config(raw, registry, require=("action", "model"))


STAGE = [{"lattice": [4, 4], "beta": 0.5, "fraction": 0.5}]


def test_stages_train_first_and_hand_their_weights_on(tmp_path, registry, monkeypatch):
    calls = []
    original = rundir_module.initialise_from

    def spy(model, source, reg):
        calls.append(source)
        original(model, source, reg)

    monkeypatch.setattr(rundir_module, "initialise_from", spy)
    res = train_run(config(registry, STAGE), tmp_path / "run", registry=registry)
    stage_dir = tmp_path / "run" / "curriculum" / "stage0"
    assert calls == [stage_dir], "the final stage starts from the stage's weights"
    assert (stage_dir / MODEL).is_file() and (tmp_path / "run" / MODEL).is_file()
    record = read_record(tmp_path / "run")
    assert [r["lattice"] for r in record] == [[4, 4], [8, 8]]
    assert [r["steps"] for r in record] == [3, 3], "6 steps split 50/50"
    assert res.step == 3
    # the run directory is an ordinary one: its config keeps the curriculum, the model loads at L = 8
    cfg, action, model = load_trained(tmp_path / "run", registry)
    assert cfg["train"]["curriculum"] == STAGE and action.lattice.shape == (8, 8)
    phi, _ = model.sample(2, torch.Generator().manual_seed(0))
    assert phi.shape == (2, 8, 8)


def test_time_budget_is_shared(tmp_path, registry):
    """max_time_s: the stage gets its fraction, the final stage what is left."""
    train = {"max_time_s": 10.0, "max_steps": 100, "batch_size": 4}
    assert stage_train_section(train, 0.25) == {"max_time_s": 2.5, "max_steps": 25, "batch_size": 4}
    assert final_train_section(train, 3.0, 25) == {"max_time_s": 7.0, "max_steps": 75, "batch_size": 4}
    assert final_train_section({"max_time_s": 1.0}, 5.0, 0)["max_time_s"] > 0
    cfg = config(registry, STAGE, max_steps=None, max_time_s=1.0)
    train_run(cfg, tmp_path / "run", registry=registry)
    record = read_record(tmp_path / "run")
    total = sum(r["elapsed_s"] for r in record)
    assert record[0]["elapsed_s"] >= 0.5 and total < 1.0 + 0.5, record  # one step of overshoot at most


def test_resume_does_not_retrain_finished_stages(tmp_path, registry):
    cfg = config(registry, STAGE)
    train_run(cfg, tmp_path / "run", registry=registry)
    stage_model = tmp_path / "run" / "curriculum" / "stage0" / MODEL
    before = torch.load(stage_model, weights_only=True)
    first = read_record(tmp_path / "run")
    res = train_run(cfg, tmp_path / "run", registry=registry)
    after = torch.load(stage_model, weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert res.step == 3 and res.start_step == 3
    assert [r["steps"] for r in read_record(tmp_path / "run")] == [r["steps"] for r in first]


@pytest.mark.parametrize("curriculum, message", [
    ({"lattice": [4, 4]}, "non-empty list of tables"),
    ([], "non-empty list of tables"),
    (["x"], r"curriculum\[0\]: expected a table"),
    ([{"lattice": [4, 4]}], r"curriculum\[0\]\.fraction"),
    ([{"lattice": [4, 4], "fraction": 1.5}], r"curriculum\[0\]\.fraction"),
    ([{"lattice": [4, 4], "fraction": True}], r"curriculum\[0\]\.fraction"),
    ([{"fraction": 0.5}], "no \\[action\\] key"),
    ([{"lattice": [4, 4], "fraction": 0.6}, {"lattice": [6, 6], "fraction": 0.4}], "add up to 1"),
    ([{"name": "phi4_standard", "fraction": 0.5}], "keeps the action"),
])
def test_malformed_curricula_are_config_errors(registry, curriculum, message):
    with pytest.raises(ConfigError, match=message):
        parse_curriculum(config(registry, curriculum))


def test_bad_stage_actions_and_lattice_bound_models_fail_before_training(tmp_path, registry):
    with pytest.raises(ConfigError, match=r"train\.curriculum\[0\].*beta"):
        train_run(config(registry, [{"beta": "high", "fraction": 0.5}]), tmp_path / "a", registry=registry)
    dense = {"name": "affine", "n_layers": 2, "hidden": [4], "network": "dense"}
    with pytest.raises(ConfigError, match="tied to one lattice"):
        train_run(config(registry, STAGE, model=dense), tmp_path / "b", registry=registry)
    assert not (tmp_path / "a" / "curriculum").exists() and not (tmp_path / "b" / "curriculum").exists()
