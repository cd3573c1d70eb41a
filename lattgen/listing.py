"""What `lattgen list` shows: every registered component with its parameters and plugin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .registry import KINDS, Registry


def _kinds(kinds: Sequence[str] | None) -> list[str]:
    return list(kinds) if kinds else list(KINDS)


def listing_dict(reg: Registry, kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """JSON-ready listing: {kind + 's': [component dicts]}, plus plugins that failed."""
    out: dict[str, Any] = {f"{k}s": [s.to_dict() for s in reg.specs(k)] for k in _kinds(kinds)}
    out["failed_plugins"] = dict(reg.failed)
    return out


def _param_line(p: dict) -> str:
    default = "required" if p["required"] else ("auto" if p["default"] is None else repr(p["default"]))
    extra = p.get("range") or ("one of " + ", ".join(map(str, p["choices"])) if p.get("choices") else "")
    return f"{p['name']} ({p['type']}, {default}{'; ' + extra if extra else ''})"


def print_listing(reg: Registry, kinds: Sequence[str] | None, console: Console) -> None:
    for kind in _kinds(kinds):
        table = Table(title=f"{kind}s", title_justify="left", show_lines=True)
        table.add_column("name", style="bold")
        table.add_column("plugin")
        table.add_column("description")
        table.add_column("parameters (type, default)")
        for spec in reg.specs(kind):
            d = spec.to_dict()
            table.add_row(spec.name, spec.plugin, spec.doc, "\n".join(_param_line(p) for p in d["params"]))
        console.print(table)
    for name, why in reg.failed.items():
        console.print(f"[yellow]plugin {name!r} not loaded:[/yellow] {why}")


def _param_table(params) -> list[str]:
    lines = ["| key | type | default | constraint | meaning |", "|---|---|---|---|---|"]
    for p in (p.to_dict() for p in params):
        default = "required" if p["required"] else ("auto" if p["default"] is None else f"`{p['default']!r}`")
        cons = p.get("range") or (", ".join(map(str, p["choices"])) if p.get("choices") else "")
        if p.get("coupling"):  # scannable, and what a conditional model conditions on
            cons = f"{cons}; coupling" if cons else "coupling"
        lines.append(f"| `{p['name']}` | {p['type']} | {default} | {cons} | {p['doc']} |")
    return lines + [""]


def listing_markdown(reg: Registry, kinds: Sequence[str] | None = None) -> str:
    """The configuration reference of every registered component, as Markdown."""
    from .config import RUN_PARAMS, TRAIN_PARAMS

    lines: list[str] = []
    if not kinds:
        lines += ["## `[run]`: sampling run\n", *_param_table(RUN_PARAMS)]
        lines += ["## `[train]`: training\n", *_param_table(TRAIN_PARAMS)]
    for kind in _kinds(kinds):
        lines.append(f"## {kind}s\n")
        for spec in reg.specs(kind):
            lines.append(f"### `{spec.name}` ({kind}, plugin `{spec.plugin}`)\n")
            if spec.doc:
                lines.append(spec.doc + "\n")
            if spec.params:
                lines += _param_table(spec.params)
    return "\n".join(lines)
