"""Run directories: train_run writes config.toml + checkpoint + model + metrics, load_trained reads
them back; resume refuses another action/model; clear errors for missing or unfinished runs;
--init-from across lattice sizes. Uses the registered phi4 action and flow models."""

from __future__ import annotations

import sys

import pytest
import torch

from lattgen import ConfigError, RunDirError, TrainingError
from lattgen.build import build_sampler, make_generator
from lattgen.config import resolve_config
from lattgen.rundir import initialise_from, load_trained, seeded_model, train_run
from lattgen.sampler import run_chain
from lattgen.train import CHECKPOINT, METRICS, MODEL, read_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TINY_AFFINE = {"name": "affine", "n_layers": 2, "hidden": [4]}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(registry, L=4, beta=0.3, model=None, **train):
    raw = {
        "action": {"name": "phi4", "lattice": [L, L], "beta": beta, "lam": 0.5},
        "model": dict(model or TINY_AFFINE),
        "train": {"max_steps": 6, "batch_size": 32, "eval_batch": 64, "log_every": 3, **train},
        "run": {"seed": 5},
    }
    return resolve_config(raw, registry, require=("action", "model"))


def test_train_run_writes_the_directory_and_load_trained_restores_the_model(tmp_path, registry):
    cfg = config(registry)
    res = train_run(cfg, tmp_path / "run", registry=registry)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.toml", "metadata.json", CHECKPOINT, MODEL, METRICS}
    assert res.step == 6 and [r["step"] for r in read_metrics(run / METRICS)] == [3, 6]
    written = tomllib.loads((run / "config.toml").read_text())
    assert resolve_config(written, registry, require=("action", "model")) == cfg
    loaded_cfg, action, model = load_trained(run, registry)
    assert loaded_cfg == cfg and not model.training and model.dtype == torch.float32
    trained = torch.load(run / MODEL, weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k])
    # the restored model samples; imh runs on it (what `lattgen sample RUN_DIR` does)
    sampler = build_sampler({"name": "imh", "n_chains": 4, "batch_size": 8}, action,
                            run={"device": "cpu", "dtype": "float64"}, generator=make_generator(0),
                            model=model, registry=registry)
    chain = run_chain(sampler, lambda phi: {"m": phi.flatten(1).mean(1, keepdim=True)}, 40, n_therm=2)
    assert chain.primaries["m"].shape == (10, 4, 1) and chain.extras["log_weights"].shape == (10, 4)


def test_same_seed_same_initial_weights_without_touching_global_rng(registry):
    cfg = config(registry)
    from lattgen.build import build_action

    action = build_action(cfg["action"], registry)
    state = torch.random.get_rng_state()
    a = seeded_model(cfg["model"], action, 5, registry)
    b = seeded_model(cfg["model"], action, 5, registry)
    c = seeded_model(cfg["model"], action, 6, registry)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_continues_and_refuses_another_action_or_model(tmp_path, registry):
    out = tmp_path / "run"
    train_run(config(registry), out, registry=registry)
    with pytest.raises(RunDirError, match=r"action\.beta: 0\.3 -> 0\.31"):
        train_run(config(registry, beta=0.31), out, registry=registry)
    with pytest.raises(RunDirError, match=r"model\.n_layers: 2 -> 4"):
        train_run(config(registry, model={**TINY_AFFINE, "n_layers": 4}), out, registry=registry)
    # a larger budget continues the same run
    res = train_run(config(registry, max_steps=9), out, registry=registry)
    assert (res.start_step, res.step) == (6, 9)
    # resume=False starts over, whatever was there
    res = train_run(config(registry, beta=0.31, max_steps=3), out, registry=registry, resume=False)
    assert (res.start_step, res.step) == (0, 3)
    assert load_trained(out, registry)[0]["action"]["beta"] == 0.31


