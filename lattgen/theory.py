"""Theory defaults: what the core asks an action's plugin instead of naming any theory itself.

An action is registered with a ``Theory`` (``register(name, factory, params, theory=Theory(...))``);
``Registry.theory(action_name)`` returns it (an empty ``Theory()`` for actions that declare none).
The compare harness, ``lattgen sample``'s default sampler, the tables, plots, the scaling study
and the training-data generator read their theory-specific choices from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScalingLine:
    """A line of constant physics for ``lattgen scale``: points (L, coupling value) at fixed others.

    ``coupling`` is the action parameter that each point's second number sets (e.g. a hopping
    parameter); ``base`` the other [action] parameters; ``source`` where the points come from.
    ``x_observable`` is the observable whose pooled value is the x axis of the tau_int fit
    (e.g. a correlation length: tau ~ xi^z); None puts the coupling on the x axis.
    """

    points: tuple[tuple[int, float], ...]
    coupling: str
    base: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    x_observable: str | None = None


@dataclass(frozen=True)
class Theory:
    """An action's defaults and headline quantities (every field optional).

    - ``default_point``: the [action] section (lattice and parameters, without ``name``) that
      ``lattgen compare`` uses when no config is given;
    - ``default``: this action is the built-in default of ``lattgen compare`` (one at most);
    - ``classical_samplers``: exact classical samplers compared against the generative models,
      the first one also the default of ``lattgen sample`` without a [sampler] section;
    - ``observables``: the observables measured by default (None: every one registered for the
      action's field space);
    - ``headline``: observables whose tau_int the compare table shows;
    - ``figure_of_merit``: the observable whose effective samples per second and time to a
      relative error rank the entries;
    - ``histogram``: the observable whose first primary is histogrammed per entry, and its label;
    - ``scaling``: the default line of constant physics of ``lattgen scale`` (None: none);
    - ``data_sampler`` / ``data_observable``: the exact sampler that makes training data for models
      that need data, and the observable (first primary) whose tau_int sets the spacing.
    """

    default_point: Mapping[str, Any] | None = None
    default: bool = False
    classical_samplers: tuple[str, ...] = ()
    observables: tuple[str, ...] | None = None
    headline: tuple[str, ...] = ()
    figure_of_merit: str | None = None
    histogram: str | None = None
    histogram_label: str = ""
    scaling: ScalingLine | None = None
    data_sampler: str | None = None
    data_observable: str | None = None

    @property
    def default_sampler(self) -> str | None:
        """The sampler of ``lattgen sample`` when the config names none."""
        return self.classical_samplers[0] if self.classical_samplers else None
