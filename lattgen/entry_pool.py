"""Entries of a comparison in parallel worker processes (spawned; progress through a queue)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _worker(args):
    """One entry in a worker process (``harness.run_entry``), its progress sent through the queue."""
    from .harness import run_entry

    entry, action, compare, out, queue = args

    def progress(label, phase, done, total):
        queue.put((label, phase, done, total))

    return entry["label"], run_entry(entry, action, compare, out, progress=progress)


def run_parallel(todo, action, compare, out: Path, workers: int, progress) -> dict[str, dict[str, Any]]:
    """Run the entries ``todo`` in ``workers`` spawned processes; results by label."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # idle OpenMP threads busy-wait by default and starve the other worker on a small machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    q = manager.Queue()
    results: dict[str, dict[str, Any]] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        pending = {pool.submit(_worker, (e, action, compare, out / "entries" / e["label"], q)) for e in todo}
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(q, progress, queue_mod)
            for fut in finished:
                label, res = fut.result()
                results[label] = res
        _drain(q, progress, queue_mod)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        manager.shutdown()
    return results


def _drain(q, progress, queue_mod) -> None:
    while True:
        try:
            msg = q.get_nowait()
        except queue_mod.Empty:
            return
        if progress:
            progress(*msg)
