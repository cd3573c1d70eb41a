"""Training run directories: the contract between ``lattgen train`` and ``lattgen sample RUN_DIR``.

A run directory holds

    config.toml     the resolved config (action, model, train, run; written before training)
    checkpoint.pt   model + optimizer + schedule state, step, elapsed time, RNG states
    model.pt        the final model state_dict (written when the budget is used up)
    metrics.jsonl   one JSON record per train.log_every steps
    metadata.json   package versions, device, threads, git revision of the latest (re)start
    results.json    later, from sampling (written by the sample pipeline, not here)
    curriculum/     with [train] curriculum: one run directory per stage (lattgen/curriculum.py)
    curriculum.json with [train] curriculum: every stage's lattice, steps and training time

``train_run`` builds the action and model through ``lattgen.build`` and trains into the
directory, resuming when it holds a checkpoint of the same action and model; ``load_trained``
rebuilds (config, action, model) from a finished directory.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import distributed
from .action import Action
from .build import build_action, build_model, make_generator
from .config import dumps_toml, load_toml, resolve_config, write_toml
from .curriculum import (
    CURRICULUM_DIR,
    final_train_section,
    parse_curriculum,
    stage_train_section,
    write_record,
)
from .errors import ConfigError, LattgenError, RunDirError
from .model import GenerativeModel
from .registry import Registry, get_registry
from .field import DTYPES
from .checkpoints import safe_load
from .metadata import METADATA, metadata_text
from .outdir import recover, write_atomic
from .train import CHECKPOINT, METRICS, MODEL, Progress, TrainResult, load_checkpoint, train

CONFIG = "config.toml"
#: sections that define what a checkpoint is a checkpoint of (a resume must not change them)
IDENTITY_SECTIONS = ("action", "model")


def _normalised(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """A section as it reads back from TOML (None dropped, tuples as lists) for comparison."""
    return tomllib.loads(dumps_toml({"s": dict(section or {})})).get("s", {})


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys of the identity sections (action, model) whose values differ."""
    diffs = []
    for sec in IDENTITY_SECTIONS:
        a, b = _normalised(old.get(sec)), _normalised(new.get(sec))
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{sec}.{key}: {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}")
    return diffs


def seeded_model(section: Mapping[str, Any], action: Action, seed: int, registry: Registry) -> GenerativeModel:
    """``build_model`` with its weight initialisation drawn from a fork of torch's RNG seeded by ``seed``.

    The run's seed fixes the initial weights (reproducible runs) without touching the global
    random state of the caller.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(section, action, registry)


def _check_resumable(out: Path, config: Mapping[str, Any]) -> None:
    """Refuse to train into a directory holding training of another action or model."""
    old_path = out / CONFIG
    trained = (out / CHECKPOINT).is_file() or (out / MODEL).is_file()
    if not (old_path.is_file() and trained):
        return
    old = load_toml(old_path)
    diffs = config_differences(old, config)
    if diffs:
        raise RunDirError(
            f"{out} holds training of a different action/model ({'; '.join(diffs)}); "
            "choose a new --out directory, or add --force to start over in this one"
        )


def initialise_from(model: GenerativeModel, source_dir: str | Path, registry: Registry) -> None:
    """Load the weights of the trained model in ``source_dir`` into ``model`` (e.g. from a smaller L).

    The models must have the same architecture; lattice-independent (fully convolutional)
    models move between lattice sizes because their state_dict holds no lattice-shaped tensors.
    """
    source_config, _, source = load_trained(source_dir, registry)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise RunDirError(
            f"--init-from {source_dir}: its model ({source_config['model'].get('name')}) does not fit "
            f"this one ({type(model).__name__}): {str(exc).splitlines()[0]}. Use a run of the same "
            "model and parameters (a lattice-size change needs a fully convolutional model)"
        ) from None


def train_run(
    resolved_config: Mapping[str, Any],
    out_dir: str | Path,
    *,
    registry: Registry | None = None,
    progress: Progress | None = None,
    resume: bool = True,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train the [model] of a resolved config on its [action] into the run directory ``out_dir``.

    Writes config.toml, then trains (``lattgen.train.train``) with the run's seed and device.
    With ``resume`` and a checkpoint in ``out_dir``, continues it (refusing with RunDirError if
    config.toml there names another action or model); ``init_from`` (a finished run
    directory) initialises a fresh model's weights, and is ignored when resuming a checkpoint.
    With ``[train] curriculum`` the stages train first (``train_curriculum``).
    """
    reg = registry or get_registry()
    for sec in ("action", "model", "train"):
        if sec not in resolved_config:
            raise ConfigError(f"[{sec}]: required section is missing for training")
    if parse_curriculum(resolved_config):
        return train_curriculum(resolved_config, out_dir, registry=reg, progress=progress,
                                resume=resume, init_from=init_from)
    return _train_single(resolved_config, out_dir, registry=reg, progress=progress, resume=resume,
                         init_from=init_from)


