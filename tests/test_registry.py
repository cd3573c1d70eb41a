"""Registry: duplicate names are errors naming both plugins; broken plugins are warnings."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest

from lattgen.errors import PluginError, UnknownComponentError
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
    with pytest.raises(PluginError) as exc:
        Registry([("first", GaussPlugin()), ("second", DuplicatePlugin())], entry_points=False)
    assert "first" in str(exc.value) and "second" in str(exc.value) and "gauss" in str(exc.value)


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