def test_uninterrupted_and_resumed_train_run_agree(tmp_path, registry):
    cfg = config(registry, max_steps=8, checkpoint_every=100)
    train_run(cfg, tmp_path / "a", registry=registry)

    def stop(step, total, metrics):
        if step >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "b", registry=registry, progress=stop)
    with pytest.raises(RunDirError, match="has not finished.*lattgen train"):
        load_trained(tmp_path / "b", registry)
    train_run(cfg, tmp_path / "b", registry=registry)
    a = torch.load(tmp_path / "a" / MODEL, weights_only=True)
    b = torch.load(tmp_path / "b" / MODEL, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_trained_errors(tmp_path, registry):
    with pytest.raises(RunDirError, match="not a run directory.*lattgen train"):
        load_trained(tmp_path / "nothing", registry)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no config.toml"):
        load_trained(tmp_path / "empty", registry)
    out = tmp_path / "run"
    train_run(config(registry), out, registry=registry)
    (out / CHECKPOINT).unlink()
    torch.save({"unrelated": torch.zeros(3)}, out / MODEL)
    with pytest.raises(RunDirError, match="does not fit the model"):
        load_trained(out, registry)
    (out / MODEL).unlink()
    with pytest.raises(RunDirError, match="no trained model"):
        load_trained(out, registry)


def test_init_from_a_smaller_lattice(tmp_path, registry):
    small = tmp_path / "L4"
    train_run(config(registry, L=4), small, registry=registry)
    _, _, trained = load_trained(small, registry)
    from lattgen.build import build_action

    big_action = build_action(config(registry, L=6)["action"], registry)
    big = seeded_model(TINY_AFFINE, big_action, 0, registry)
    initialise_from(big, small, registry)
    ref = trained.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in big.state_dict().items())
    res = train_run(config(registry, L=6, max_steps=2), tmp_path / "L6", registry=registry, init_from=small)
    assert res.step == 2
    with pytest.raises(RunDirError, match="--init-from"):
        train_run(config(registry, model={"name": "gaussian"}), tmp_path / "g", registry=registry,
                  init_from=small)


def test_models_that_need_data_say_so(tmp_path, registry):
    if "vae" not in registry.names("model"):
        pytest.skip("the vae model is not registered")
    with pytest.raises(ConfigError, match="forward_kl"):
        train_run(config(registry, model={"name": "vae"}), tmp_path / "vae", registry=registry)


def test_a_failed_resume_keeps_the_recorded_config(tmp_path, registry):
    """A resume with changed [train] settings writes config.toml only once it succeeded: one that
    fails (here: diverges at once) leaves the config that matches the checkpoint."""
    out = tmp_path / "run"
    train_run(config(registry), out, registry=registry)
    recorded = (out / "config.toml").read_text()
    with pytest.raises(TrainingError):
        train_run(config(registry, max_steps=12, lr=1e30, grad_clip=0.0, schedule="constant"), out,
                  registry=registry)
    assert (out / "config.toml").read_text() == recorded
    assert load_trained(out, registry)[0]["train"]["max_steps"] == 6
    res = train_run(config(registry, max_steps=9), out, registry=registry)
    assert res.step == 9 and load_trained(out, registry)[0]["train"]["max_steps"] == 9


def test_a_run_directory_from_before_a_parameter_existed_loads_as_it_was(tmp_path):
    """A recorded config lacking a parameter that has a ``legacy`` value (here the conditional
    model's zero_mode and condition_gaussian, added later with default true) is read with that
    value, so a directory trained before them still loads; a current one records them."""
    from lattgen.config import load_toml, write_toml
    from lattgen.registry import get_registry

    reg = get_registry()
    old = {"name": "conditional_equivariant", "hidden": [4], "n_layers": 2, "zero_mode": False,
           "condition_gaussian": False, "couplings": {"beta": [0.4, 0.5]}}
    cfg = resolve_config({"action": {"name": "phi4", "lattice": [4, 4], "beta": 0.45, "lam": 0.5},
                          "model": old, "train": {"max_steps": 2, "batch_size": 8}}, reg,
                         require=("action", "model", "train"))
    train_run(cfg, tmp_path / "run", registry=reg)
    recorded = load_toml(tmp_path / "run" / "config.toml")
    assert recorded["model"]["zero_mode"] is False  # today's directories record the key
    for key in ("zero_mode", "condition_gaussian"):  # as written before the options existed
        del recorded["model"][key]
    write_toml(recorded, tmp_path / "run" / "config.toml")
    config, _, model = load_trained(tmp_path / "run", reg)
    assert config["model"]["zero_mode"] is False and config["model"]["condition_gaussian"] is False
    trained = torch.load(tmp_path / "run" / MODEL, weights_only=True)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