def _train_single(
    resolved_config: Mapping[str, Any],
    out_dir: str | Path,
    *,
    registry: Registry,
    progress: Progress | None,
    resume: bool,
    init_from: str | Path | None,
    budget: Mapping[str, Any] | None = None,
) -> TrainResult:
    """One training run into ``out_dir``; ``budget`` replaces the [train] section passed to the trainer
    (config.toml keeps the config's own)."""
    reg = registry
    config = dict(resolved_config)
    run = config.get("run") or resolve_config({"action": config["action"]}, reg)["run"]
    config["run"] = run
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        _check_resumable(out, config)
    action = build_action(config["action"], reg)
    model = seeded_model(config["model"], action, run["seed"], reg)
    resuming = resume and (out / CHECKPOINT).is_file()
    if init_from is not None and not resuming:
        initialise_from(model, init_from, reg)
    # torchrun: rank 0 alone writes the run directory. A fresh run records its config first (a
    # resume checks against it); a resumed one keeps the recorded config until it succeeds
    if distributed.is_main() and not resuming:
        write_toml(config, out / CONFIG)
    if distributed.is_main():  # this (re)start's packages, device, threads and git revision
        write_atomic(out / METADATA, metadata_text(run["device"]))
    generator = make_generator(run["seed"], run["device"])
    result = train(model, action, budget or config["train"], out_dir=out, generator=generator,
                   device=run["device"], progress=progress, resume=resume)
    if distributed.is_main() and resuming:
        write_toml(config, out / CONFIG)
    return result


def train_curriculum(
    resolved_config: Mapping[str, Any],
    out_dir: str | Path,
    *,
    registry: Registry,
    progress: Progress | None = None,
    resume: bool = True,
    init_from: str | Path | None = None,
) -> TrainResult:
    """``train_run`` with ``[train] curriculum``: each stage, then the config's own action (curriculum.py).

    Every stage is a run directory of its own under ``out_dir/curriculum``, initialised from the
    previous one (the first from ``init_from``, if given); all stages' actions and the model's
    lattice transfer are checked before anything trains. Returns the final stage's TrainResult.
    """
    stages = parse_curriculum(resolved_config)
    config = dict(resolved_config)
    out = Path(out_dir)
    for i, stage in enumerate(stages):  # fail fast: every stage's action must build
        try:
            build_action(stage.action, registry)
        except LattgenError as exc:
            raise ConfigError(f"train.curriculum[{i}]: {exc}") from None
    seed = (config.get("run") or {}).get("seed", 0)
    model = seeded_model(config["model"], build_action(config["action"], registry), seed, registry)
    if not model.fully_convolutional:
        raise ConfigError(f"train.curriculum: model {config['model'].get('name')!r} has weights tied to one "
                          "lattice (dense conditioner or per-momentum spectrum); it cannot move between sizes")
    record: list[dict[str, Any]] = []
    previous = init_from
    for stage in stages:
        stage_config = {**config, "action": stage.action,
                        "train": stage_train_section(config["train"], stage.fraction)}
        stage_dir = out / CURRICULUM_DIR / stage.name
        result = train_run(stage_config, stage_dir, registry=registry, progress=progress,
                           resume=resume, init_from=previous)
        record.append(_stage_record(str(Path(CURRICULUM_DIR) / stage.name), stage.action, result))
        previous = stage_dir
    spent_s = sum(r["elapsed_s"] for r in record)
    spent_steps = sum(r["steps"] for r in record)
    final = _train_single(config, out, registry=registry, progress=progress, resume=resume,
                          init_from=previous, budget=final_train_section(config["train"], spent_s, spent_steps))
    record.append(_stage_record(".", config["action"], final))
    if distributed.is_main():
        write_record(out, record)
    return final


