"""pluggy hook specifications of lattgen (callback style: each hook receives ``register``).

A plugin is a module (or object) with functions decorated by ``lattgen.hookimpl`` and named
like the specs below, exposed through the ``lattgen`` entry-point group in its packaging::

    [project.entry-points.lattgen]
    myplugin = "my_package.plugin"

``register(name, factory, params=(), doc="", **meta)`` (``lattgen.registry.Register``) adds one
component; ``factory`` is called with the validated parameters as keyword arguments plus the
context each hook names; ``register.registry`` is the registry being built. The ``meta``
keywords the core reads: ``theory=`` (actions), ``field=`` (observables, models, layers),
``compare=`` (models), ``needs_model=`` (samplers); see ``lattgen.registry``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lattgen")
hookimpl = pluggy.HookimplMarker("lattgen")


@hookspec
def lattgen_register_actions(register):
    """Register actions: ``factory(lattice: Lattice, **params) -> Action``, with
    ``theory=Theory(...)`` for the theory's defaults (``lattgen.theory``)."""


@hookspec
def lattgen_register_models(register):
    """Register generative models: ``factory(action: Action, **params) -> GenerativeModel``, with
    ``field=`` the manifold they generate (default ``"real"``) and ``compare=False`` to leave a
    model out of the default comparison."""


@hookspec
def lattgen_register_layers(register):
    """Register flow layers: ``factory(lattice: Lattice, **params) -> Bijection``, with ``field=``
    the manifold they act on (default ``"real"``).

    Every registered layer is picked up by the Hypothesis property tests of its field.
    """


@hookspec
def lattgen_register_samplers(register):
    """Register samplers: ``factory(action, *, device, dtype, generator, model, **params) -> Sampler``.

    ``device`` (str), ``dtype`` (the run's float dtype), ``generator`` (the run's seeded
    torch.Generator on ``device``: every random draw comes from it) and ``model`` (a trained
    GenerativeModel or None) are passed by keyword; ``n_chains`` is one of ``params`` when the
    sampler declares it. ``needs_model=True`` marks samplers that take the model as their proposal.
    """


@hookspec
def lattgen_register_observables(register):
    """Register observables: ``factory(lattice: Lattice) -> Observable``, with ``field=`` the
    manifold of the configurations they measure (default ``"real"``)."""


@hookspec
def lattgen_register_commands(cli):
    """Add sub-commands to the ``lattgen`` click group ``cli``."""
