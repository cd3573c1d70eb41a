"""Registry: a third-party plugin's faults are warnings and never disable the rest; a name two
third-party plugins register is refused where it is asked for; a built-in's faults are errors."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

import lattgen.registry as registry_module
from lattgen import Lattice, hookimpl
from lattgen.config import resolve_config
from lattgen.errors import PluginError, UnknownComponentError
from lattgen.listing import listing_dict
from lattgen.registry import PluginWarning, Registry

from fake_plugins import BrokenPlugin, DuplicatePlugin, GaussPlugin


def test_registers_and_builds():
    reg = Registry([("fake", GaussPlugin())], entry_points=False)
    assert reg.names("action") == ["gauss"]
    spec = reg.get("action", "gauss")
    assert spec.plugin == "fake"
    from lattgen import Lattice

    act = spec.build(Lattice([4, 4]), params={"m2": 2.0})
    assert act.m2 == 2.0


def test_duplicate_name_names_both_plugins():
    """Two third-party plugins, one name: a warning at load, a PluginError naming both where the
    name is asked for, and everything else keeps working."""
    with pytest.warns(PluginWarning, match="'gauss' is registered by plugin 'first' and by plugin 'second'"):
        reg = Registry([("first", GaussPlugin()), ("second", DuplicatePlugin())], entry_points=False)
    with pytest.raises(PluginError) as exc:
        reg.get("action", "gauss")
    assert "first" in str(exc.value) and "second" in str(exc.value) and "gauss" in str(exc.value)
    with pytest.raises(PluginError, match="registered twice"):  # through a config, not "unknown"
        resolve_config({"action": {"name": "gauss", "lattice": [4, 4]}}, reg)
    assert "gauss" not in reg.names("action") and reg.names("sampler") == ["exact", "hmc"]


def test_third_party_plugin_cannot_take_a_builtin_name(registry):
    """GaussPlugin registers a sampler "hmc", a built-in's name: the built-in stays, the warning
    names the plugin, the plugin's other components work."""
    with pytest.warns(PluginWarning, match="plugin 'thirdparty' registers sampler 'hmc'.*built-in"):
        reg = Registry([("thirdparty", GaussPlugin())])
    assert reg.get("sampler", "hmc").plugin == "classical"
    assert reg.get("sampler", "exact").plugin == "thirdparty" and "gauss" in reg.names("action")
    assert set(registry.names("model")) <= set(reg.names("model"))
    assert listing_dict(reg)["samplers"]  # `lattgen list` still works


def test_a_builtin_that_fails_to_load_is_an_error(monkeypatch):
    bad = importlib.metadata.EntryPoint("flows", "no_such_module_lattgen_xyz", "lattgen")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [bad])
    monkeypatch.setattr(registry_module, "_is_builtin", lambda ep: True)
    with pytest.raises(PluginError, match="built-in plugin 'flows'.*failed to import.*reinstall"):
        Registry()


def test_a_builtin_whose_hook_raises_is_an_error(monkeypatch):
    good = importlib.metadata.EntryPoint("brokenbuiltin", "fake_plugins_broken_mod", "lattgen")
    mod = types.ModuleType("fake_plugins_broken_mod")
    mod.lattgen_register_actions = BrokenPlugin().lattgen_register_actions
    monkeypatch.setitem(sys.modules, "fake_plugins_broken_mod", mod)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [good])
    monkeypatch.setattr(registry_module, "_is_builtin", lambda ep: True)
    with pytest.raises(PluginError, match="built-in plugin 'brokenbuiltin' failed to load.*boom"):
        Registry()


def test_a_factory_that_raises_is_a_plugin_error_naming_plugin_and_component():
    class RaisingPlugin:
        @hookimpl
        def lattgen_register_actions(self, register):
            def factory(lattice):
                raise IndexError("list index out of range\nsecond line")
            register("raiser", factory)

    reg = Registry([("raisingplugin", RaisingPlugin())], entry_points=False)
    with pytest.raises(PluginError) as exc:
        reg.get("action", "raiser").build(Lattice([4, 4]), where="action")
    message = str(exc.value)
    assert "'raisingplugin'" in message and "action 'raiser'" in message and "IndexError" in message
    assert "\n" not in message


