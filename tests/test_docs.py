"""The configuration reference in docs/ is generated from the registry and must be current."""

from __future__ import annotations

from pathlib import Path

from lattgen.docgen import configuration_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_reference_is_current():
    assert DOC.read_text() == configuration_reference(), (
        "docs/configuration.md is stale: regenerate with `python -m lattgen.docgen > docs/configuration.md`"
    )
