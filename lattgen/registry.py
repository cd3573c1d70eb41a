"""The plugin registry: loads built-in and third-party plugins from the ``lattgen`` entry points.

Registration keywords the core reads (``register(name, factory, params, doc, **meta)``):
``theory=Theory(...)`` on actions (``lattgen.theory``); ``field="<manifold>"`` on observables,
models and layers (the field space they work on, ``FieldSpace.manifold``; default ``"real"``);
``compare=False`` on models left out of the default comparison; ``needs_model=True`` on
samplers that take a generative model as their proposal (the default sampler of a trained model).

Built-ins go through the same entry-point group a third party uses. A name registered twice is
a ``PluginError`` naming both plugins; a plugin that fails to import (or whose hook raises)
is a warning naming it, and everything else keeps working.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownComponentError
from .field import FieldSpace
from .params import Param, validate_params
from .theory import Theory

ENTRY_POINT_GROUP = "lattgen"

#: kind -> hook name
KINDS = {
    "action": "lattgen_register_actions",
    "model": "lattgen_register_models",
    "layer": "lattgen_register_layers",
    "sampler": "lattgen_register_samplers",
    "observable": "lattgen_register_observables",
}


class Register(Protocol):
    """The ``register`` callable every registration hook receives.

    ``register(name, factory, params=(), doc="", **meta)`` adds one component (see the module
    docstring for the ``meta`` keywords the core reads); ``register.registry`` is the Registry
    being built, for factories that build other registered components (bind it, e.g. with
    ``functools.partial``: it is complete once every plugin has registered).
    """

    registry: Registry

    def __call__(self, name: str, factory: Callable[..., Any], params: Sequence[Param] = (), doc: str = "",
                 **meta: Any) -> None: ...


class PluginWarning(UserWarning):
    """A plugin could not be loaded or its hook failed; the rest of lattgen keeps working."""


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component: what builds it, what it takes, and who provides it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: tuple[Param, ...] = ()
    doc: str = ""
    plugin: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def validate(self, given: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Checked keyword arguments for the factory (defaults filled, ``name`` ignored)."""
        return validate_params(self.params, given, where or self.kind, ignore=("name",))

    def build(self, *args, params: Mapping[str, Any] | None = None, where: str | None = None, **context):
        """Validate ``params`` and call the factory with context positional/keyword arguments."""
        kwargs = self.validate(params or {}, where)
        built = self.factory(*args, **context, **kwargs)
        if self.kind == "action":
            built.name = self.name  # its theory's key (Registry.theory)
        return built

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "doc": self.doc,
            "params": [p.to_dict() for p in self.params],
            **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))},
        }


class Registry:
    """All registered components, by kind and name."""

    def __init__(self, plugins: Iterable[tuple[str, Any]] = (), entry_points: bool = True):
        self.pm = pluggy.PluginManager("lattgen")
        self.pm.add_hookspecs(hookspecs)
        self.failed: dict[str, str] = {}
        if entry_points:
            for name, plugin in _load_entry_points(self.failed):
                self._add_plugin(name, plugin)
        for name, plugin in plugins:
            self._add_plugin(name, plugin)
        self._specs: dict[str, dict[str, ComponentSpec]] = {k: {} for k in KINDS}
        for kind, hook in KINDS.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                self._call_register_hook(kind, impl)

    def _add_plugin(self, name: str, plugin: Any) -> None:
        if self.pm.has_plugin(name):
            return  # the same distribution seen twice (e.g. editable + regular install)
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation errors: bad hook signatures etc.
            self.failed[name] = str(exc)
            warnings.warn(f"lattgen plugin {name!r} was not loaded: {exc}", PluginWarning, stacklevel=3)

    def _call_register_hook(self, kind: str, impl) -> None:
        plugin_name = impl.plugin_name
        added: list[ComponentSpec] = []

        def register(name: str, factory: Callable[..., Any], params: Sequence[Param] = (), doc: str = "", **meta):
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin_name!r} registered a {kind} without a valid name")
            if not callable(factory):
                raise PluginError(f"plugin {plugin_name!r}: {kind} {name!r} factory is not callable")
            if "theory" in meta and not isinstance(meta["theory"], Theory):
                raise PluginError(f"plugin {plugin_name!r}: {kind} {name!r}: theory= must be a lattgen.Theory")
            if not doc:
                doc = (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
            added.append(ComponentSpec(kind, name, factory, tuple(params), doc, plugin_name, dict(meta)))

        register.registry = self  # type: ignore[attr-defined]
        try:
            impl.function(register)
        except Exception as exc:
            self.failed[plugin_name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"lattgen plugin {plugin_name!r} failed while registering {kind}s: {exc}",
                PluginWarning,
                stacklevel=3,
            )
            return
        for spec in added:
            other = self._specs[kind].get(spec.name)
            if other is not None:
                raise PluginError(
                    f"{kind} {spec.name!r} is registered twice: by plugin {other.plugin!r} "
                    f"and by plugin {spec.plugin!r}; uninstall or rename one of them"
                )
            self._specs[kind][spec.name] = spec

    # -- queries --------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._specs[kind])

    def specs(self, kind: str) -> list[ComponentSpec]:
        return [self._specs[kind][n] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> ComponentSpec:
        try:
            return self._specs[kind][name]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "(none registered)"
            raise UnknownComponentError(f"unknown {kind} {name!r}; available: {valid}") from None

    def theory(self, action: str) -> Theory:
        """The defaults an action declared at registration (an empty Theory if none)."""
        return self.get("action", action).meta.get("theory") or Theory()

    def default_action(self) -> dict[str, Any]:
        """The [action] section ``lattgen compare`` runs without a config: the action whose
        theory says ``default=True`` (its ``default_point``)."""
        for spec in self.specs("action"):
            theory = spec.meta.get("theory")
            if theory is not None and theory.default and theory.default_point is not None:
                return {"name": spec.name, **dict(theory.default_point)}
        raise UnknownComponentError("no installed plugin declares a default theory; give a config "
                                    "with an [action] section")

    def for_field(self, kind: str, space: FieldSpace) -> list[str]:
        """Names of the components of ``kind`` registered for ``space``'s manifold (``field=``)."""
        return [s.name for s in self.specs(kind) if s.meta.get("field", "real") == space.manifold]

    def model_samplers(self) -> list[str]:
        """Samplers that take a generative model as their proposal (``needs_model=True``)."""
        return [s.name for s in self.specs("sampler") if s.meta.get("needs_model", False)]

    def plugin_names(self) -> list[str]:
        return sorted(name for name, _ in self.pm.list_name_plugin())

    def add_commands(self, cli) -> None:
        """Let plugins add sub-commands to the click group."""
        for impl in self.pm.hook.lattgen_register_commands.get_hookimpls():
            try:
                impl.function(cli)
            except Exception as exc:
                warnings.warn(
                    f"lattgen plugin {impl.plugin_name!r} failed to add commands: {exc}",
                    PluginWarning,
                    stacklevel=2,
                )


def _load_entry_points(failed: dict[str, str]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            out.append((ep.name, ep.load()))
        except Exception as exc:
            failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"lattgen plugin {ep.name!r} ({ep.value}) failed to import and is skipped: "
                f"{type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=3,
            )
    return out


_DEFAULT: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry of installed plugins (built lazily, once)."""
    global _DEFAULT
    if _DEFAULT is None or refresh:
        _DEFAULT = Registry()
    return _DEFAULT
