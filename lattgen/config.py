"""Typed run configuration: TOML files, dotted ``--set section.key=value`` overrides, validation.

``resolve_config`` checks every key against the registry's parameter declarations and fills
defaults, raising a ``ConfigError`` that names the dotted key and lists what is valid.
The resolved config is written back to the run directory as ``config.toml``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from .errors import ConfigError, LatticeError
from .lattice import Lattice
from .memory import check_fits
from .outdir import write_atomic
from .params import Param, reject_unknown, validate_params

#: Generic [run] parameters: how many configurations, seed and device.
RUN_PARAMS: tuple[Param, ...] = (
    Param("n_samples", "int", 20000, "measured configurations, all chains together", min=2),
    Param("n_therm", "int", None, "thermalisation steps per chain (tuning allowed only then); "
          "default max(100, steps/5)", min=0, nullable=True),
    Param("measure_every", "int", 1, "Markov steps between measurements", min=1),
    Param("seed", "int", 0, "seed of the run's torch.Generator", min=0),
    Param("device", "str", "cpu", "torch device: cpu, cuda or cuda:N"),
    Param("dtype", "str", "float64", "floating-point type of the sampled fields",
          choices=("float64", "float32")),
    Param("observables", "list[str]", None, "observables to measure (default: all registered)",
          nullable=True),
)

#: Generic [train] parameters of the reverse-KL trainer.
TRAIN_PARAMS: tuple[Param, ...] = (
    Param("max_steps", "int", None, "optimiser steps (budget); at least one of max_steps, "
          "max_time_s", min=1, nullable=True),
    Param("max_time_s", "float", None, "wall-time budget of training in seconds", min=0,
          min_exclusive=True, nullable=True),
    Param("batch_size", "int", 256, "configurations per optimiser step", min=1),
    Param("lr", "float", 1e-3, "Adam learning rate", min=0, min_exclusive=True),
    Param("schedule", "str", "cosine", "learning-rate schedule over the budget",
          choices=("cosine", "constant")),
    Param("grad_clip", "float", 1.0, "clip the gradient norm to this (0: no clipping)", min=0),
    Param("weight_decay", "float", 0.0, "Adam weight decay", min=0),
    Param("loss", "str", "reverse_kl", "training objective",
          choices=("reverse_kl", "forward_kl")),
    Param("data", "str", None, "for forward_kl: .pt file of configurations (batch, *lattice)",
          nullable=True),
    Param("log_every", "int", 50, "optimiser steps between metric records", min=1),
    Param("checkpoint_every", "int", 500, "optimiser steps between checkpoints", min=1),
    Param("checkpoint_every_s", "float", 60.0, "training seconds between checkpoints, beside "
          "checkpoint_every (a kill loses at most this much; 0: steps only)", min=0),
    Param("eval_batch", "int", 1024, "configurations for the ESS / acceptance estimate", min=2),
    Param("threads", "int", None, "torch intra-op threads (default: torch's choice)", min=1,
          nullable=True),
    Param("clock", "str", "wall", "what max_time_s and the metrics' time count: wall (elapsed seconds) or "
          "cpu (this process's CPU seconds, all its threads: budgets that do not shrink on a shared, "
          "loaded machine)", choices=("wall", "cpu")),
    Param("dtype", "str", "float32", "floating-point type of the model during training",
          choices=("float32", "float64")),
    Param("curriculum", "any", None, "stages trained first, each a table of [action] overrides and "
          "its budget fraction, for example [{lattice = [8, 8], beta = 0.577, fraction = 0.25}] "
          "(lattgen/curriculum.py)", nullable=True),
)

SECTIONS = ("action", "model", "sampler", "train", "run")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value (42, 0.5, true, [8, 8], "x"); else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``section.key=value`` overrides applied."""
    out = copy.deepcopy(dict(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, for example action.beta=0.5")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: key must be dotted, section.key (e.g. run.seed=3)")
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(text.strip())
    return out


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    sec = config.get(name, {})
    if not isinstance(sec, Mapping):
        raise ConfigError(f"{name}: must be a table ([{name}]), got {type(sec).__name__}")
    return dict(sec)


def _component(registry, kind: str, section: dict[str, Any], where: str, default: str | None = None):
    name = section.get("name", default)
    if name is None:
        valid = ", ".join(registry.names(kind)) or "(none)"
        raise ConfigError(f"{where}.name: required key is missing; choose one of: {valid}")
    if not isinstance(name, str) or (name not in registry.names(kind)
                                     and (kind, name) not in getattr(registry, "ambiguous", {})):
        valid = ", ".join(registry.names(kind)) or "(none)"
        raise ConfigError(f"{where}.name: unknown {kind} {name!r}; choose one of: {valid}")
    return registry.get(kind, name), name  # PluginError for a name two plugins register


def resolve_action(registry, section: Mapping[str, Any], where: str = "action") -> dict[str, Any]:
    section = dict(section)
    spec, name = _component(registry, "action", section, where)
    if "lattice" not in section:
        raise ConfigError(f"{where}.lattice: required key is missing (list of extents, e.g. [8, 8])")
    lat = Param("lattice", "list[int]", doc="lattice extents").validate(section.pop("lattice"), f"{where}.lattice")
    try:
        Lattice(lat)
    except LatticeError as exc:
        raise ConfigError(f"{where}.lattice: {exc}") from None
    check_fits(lat, where=f"{where}.lattice")  # before anything of that size is built
    params = spec.validate(section, where)
    return {"name": name, "lattice": lat, **params}


def resolve_component(registry, kind: str, section: Mapping[str, Any], where: str,
                      default: str | None = None) -> dict[str, Any]:
    spec, name = _component(registry, kind, dict(section), where, default)
    return {"name": name, **spec.validate(section, where)}


def resolve_config(config: Mapping[str, Any], registry=None, require: Iterable[str] = ("action",),
                   extra_sections: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a raw config against the registry; return it with every default filled in.

    ``require`` lists the sections that must be present (e.g. ``model`` for training).
    ``extra_sections`` maps further allowed section names to validators ``f(section) -> dict``.
    """
    if registry is None:
        from .registry import get_registry

        registry = get_registry()
    if not isinstance(config, Mapping):
        raise ConfigError("config must be a table of sections")
    extra = dict(extra_sections or {})
    valid = set(SECTIONS) | set(extra)
    reject_unknown(config, valid, what="section")
    for sec in require:
        if sec not in config:
            raise ConfigError(f"[{sec}]: required section is missing")
    out: dict[str, Any] = {}
    if "action" in config:
        out["action"] = resolve_action(registry, _section(config, "action"))
    if "model" in config:
        out["model"] = resolve_component(registry, "model", _section(config, "model"), "model")
    if "sampler" in config or "run" in config:
        default = registry.theory(out["action"]["name"]).default_sampler if "action" in out else None
        out["sampler"] = resolve_component(registry, "sampler", _section(config, "sampler"), "sampler",
                                           default=default)
    if "train" in config or "model" in config:
        out["train"] = resolve_train(_section(config, "train"))
    out["run"] = resolve_run(registry, _section(config, "run"))
    if "action" in out:
        check_config_fits(out)
    for name, validator in extra.items():
        if name in config:
            out[name] = validator(_section(config, name))
    return out


def check_config_fits(config: Mapping[str, Any]) -> None:
    """ResourceError (with the figure) if the sampler's chains or a training batch of the
    config's lattice cannot fit the run's device (``lattgen.memory``: a lower bound)."""
    lattice, device = config["action"]["lattice"], config["run"]["device"]
    if "sampler" in config:
        n = config["sampler"].get("n_chains", 1)
        n = n if isinstance(n, int) and n > 0 else 1
        check_fits(lattice, n, 8 if config["run"]["dtype"] == "float64" else 4, device=device,
                   what=f"the sampler's {n} chains", hint="use a smaller lattice or fewer sampler.n_chains")
    if "train" in config and "model" in config:
        n = config["train"]["batch_size"]
        check_fits(lattice, n, 8 if config["train"]["dtype"] == "float64" else 4, device=device,
                   what=f"a training batch of {n}", hint="use a smaller lattice or train.batch_size")


def resolve_train(section: Mapping[str, Any], where: str = "train") -> dict[str, Any]:
    """A [train] section checked against ``TRAIN_PARAMS`` with defaults filled; None values mean
    'the default'. The one validation of [train], for `lattgen train`, compare entries and
    ``lattgen.train.train``: a budget must be set; forward KL needs a data file."""
    cfg = validate_params(TRAIN_PARAMS, {k: v for k, v in section.items() if v is not None}, where)
    if cfg["max_steps"] is None and cfg["max_time_s"] is None:
        raise ConfigError(f"{where}.max_steps: set max_steps and/or max_time_s (the training budget)")
    if cfg["loss"] == "forward_kl" and not cfg["data"]:
        raise ConfigError(f'{where}.data: loss = "forward_kl" needs a .pt file of configurations '
                          "(a tensor of shape (N, *field shape))")
    return cfg


def resolve_run(registry, section: Mapping[str, Any]) -> dict[str, Any]:
    run = validate_params(RUN_PARAMS, section, "run")
    dev = run["device"]
    if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"run.device: {dev!r} is not valid; choose cpu, cuda or cuda:N")
    if run["observables"] is not None:
        known = registry.names("observable")
        for i, name in enumerate(run["observables"]):
            if name not in known:
                raise ConfigError(f"run.observables[{i}]: unknown observable {name!r}; "
                                  f"choose from: {', '.join(known)}")
    return run


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj]
    return obj


def dumps_toml(config: Mapping[str, Any]) -> str:
    """TOML text of a resolved config (None values, meaning 'automatic', are omitted)."""
    return tomli_w.dumps(_drop_none(config))


def write_toml(config: Mapping[str, Any], path: str | Path) -> None:
    """Write a resolved config atomically (temporary file + rename)."""
    write_atomic(path, dumps_toml(config))
