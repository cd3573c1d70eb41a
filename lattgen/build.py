"""Build actions, models, samplers and observables from a resolved config through the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .action import Action
from .field import DTYPES
from .lattice import Lattice
from .model import GenerativeModel
from .observable import Observable
from .registry import Registry, get_registry
from .rng import make_generator  # noqa: F401  (re-exported: lattgen.build.make_generator)
from .sampler import Sampler



def _registry(registry: Registry | None) -> Registry:
    return registry if registry is not None else get_registry()


def build_action(section: Mapping[str, Any], registry: Registry | None = None) -> Action:
    """Action from a resolved [action] section (name, lattice, params)."""
    reg = _registry(registry)
    params = {k: v for k, v in section.items() if k not in ("name", "lattice")}
    return reg.get("action", section["name"]).build(Lattice(section["lattice"]), params=params, where="action")


def build_model(section: Mapping[str, Any], action: Action, registry: Registry | None = None) -> GenerativeModel:
    """Generative model from a resolved [model] section, built for ``action``."""
    reg = _registry(registry)
    return reg.get("model", section["name"]).build(action, params=section, where="model")


def build_sampler(
    section: Mapping[str, Any],
    action: Action,
    *,
    run: Mapping[str, Any],
    generator: torch.Generator,
    model: GenerativeModel | None = None,
    registry: Registry | None = None,
) -> Sampler:
    """Sampler from a resolved [sampler] section; ``run`` gives device and dtype."""
    reg = _registry(registry)
    return reg.get("sampler", section["name"]).build(
        action,
        params=section,
        where="sampler",
        device=run["device"],
        dtype=DTYPES[run["dtype"]],
        generator=generator,
        model=model,
    )


def default_observables(action: Action, theory_observables: Sequence[str] | None,
                        registry: Registry | None = None) -> list[str]:
    """The observables measured when a run names none: the theory's list, else every observable
    registered for the action's field space (``register(..., field=...)``)."""
    reg = _registry(registry)
    if theory_observables is not None:
        return list(theory_observables)
    return reg.for_field("observable", action.field_space)


def build_observables(
    lattice: Lattice, names: Sequence[str] | None = None, registry: Registry | None = None,
    field: str | None = None,
) -> dict[str, Observable]:
    """The named observables for ``lattice`` (default: every one registered for ``field``, the
    action's ``field_space.manifold``, or for real fields when None); ``field`` also picks among
    observables of one name registered for several manifolds."""
    reg = _registry(registry)
    if names is None:
        names = reg.for_field_name("observable", field or "real")
    return {n: reg.get("observable", n, field=field).build(lattice, where=f"observable {n}") for n in names}
