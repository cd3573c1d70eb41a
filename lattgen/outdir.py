"""Output directories: one run at a time, no silent overwrite, files replaced together or not at all.

* ``claim(out, command, force)`` is what the CLI does with ``--out``: create it (an OSError is a
  one-line RunDirError), take its lock ``.lattgen.lock`` (a second run into the same directory
  fails at once; the lock dies with its process, so kill -9 leaves none behind), finish an
  interrupted commit, delete stale temporaries, and refuse a directory that holds the output of
  another command, or of a ``sample`` (sampling does not resume), unless ``force``.
* ``write_together(directory, files)`` replaces several files as one change (config.toml with
  results.json): each is written to ``.NAME.tmp-PID`` and fsynced, then a journal
  ``.lattgen-commit.json`` is renamed into place (the commit point), then the renames; a crash
  before the journal leaves the old files, one after it is rolled forward by the next ``recover``.
* ``write_atomic``: one file through a temporary and a rename (never half a file).

The lock is taken on rank 0 only under torchrun (the others do not write); the Python API
(``train_run``, ``run_compare``) takes no lock. File locking is filelock's (flock on POSIX,
msvcrt on Windows), a dependency torch already has.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from . import distributed
from .errors import RunDirError

LOCK = ".lattgen.lock"
#: the command whose output a directory holds (written when it is claimed)
MARKER = ".lattgen-run"
JOURNAL = ".lattgen-commit.json"
#: commands whose output cannot be continued: a second run would only overwrite it
NOT_RESUMABLE = ("sample", "analyse")

_held: list = []  # locks taken by this process (released by ``release_all``)


# -- files ------------------------------------------------------------------------------------
def temporary_name(path: Path) -> Path:
    """``.NAME.tmp-PID`` beside ``path``: where a file is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_synced(path: Path, data: str | bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``path`` through a synced temporary file and a rename: all of it or nothing."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_together(directory: str | Path, files: Mapping[str, str | bytes]) -> None:
    """Replace the named files of ``directory`` as one change (see the module docstring)."""
    directory = Path(directory)
    tmps = {}
    try:
        for name, data in files.items():
            tmps[name] = temporary_name(directory / name)
            _write_synced(tmps[name], data)
        journal = {"pid": os.getpid(), "files": {name: tmp.name for name, tmp in tmps.items()}}
        write_atomic(directory / JOURNAL, json.dumps(journal))  # the commit point
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        raise
    _roll_forward(directory, journal)


def _roll_forward(directory: Path, journal: Mapping) -> None:
    for name, tmp in journal["files"].items():
        if (directory / tmp).is_file():
            os.replace(directory / tmp, directory / name)
    (directory / JOURNAL).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process, or cannot tell: assume it runs
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete ``.*.tmp-PID`` files of processes that no longer run (killed mid-write); the paths
    removed. Files of a running process, this one included, are kept."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(".*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def recover(directory: str | Path) -> None:
    """Finish a ``write_together`` its process did not (killed after the commit point), then
    delete stale temporaries. Safe to call on any directory, any number of times."""
    directory = Path(directory)
    journal_path = directory / JOURNAL
    if journal_path.is_file():
        try:
            journal = json.loads(journal_path.read_text())
            pid, files = int(journal["pid"]), dict(journal["files"])
        except (ValueError, KeyError, TypeError):
            raise RunDirError(f"{journal_path} is damaged; delete it (the files beside it are the "
                              "last complete ones)") from None
        if not _alive(pid) or pid == os.getpid():
            _roll_forward(directory, {"files": files})
    remove_stale_temporaries(directory)


# -- what a directory holds -------------------------------------------------------------------
def held_by(out: Path) -> str | None:
    """The command whose output ``out`` holds (its marker; for directories written before the
    marker, guessed from the files), or None for a directory without visible files."""
    if not any(not p.name.startswith(".") for p in out.iterdir()):
        return None  # nothing but lattgen's own hidden files: an interrupted run wrote nothing
    marker = out / MARKER
    if marker.is_file():
        return marker.read_text().strip() or None
    if any((out / n).exists() for n in ("checkpoint.pt", "model.pt", "curriculum")):
        return "train"
    if (out / "entries").is_dir():
        return "compare"
    if any(out.glob("*/entries")):
        return "scale"
    if (out / "results.json").is_file():
        return "sample"
    if (out / "config.toml").is_file():
        return "train"  # a training run killed before its first checkpoint
    return None


def refusal(out: Path, command: str) -> str | None:
    """Why ``command`` must not write into ``out`` without --force (None: it may)."""
    held = held_by(out)
    if held is None or (held == command and (command not in NOT_RESUMABLE
                                             or not (out / "results.json").is_file())):
        return None
    what = f"the results of an earlier `lattgen {held}`" if held == command else \
        f"the output of `lattgen {held}`"
    return (f"--out {str(out)!r} already holds {what}; choose another --out, or add --force to "
            "overwrite it")


# -- claiming a directory ---------------------------------------------------------------------
def _lock(out: Path):
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirError(f"--out {str(out)!r} is in use by another lattgen run (its lock "
                          f"{LOCK} is held); wait for it to finish or choose another --out") from None
    except OSError as exc:
        raise RunDirError(f"--out {str(out)!r}: cannot create its lock file ({exc.strerror})") from None
    _held.append(lock)
    return lock


def _claim_on_main(out: Path, command: str, force: bool) -> bool:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {str(out)!r} cannot be created: {exc.strerror or exc}") from None
    _lock(out)
    recover(out)
    reason = refusal(out, command)
    if reason is not None and not force:
        release_all()
        raise RunDirError(reason)
    try:
        write_atomic(out / MARKER, command + "\n")
    except OSError as exc:
        release_all()
        raise RunDirError(f"--out {str(out)!r} is not writable: {exc.strerror or exc}") from None
    return reason is not None  # True: --force overrides what is there


def claim(out: str | Path, command: str, force: bool = False) -> bool:
    """Create, lock and check the output directory of ``command`` (see the module docstring);
    True when ``force`` overrode a refusal (the caller starts over instead of resuming).
    Under torchrun rank 0 decides and every rank gets its answer (or its error)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {str(out)!r} exists and is not a directory")
    return bool(distributed.run_on_main(_claim_on_main, out, command, force))


def holds(out: str | Path) -> bool:
    """Whether this process holds the lock of ``out`` (a CLI command that claimed it, for example)."""
    path = os.path.abspath(Path(out) / LOCK)
    return any(os.path.abspath(lock.lock_file) == path for lock in _held)


def release(out: str | Path) -> None:
    """Release the lock of ``out`` if this process holds it (the Python API, after its command)."""
    path = os.path.abspath(Path(out) / LOCK)
    for lock in [lock for lock in _held if os.path.abspath(lock.lock_file) == path]:
        _held.remove(lock)
        lock.release()


def release_all() -> None:
    """Release every directory lock this process holds (at the end of a command)."""
    while _held:
        _held.pop().release()
