"""Shared test fixtures: a small stand-alone registry, deterministic torch settings."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# Two cores on CI: keep torch from oversubscribing when pytest runs alongside other work.
torch.set_num_threads(int(os.environ.get("LATTGEN_TEST_THREADS", "2")))

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def registry():
    """The registry of installed plugins (built-ins through entry points)."""
    from lattgen.registry import get_registry

    return get_registry()
