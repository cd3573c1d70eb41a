"""docs/api.md runs as written: its python blocks, in order, in one namespace, in a temporary
directory (small sizes; each block's own asserts check what it claims)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_doc_has_examples_of_every_function():
    code = "\n".join(blocks())
    for name in ("load_config", "sample", "analyse", "export_pyerrors", "train", "compare"):
        assert f"api.{name}(" in code, name


def test_api_doc_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("pyerrors")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_doc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: windowing warnings; pyerrors' scipy.odr
        for i, code in enumerate(blocks()):
            exec(compile(code, f"{DOC}:block{i}", "exec"), namespace)
    assert (tmp_path / "runs" / "hmc" / "ensemble.h5").is_file()
    assert (tmp_path / "runs" / "compare" / "results.json").is_file()
