"""Run-directory files of training: checkpoints (atomic, safe to load) and the metrics log.

* ``checkpoint.pt``: model, optimizer and schedule state, step, elapsed training time, RNG states
  (loaded with ``torch.load(weights_only=True)``: tensors and plain containers only);
* ``model.pt``: the final model ``state_dict``;
* ``metrics.jsonl``: one JSON record per ``log_every`` steps (``lattgen.evaluation.evaluate``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import RunDirError
from .jsonio import to_jsonable

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
#: checkpoint layout version (bump when the keys change)
CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by ``train`` (safe loading: tensors and plain containers only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many unrelated types
        raise RunDirError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to start "
                          "training over") from None
    needed = {"format", "model", "optimizer", "step", "elapsed_s", "rng"}
    if not isinstance(ckpt, dict) or not needed <= set(ckpt):
        raise RunDirError(f"{path} is not a lattgen training checkpoint; delete it to start over")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise RunDirError(f"{path} has checkpoint format {ckpt['format']}, this lattgen writes "
                          f"{CHECKPOINT_FORMAT}; delete it to start over")
    return ckpt


# -- metrics --------------------------------------------------------------------------------------
def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record (NaN/inf as null) to metrics.jsonl."""
    with open(path, "a") as fh:
        fh.write(json.dumps(to_jsonable(dict(record))) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (an empty list if there is none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


