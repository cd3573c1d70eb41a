"""Shared test fixtures: a small stand-alone registry, deterministic torch settings."""

from __future__ import annotations

import os

# Idle OpenMP threads busy-wait by default; on a loaded 2-core machine they starve the main
# thread (HMC steps measured 25-500x slower). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from hypothesis import settings

# Two cores on CI: keep torch from oversubscribing when pytest runs alongside other work.
torch.set_num_threads(int(os.environ.get("LATTGEN_TEST_THREADS", "2")))

# Derandomized by default: the same examples on every machine and every run, so a failure is
# reproducible anywhere. LATTGEN_HYPOTHESIS=explore draws fresh random examples (to hunt bugs).
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("explore", deadline=None, max_examples=25)
settings.load_profile("explore" if os.environ.get("LATTGEN_HYPOTHESIS") == "explore" else "ci")


@pytest.fixture
def registry():
    """The registry of installed plugins (built-ins through entry points)."""
    from lattgen.registry import get_registry

    return get_registry()


@pytest.fixture
def one_thread():
    """Small tensors: one torch thread is several times faster than two on a shared 2-core
    machine (tiny ops only add synchronisation). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
