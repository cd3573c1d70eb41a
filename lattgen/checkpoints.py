"""Run-directory files of training: checkpoints (atomic, safe to load) and the metrics log.

* ``checkpoint.pt``: model, optimizer and schedule state, step, elapsed training time, RNG states
  (loaded with ``torch.load(weights_only=True)``: tensors and plain containers only);
* ``model.pt``: the final model ``state_dict``;
* ``metrics.jsonl``: one JSON record per ``log_every`` steps (``lattgen.evaluation.evaluate``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import LattgenWarning, RunDirError
from .jsonio import to_jsonable
from .outdir import remove_stale_temporaries, temporary_name  # noqa: F401  (re-exported for train)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
#: checkpoint layout version (bump when the keys change)
CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over ``path``."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def why_unreadable(exc: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in a few words.

    Never torch's own text: it advises loading with ``weights_only=False``, which runs the
    file's code and must not be done with a file of unknown origin.
    """
    text = str(exc)
    if "Weights only load failed" in text or "Unsupported global" in text or "weights_only" in text:
        return ("it holds Python objects other than tensors and plain containers (not a file lattgen "
                "wrote); it was not loaded, and no code in it ran")
    if isinstance(exc, EOFError) or "central directory" in text or "PytorchStreamReader" in text \
            or "zip archive" in text or "unexpected EOF" in text or "truncated" in text:
        return "it is truncated or not a torch file (an interrupted copy or write?)"
    if isinstance(exc, OSError):
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    first = (text.strip().splitlines() or [""])[0][:160]
    return f"it cannot be loaded safely ({type(exc).__name__}: {first})"


def safe_load(path: Path, error: type[Exception] = RunDirError, advice: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is one line of ``error``
    naming the file and what is wrong with it (``why_unreadable``), then ``advice``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many unrelated types
        raise error(f"{path}: {why_unreadable(exc)}" + (f"; {advice}" if advice else "")) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by ``train`` (safe loading: tensors and plain containers only)."""
    ckpt = safe_load(path, advice="delete it to start training over")
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
    """The records of a metrics.jsonl (an empty list if there is none).

    A torn last line (the process was killed while appending it) is dropped with a warning; an
    unreadable line before it is a RunDirError naming the file and line.
    """
    if not path.is_file():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    records = []
    for k, (i, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if k == len(lines) - 1:
                warnings.warn(f"{path}: line {i} is incomplete (a write was interrupted); it is dropped",
                              LattgenWarning, stacklevel=2)
                break
            raise RunDirError(f"{path}: line {i} is not a JSON record; the file was damaged, delete "
                              "it (training metrics only) to go on")
        records.append(record)
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = temporary_name(path)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