def _stage_record(directory: str, action: Mapping[str, Any], result: TrainResult) -> dict[str, Any]:
    """One entry of curriculum.json: where the stage trained, on what, for how long, how well."""
    return {"dir": directory, "lattice": action.get("lattice"), "action": dict(action),
            "steps": result.step, "elapsed_s": result.elapsed_s, "metrics": result.metrics}


def with_legacy_values(raw: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """A recorded config with the model's ``legacy`` values filled in where it lacks the key: the
    run directory was trained before that parameter existed (its resolved config lists every
    parameter of its time), so it is read as the model it was, not with today's default."""
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return raw
    try:
        spec = registry.get("model", model["name"])
    except LattgenError:
        return raw  # resolve_config says what is wrong
    missing = {p.name: p.legacy for p in spec.params if p.legacy is not None and p.name not in model}
    return dict(raw, model={**model, **missing}) if missing else raw


def load_trained(run_dir: str | Path, registry: Registry | None = None) -> tuple[dict[str, Any], Action, GenerativeModel]:
    """(resolved config, action, model with the trained weights) of a finished run directory.

    The model is on the CPU in its training dtype, in eval mode. A missing directory, a
    directory without config.toml or model.pt (training not finished), or weights that do not
    fit the configured model raise RunDirError saying what to do.
    """
    reg = registry or get_registry()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{str(run_dir)!r} is not a run directory; create one with "
                          f"`lattgen train CONFIG.toml --out {run_dir}`")
    recover(run_dir)  # a commit a killed process left half done
    cfg_path = run_dir / CONFIG
    if not cfg_path.is_file():
        raise RunDirError(f"{run_dir} has no {CONFIG}: not a lattgen training run directory")
    weights = run_dir / MODEL
    if not weights.is_file():
        if (run_dir / CHECKPOINT).is_file():
            step = load_checkpoint(run_dir / CHECKPOINT)["step"]
            raise RunDirError(
                f"training in {run_dir} has not finished (checkpoint at step {step}, no {MODEL}); "
                f"resume it with `lattgen train {cfg_path} --out {run_dir}`"
            )
        raise RunDirError(f"{run_dir} has no trained model ({MODEL}); train it with "
                          f"`lattgen train {cfg_path} --out {run_dir}`")
    try:
        config = resolve_config(with_legacy_values(load_toml(cfg_path), reg), reg, require=("action", "model"))
    except LattgenError as exc:
        raise RunDirError(f"{cfg_path}: {exc}") from None
    action = build_action(config["action"], reg)
    model = seeded_model(config["model"], action, config["run"]["seed"], reg)
    model.to(dtype=DTYPES[config["train"]["dtype"]])
    state = safe_load(weights, advice="retrain into a new directory")
    try:
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - state_dict errors of many types
        raise RunDirError(f"{weights} does not fit the model of {cfg_path} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0]}); retrain into a new "
                          "directory") from None
    model.eval()
    return config, action, model


def training_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics.jsonl records of a run directory (empty if none)."""
    from .train import read_metrics

    return read_metrics(Path(run_dir) / METRICS)
