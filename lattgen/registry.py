"""The plugin registry: loads built-in and third-party plugins from the ``lattgen`` entry points.

Registration keywords the core reads (``register(name, factory, params, doc, **meta)``):
``theory=Theory(...)`` on actions (``lattgen.theory``); ``field="<manifold>"`` on observables,
models and layers (the field space they work on, ``FieldSpace.manifold``; default ``"real"``);
``compare=False`` on models left out of the default comparison; ``needs_model=True`` on
samplers that take a generative model as their proposal (the default sampler of a trained model).

Observable names are per manifold (``PER_FIELD_KINDS``): two theories may each register a
``topological_charge`` for their own field space; a run resolves the name by its action's
``field_space.manifold`` (``get(kind, name, field=...)``). Every other kind has one global
namespace.

Built-ins go through the same entry-point group a third party uses (a built-in is an entry
point of the ``lattgen`` distribution itself). Faults of a third-party plugin never disable the
rest: one that fails to import, or whose hook raises, is a warning naming it; a name it
registers that a built-in owns keeps the built-in (a warning names the plugin); a name two
third-party plugins register is refused only when a config asks for it (``PluginError`` naming
both). A built-in that fails to load, or two built-ins registering one name, is a
``PluginError``: the installation is broken. A
factory that raises is a ``PluginError`` naming the plugin and the component.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy

from . import hookspecs
from .errors import LattgenError, LattgenWarning, PluginError, ResourceError, UnknownComponentError
from .field import FieldSpace
from .memory import is_out_of_memory
from .params import Param, validate_params
from .theory import Theory

ENTRY_POINT_GROUP = "lattgen"
#: the distribution whose entry points are the built-in plugins
BUILTIN_DISTRIBUTION = "lattgen"

#: kind -> hook name
KINDS = {
    "action": "lattgen_register_actions",
    "model": "lattgen_register_models",
    "layer": "lattgen_register_layers",
    "sampler": "lattgen_register_samplers",
    "observable": "lattgen_register_observables",
}


#: kinds whose names are scoped by the manifold they are registered for (``field=``)
PER_FIELD_KINDS = ("observable",)


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


class PluginWarning(LattgenWarning):
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
        try:
            built = self.factory(*args, **context, **kwargs)
        except LattgenError:
            raise  # already a clear message from the plugin
        except Exception as exc:  # a plugin's code may raise anything
            first = (str(exc).strip().splitlines() or [""])[0]
            if is_out_of_memory(exc):
                raise ResourceError(f"{where or self.kind}: building {self.kind} {self.name!r} ran out of "
                                    f"memory ({first}); use a smaller lattice or fewer chains / a "
                                    "smaller batch") from None
            raise PluginError(f"plugin {self.plugin or '?'!r}: building {self.kind} {self.name!r} failed: "
                              f"{type(exc).__name__}: {first}") from exc
        if self.kind == "action":
            built.name = self.name  # its theory's key (Registry.theory)
            built.coupling_params = self.couplings()
        return built

    def couplings(self) -> dict[str, Param]:
        """The continuous couplings among the parameters (``Param(coupling=True)``), by name."""
        return {p.name: p for p in self.params if p.coupling}

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
        #: plugins of the lattgen distribution itself (their faults are errors, their names win)
        self.builtin: set[str] = set()
        #: (kind, name) -> plugins that registered it, where no one of them could be chosen
        self.ambiguous: dict[tuple[str, str], list[str]] = {}
        if entry_points:
            for name, plugin, builtin in _load_entry_points(self.failed):
                self._add_plugin(name, plugin)
                if builtin:
                    self.builtin.add(name)
        for name, plugin in plugins:
            self._add_plugin(name, plugin)
        self._specs: dict[str, dict[str, ComponentSpec]] = {k: {} for k in KINDS}
        for kind, hook in KINDS.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                self._call_register_hook(kind, impl)
        broken = sorted(set(self.failed) & self.builtin)
        if broken:
            raise PluginError(
                f"built-in plugin {broken[0]!r} failed to load ({self.failed[broken[0]]}); the lattgen "
                "installation is broken: reinstall it (pip install -e .)"
            )

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
            if plugin_name in self.builtin:
                return  # an error once every plugin has registered (Registry.__init__)
            warnings.warn(
                f"lattgen plugin {plugin_name!r} failed while registering {kind}s: {exc}",
                PluginWarning,
                stacklevel=3,
            )
            return
        for spec in added:
            self._add_spec(spec)

    @staticmethod
    def _key(kind: str, name: str, field: str | None) -> Any:
        """Where a spec is stored: its name, or (name, field) for the kinds scoped by manifold."""
        return (name, field or "real") if kind in PER_FIELD_KINDS else name

    @staticmethod
    def _label(kind: str, key: Any) -> str:
        """How a stored name reads in messages: 'observable 'q' (field 'sphere')'."""
        if isinstance(key, tuple):
            return f"{kind} {key[0]!r} (field {key[1]!r})"
        return f"{kind} {key!r}"

    def _add_spec(self, spec: ComponentSpec) -> None:
        """Add a registration; a name taken already keeps its built-in owner or becomes ambiguous."""
        kind = spec.kind
        key = self._key(kind, spec.name, spec.meta.get("field"))
        what = self._label(kind, key)
        if (kind, key) in self.ambiguous:
            self.ambiguous[kind, key].append(spec.plugin)
            return
        other = self._specs[kind].get(key)
        if other is None:
            self._specs[kind][key] = spec
            return
        builtin = [p for p in (other.plugin, spec.plugin) if p in self.builtin]
        if len(builtin) == 2:  # two built-ins: lattgen itself is inconsistent
            raise PluginError(f"{what} is registered twice: by built-in plugin {other.plugin!r} "
                              f"and by built-in plugin {spec.plugin!r}; rename one of them")
        if len(builtin) == 1:  # a third-party plugin registers a name a built-in owns
            keep, drop = (other, spec) if other.plugin in builtin else (spec, other)
            self._specs[kind][key] = keep
            warnings.warn(f"plugin {drop.plugin!r} registers {what}, which built-in plugin "
                          f"{keep.plugin!r} provides; the built-in is kept (rename it in {drop.plugin!r})",
                          PluginWarning, stacklevel=4)
            return
        del self._specs[kind][key]  # two of a kind: no one to prefer, refused where it is asked for
        self.ambiguous[kind, key] = [other.plugin, spec.plugin]
        warnings.warn(f"{what} is registered by plugin {other.plugin!r} and by plugin "
                      f"{spec.plugin!r}; it cannot be used until one is uninstalled or renames it",
                      PluginWarning, stacklevel=4)

    # -- queries --------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted({k[0] if isinstance(k, tuple) else k for k in self._specs[kind]})

    def specs(self, kind: str) -> list[ComponentSpec]:
        return [self._specs[kind][k] for k in sorted(self._specs[kind])]

    def get(self, kind: str, name: str, field: str | None = None) -> ComponentSpec:
        """The spec of ``name``; for the kinds scoped by manifold (``PER_FIELD_KINDS``) the one
        registered for ``field`` (None: the only one of that name)."""
        if kind in PER_FIELD_KINDS:
            return self._get_for_field(kind, name, field)
        if (kind, name) in self.ambiguous:
            raise self._ambiguous_error(kind, name)
        try:
            return self._specs[kind][name]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "(none registered)"
            raise UnknownComponentError(f"unknown {kind} {name!r}; available: {valid}") from None

    def _ambiguous_error(self, kind: str, key: Any) -> PluginError:
        return PluginError(f"{self._label(kind, key)} is registered twice: by plugin "
                           + " and by plugin ".join(repr(p) for p in self.ambiguous[kind, key])
                           + "; uninstall or rename one of them")

    def _get_for_field(self, kind: str, name: str, field: str | None) -> ComponentSpec:
        keys = [k for k in (*self._specs[kind], *(k for kd, k in self.ambiguous if kd == kind))
                if k[0] == name and (field is None or k[1] == field)]
        if len(keys) == 1:
            if (kind, keys[0]) in self.ambiguous:
                raise self._ambiguous_error(kind, keys[0])
            return self._specs[kind][keys[0]]
        if len(keys) > 1:
            fields = ", ".join(sorted(k[1] for k in keys))
            raise PluginError(f"{kind} {name!r} is registered for several fields ({fields}); "
                              "ask for it with the action's field space (field=...)")
        others = sorted(k[1] for k in self._specs[kind] if k[0] == name)
        if others:
            raise UnknownComponentError(f"{kind} {name!r} is registered for field(s) {', '.join(others)}, "
                                        f"not for {field!r}; available for {field!r}: "
                                        + (", ".join(k[0] for k in sorted(self._specs[kind]) if k[1] == field)
                                           or "(none registered)"))
        valid = ", ".join(self.names(kind)) or "(none registered)"
        raise UnknownComponentError(f"unknown {kind} {name!r}; available: {valid}")

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
        return self.for_field_name(kind, space.manifold)

    def for_field_name(self, kind: str, manifold: str) -> list[str]:
        """Names of the components of ``kind`` registered for the manifold called ``manifold``."""
        return [s.name for s in self.specs(kind) if s.meta.get("field", "real") == manifold]

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


def _is_builtin(ep: importlib.metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and (dist.metadata["Name"] or "").lower() == BUILTIN_DISTRIBUTION


def _load_entry_points(failed: dict[str, str]) -> list[tuple[str, Any, bool]]:
    """(name, plugin module, built-in?) of every entry point that imports; failures go to ``failed``."""
    out: list[tuple[str, Any, bool]] = []
    seen: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        if _is_builtin(ep):
            try:
                out.append((ep.name, ep.load(), True))
            except Exception as exc:  # noqa: BLE001 - an import may raise anything
                raise PluginError(f"built-in plugin {ep.name!r} ({ep.value}) failed to import "
                                  f"({type(exc).__name__}: {exc}); the lattgen installation is broken: "
                                  "reinstall it (pip install -e .)") from None
            continue
        try:
            out.append((ep.name, ep.load(), False))
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
