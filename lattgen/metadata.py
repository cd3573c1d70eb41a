"""Run metadata for reproducibility: package versions, device, threads, git revision, host, time.

Every run directory records ``metadata.json`` (``lattgen train`` / ``sample`` / ``compare`` /
``scale`` / ``analyse``) and every results.json carries the same record under ``metadata``, so a
number can be traced to the code and machine that made it. The git revision is recorded when
lattgen is imported from a git checkout (an editable install); ``dirty`` says whether tracked
files differed from that revision.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

#: the distributions whose versions every record lists (missing ones are recorded as None)
PACKAGES = ("lattgen", "torch", "numpy", "scipy", "normflows", "pluggy", "h5py")
METADATA = "metadata.json"


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, None if it is not installed."""
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_revision() -> dict[str, Any] | None:
    """{"commit", "dirty"} of the checkout lattgen is imported from; None if not a git checkout
    (an installed wheel) or git is unavailable. Cached: asked once per process."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():  # a directory, or a file in a git worktree
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty, "checkout": str(root)}


def device_description(device: str | None) -> dict[str, Any]:
    """The torch device a run used, with the accelerator's name where there is one."""
    import torch

    out: dict[str, Any] = {"device": str(device or "cpu")}
    try:
        dev = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        return out
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        out["name"] = torch.cuda.get_device_name(index)
        out["cuda"] = torch.version.cuda
    else:
        out["name"] = platform.processor() or platform.machine()
    return out


def run_metadata(device: str | None = None) -> dict[str, Any]:
    """The reproducibility record of a run on ``device`` (see the module docstring)."""
    import torch

    return {
        "packages": {name: package_version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        **device_description(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git": git_revision(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]) if sys.argv else None,
    }


def metadata_text(device: str | None = None) -> str:
    """``metadata.json``'s text (for ``outdir.write_together``)."""
    from .jsonio import json_text

    return json_text(run_metadata(device))
