"""The plugin API: built-in plugins import only lattgen's public names, and the core names no theory."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import lattgen

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_FILES = sorted((ROOT / "plugins").glob("*/**/*.py"))


def lattgen_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of lattgen that is not ``from lattgen import <public>``."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bad += [(node.lineno, f"import {a.name}") for a in node.names
                    if a.name == "lattgen" or a.name.startswith("lattgen.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("lattgen."):
                bad.append((node.lineno, f"from {node.module} import ..."))
            elif node.module == "lattgen":
                bad += [(node.lineno, f"from lattgen import {a.name}") for a in node.names
                        if a.name not in lattgen.__all__]
    return bad


def test_plugins_found():
    assert len(PLUGIN_FILES) > 20
    assert {p.parts[len(ROOT.parts) + 1] for p in PLUGIN_FILES} >= {
        "lattgen_phi4", "lattgen_classical", "lattgen_observables", "lattgen_flows", "lattgen_imh",
        "lattgen_generative"}


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT / "plugins")))
def test_builtin_plugin_imports_only_public_names(path):
    assert lattgen_imports(path) == [], f"{path}: private lattgen imports"


def test_the_import_walker_catches_private_imports(tmp_path):
    src = tmp_path / "p.py"
    src.write_text("from lattgen.registry import get_registry\nimport lattgen.train\n"
                   "from lattgen import Action, get_registry\ndef f():\n    from lattgen.sample import x\n")
    found = [what for _, what in lattgen_imports(src)]
    assert sorted(found) == sorted(["from lattgen.registry import ...", "import lattgen.train",
                                    "from lattgen import get_registry", "from lattgen.sample import ..."])


def test_every_public_name_exists():
    for name in lattgen.__all__:
        assert hasattr(lattgen, name), name


THEORY_WORDS = re.compile(r"phi4|phi\^4|susceptibility|magnetisation|\bbeta\b|\blam\b", re.IGNORECASE)


def test_core_names_no_theory_outside_examples():
    """A theory name in the core (lattgen/) only where the text says 'for example' (on that line
    or within the five before it: an example block in a docstring)."""
    offending = []
    for path in sorted((ROOT / "lattgen").glob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if THEORY_WORDS.search(line):
                context = " ".join(" ".join(lines[max(0, i - 5):i + 1]).split()).lower()
                if "for example" not in context and "such as" not in context:
                    offending.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert offending == []


#: the core's layers, from the bottom (docs/architecture.md): a module imports only from its own
#: layer and the ones before it (``__init__``, the package facade, may import anything)
LAYERS = (
    ("errors", "params", "lattice", "field", "theory", "action", "model", "observable", "sampler",
     "hookspecs", "rng", "fourier", "distributed", "memory", "outdir", "conditional"),
    ("registry", "config", "build", "listing"),
    ("analysis", "numerics", "reweight", "sample", "jsonio", "metadata", "ensemble", "reanalysis", "export"),
    ("train", "objectives", "evaluation", "checkpoints", "data_parallel", "training_data", "rundir",
     "curriculum"),
    ("compare_config", "harness", "entry_pool", "consistency", "scaling", "scan", "report", "plots", "docgen",
     "cli", "__main__", "api"),
)


def test_core_modules_are_layered():
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    modules = sorted(p.stem for p in (ROOT / "lattgen").glob("*.py") if p.stem != "__init__")
    assert [m for m in modules if m not in level] == [], "a new core module: put it into a layer"
    upward = []
    for m in modules:
        tree = ast.parse((ROOT / "lattgen" / f"{m}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                upward += [f"{m} -> {t}" for t in targets if t in level and level[t] > level[m]]
    assert upward == []
