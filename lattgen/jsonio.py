"""JSON for results and metrics: numpy/torch values to plain Python, NaN/inf to null, atomic writes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .outdir import write_atomic


def to_python(obj: Any) -> Any:
    """numpy/torch scalars and arrays (recursively) as Python numbers and lists; NaN kept."""
    if isinstance(obj, Mapping):
        return {str(k): to_python(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_python(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_python(obj.tolist()) if obj.ndim else to_python(obj[()])
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def to_jsonable(obj: Any) -> Any:
    """``to_python`` with NaN and inf as None (JSON has no such numbers)."""
    obj = to_python(obj)
    if isinstance(obj, Mapping):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(data: Any, path: str | Path) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    write_atomic(path, json_text(data))


def json_text(data: Any) -> str:
    """The text ``write_json`` writes (for ``outdir.write_together``)."""
    return json.dumps(to_jsonable(data), indent=2) + "\n"


def read_finished(path: str | Path, cfg_hash: str) -> dict[str, Any] | None:
    """The results.json at ``path`` if it finished with this config hash (``config_hash``), else
    None (absent, torn or from another config): what a resumed compare, scale or scan skips."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return res if res.get("config_hash") == cfg_hash else None
