"""Curriculum training: train at small lattices first, then transfer the weights up (L -> 2L -> 4L).

``[train] curriculum`` is a list of stages run before the config's own [action], each a table of
[action] overrides plus the fraction of the budget it gets, for example along phi^4's xi = L/4 line
(docs/physics.md#reference-points):

    [[train.curriculum]]
    lattice = [8, 8]
    beta = 0.577
    fraction = 0.25

Stage k trains into ``RUN_DIR/curriculum/stage<k>`` with ``fraction`` of ``max_time_s`` and of
``max_steps`` (its own cosine schedule), starting from the previous stage's weights; the final
stage (the config's [action]) starts from the last one's and gets what is left of the budget,
so the whole curriculum costs one budget. A fully convolutional model (every flow here) holds no
lattice-shaped weights, so its state_dict loads at any L (``rundir.initialise_from``). The
stages' directories and training times are recorded in ``RUN_DIR/curriculum.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

CURRICULUM_DIR = "curriculum"
CURRICULUM_RECORD = "curriculum.json"


@dataclass
class Stage:
    """One curriculum stage: its [action] section, share of the budget, and run directory name."""

    action: dict[str, Any]
    fraction: float
    name: str


def parse_curriculum(config: Mapping[str, Any]) -> list[Stage]:
    """The stages of ``config['train']['curriculum']`` (empty when unset), validated.

    Each entry must be a table with ``fraction`` in (0, 1) and at least one [action] key to
    change; the fractions must leave a positive share for the final stage. Action keys are
    checked when the stages' actions are built (``lattgen.build.build_action``).
    """
    raw = (config.get("train") or {}).get("curriculum")
    if raw is None:
        return []
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError("train.curriculum: expected a non-empty list of tables "
                          "(for example [[train.curriculum]] with lattice = [8, 8], beta = 0.577, fraction = 0.25)")
    stages = []
    for i, entry in enumerate(raw):
        where = f"train.curriculum[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a table of [action] overrides and a fraction, got {entry!r}")
        fraction = entry.get("fraction")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"{where}.fraction: expected a number in (0, 1) (its share of the budget), "
                              f"got {fraction!r}")
        overrides = {k: v for k, v in entry.items() if k != "fraction"}
        if not overrides:
            raise ConfigError(f"{where}: no [action] key to change (for example lattice = [8, 8], beta = 0.577)")
        if "name" in overrides and overrides["name"] != config["action"].get("name"):
            raise ConfigError(f"{where}.name: a curriculum keeps the action ({config['action'].get('name')!r}); "
                              "change its parameters only")
        action = {**config["action"], **overrides}
        stages.append(Stage(action, float(fraction), f"stage{i}"))
    total = sum(s.fraction for s in stages)
    if total >= 1:
        raise ConfigError(f"train.curriculum: the fractions add up to {total:g}; they must leave a share "
                          "(1 - sum) for the final stage, the config's own [action]")
    return stages


def stage_train_section(train: Mapping[str, Any], fraction: float) -> dict[str, Any]:
    """[train] of one stage: ``fraction`` of each budget, no nested curriculum."""
    out = {k: v for k, v in train.items() if k != "curriculum"}
    if out.get("max_time_s") is not None:
        out["max_time_s"] = float(out["max_time_s"]) * fraction
    if out.get("max_steps") is not None:
        out["max_steps"] = max(1, math.floor(out["max_steps"] * fraction))
    return out


def final_train_section(train: Mapping[str, Any], spent_s: float, spent_steps: int) -> dict[str, Any]:
    """[train] of the final stage: whatever the stages left of each budget (at least 1 step / a moment)."""
    out = {k: v for k, v in train.items() if k != "curriculum"}
    if out.get("max_time_s") is not None:
        out["max_time_s"] = max(float(out["max_time_s"]) - spent_s, 1e-3)
    if out.get("max_steps") is not None:
        out["max_steps"] = max(1, int(out["max_steps"]) - spent_steps)
    return out


def write_record(out: Path, stages: list[dict[str, Any]]) -> None:
    """RUN_DIR/curriculum.json: per stage its directory, lattice, steps and training seconds."""
    (out / CURRICULUM_RECORD).write_text(json.dumps({"stages": stages}, indent=2) + "\n")


def read_record(run_dir: str | Path) -> list[dict[str, Any]]:
    """The stages recorded in RUN_DIR/curriculum.json (empty when the run had no curriculum)."""
    path = Path(run_dir) / CURRICULUM_RECORD
    if not path.is_file():
        return []
    return json.loads(path.read_text())["stages"]
