"""pluggy hook specifications of lattgen (callback style: each hook receives ``register``).

A plugin is a module (or object) with functions decorated by ``lattgen.hookimpl`` and named
like the specs below, exposed through the ``lattgen`` entry-point group in its packaging::

    [project.entry-points.lattgen]
    myplugin = "my_package.plugin"

``register(name, factory, params=(), doc="", **meta)`` adds one component; ``factory`` is
called with the validated parameters as keyword arguments (see each hook for the context).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lattgen")
hookimpl = pluggy.HookimplMarker("lattgen")


@hookspec
def lattgen_register_actions(register):
    """Register actions: ``factory(lattice: Lattice, **params) -> Action``."""


@hookspec
def lattgen_register_models(register):
    """Register generative models: ``factory(action: Action, **params) -> GenerativeModel``."""


@hookspec
def lattgen_register_layers(register):
    """Register flow layers: ``factory(lattice: Lattice, **params) -> Bijection``.

    Every registered layer is picked up by the Hypothesis property tests automatically.
    """


@hookspec
def lattgen_register_samplers(register):
    """Register samplers: ``factory(action, *, n_chains, device, generator, model, **params)``."""


@hookspec
def lattgen_register_observables(register):
    """Register observables: ``factory(lattice: Lattice) -> Observable``."""


@hookspec
def lattgen_register_commands(cli):
    """Add sub-commands to the ``lattgen`` click group ``cli``."""