def test_failing_hook_is_a_warning_and_rest_works():
    with pytest.warns(PluginWarning, match="broken"):
        reg = Registry([("broken", BrokenPlugin()), ("fake", GaussPlugin())], entry_points=False)
    assert reg.names("action") == ["gauss"]
    assert "broken" in reg.failed


def test_failing_import_is_a_warning(monkeypatch):
    good = importlib.metadata.EntryPoint("goodone", "fake_plugins_good_mod", "lattgen")
    bad = importlib.metadata.EntryPoint("badone", "no_such_module_lattgen_xyz", "lattgen")
    mod = types.ModuleType("fake_plugins_good_mod")
    plugin = GaussPlugin()
    mod.lattgen_register_actions = plugin.lattgen_register_actions
    monkeypatch.setitem(sys.modules, "fake_plugins_good_mod", mod)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [bad, good])
    with pytest.warns(PluginWarning, match="badone"):
        reg = Registry()
    assert reg.names("action") == ["gauss"]
    assert "badone" in reg.failed


def test_unknown_component_lists_available():
    reg = Registry([("fake", GaussPlugin())], entry_points=False)
    with pytest.raises(UnknownComponentError, match="available: gauss"):
        reg.get("action", "nope")


def test_builtin_plugins_come_through_entry_points(registry):
    for name in ("phi4", "classical", "observables", "flows", "imh"):
        assert name in registry.plugin_names()
    assert not registry.failed


def test_two_builtins_registering_one_name_is_an_error(monkeypatch):
    mods = []
    for name in ("builtin_a", "builtin_b"):
        mod = types.ModuleType(f"fake_plugins_{name}")
        mod.lattgen_register_actions = DuplicatePlugin().lattgen_register_actions
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        mods.append(importlib.metadata.EntryPoint(name, mod.__name__, "lattgen"))
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: mods)
    monkeypatch.setattr(registry_module, "_is_builtin", lambda ep: True)
    with pytest.raises(PluginError, match="built-in plugin 'builtin_.' and by built-in plugin 'builtin_.'"):
        Registry()


class _FieldObservables:
    """Registers observable ``charge`` for the manifold ``field`` (and ``only_<field>``)."""

    def __init__(self, field):
        self.field = field

    @hookimpl
    def lattgen_register_observables(self, register):
        register("charge", lambda lattice: self.field, field=self.field)
        register(f"only_{self.field}", lambda lattice: self.field, field=self.field)


def test_one_observable_name_for_each_manifold():
    """Observable names are scoped by manifold: two plugins may both register ``charge`` for
    their own field; it is resolved by the field asked for, and only a clash on one field is refused."""
    reg = Registry([("a", _FieldObservables("circle")), ("b", _FieldObservables("sphere"))], entry_points=False)
    assert reg.names("observable") == ["charge", "only_circle", "only_sphere"]
    assert reg.get("observable", "charge", field="circle").plugin == "a"
    assert reg.get("observable", "charge", field="sphere").build(Lattice([2])) == "sphere"
    assert reg.get("observable", "only_sphere").plugin == "b"  # one field: no need to say which
    assert reg.for_field_name("observable", "circle") == ["charge", "only_circle"]
    with pytest.raises(PluginError, match="several fields"):
        reg.get("observable", "charge")
    with pytest.raises(UnknownComponentError, match="not for 'real'"):
        reg.get("observable", "charge", field="real")
    from lattgen.build import build_observables

    built = build_observables(Lattice([2]), None, reg, field="sphere")
    assert built == {"charge": "sphere", "only_sphere": "sphere"}
    assert len([s for s in reg.specs("observable") if s.name == "charge"]) == 2  # `lattgen list` shows both
    with pytest.warns(PluginWarning, match=r"observable 'charge' \(field 'circle'\) is registered by plugin 'a'"), \
            pytest.warns(PluginWarning, match="only_circle"):
        clash = Registry([("a", _FieldObservables("circle")), ("c", _FieldObservables("circle"))],
                         entry_points=False)
    with pytest.raises(PluginError, match="registered twice"):
        clash.get("observable", "charge", field="circle")
