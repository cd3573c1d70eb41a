"""Generate docs/configuration.md from the registry: `python -m lattgen.docgen > docs/configuration.md`."""

from __future__ import annotations

HEADER = """# Configuration reference

Generated from the registry by `python -m lattgen.docgen` (the same text as
`lattgen list --markdown`, for the built-in plugins); `tests/test_docs.py` checks it is current.

A run config has the sections `[action]` (`name`, `lattice` and the action's keys), `[model]`
(`name` and the model's keys), `[train]`, `[sampler]` (`name` and the sampler's keys) and
`[run]`. `lattgen compare` takes `[action]`, `[compare]` and `[[entries]]`
(see docs/compare.md); `lattgen scale` adds `[scale]`. Every key can be overridden on the
command line: `--set section.key=value` (values in TOML syntax: `0.5`, `[8, 8]`, `true`, `"x"`).

"""


def configuration_reference() -> str:
    """The Markdown reference of the built-in plugins' components and the generic sections."""
    from .compare_config import COMPARE_PARAMS
    from .listing import _param_table, listing_markdown
    from .registry import Registry, _load_entry_points
    from .scaling import SCALE_PARAMS
    from .scan import SCAN_PARAMS

    # built-in: the plugins lattgen's own distribution registers (third-party ones are left out)
    failed: dict[str, str] = {}
    plugins = [(n, p) for n, p, builtin in _load_entry_points(failed) if builtin]
    reg = Registry(plugins, entry_points=False)
    extra = ["## `[compare]`: `lattgen compare`\n", *_param_table(COMPARE_PARAMS),
             "## `[scale]`: `lattgen scale`\n", *_param_table(SCALE_PARAMS),
             "## `[scan]`: `lattgen scan`\n",
             ("Besides these keys, every key naming a coupling of the action (`lattgen list`: "
              "coupling) is scanned: a list of values or `{start, stop, num}` (docs/scan.md).\n"),
             *_param_table(SCAN_PARAMS)]
    return HEADER + listing_markdown(reg) + "\n" + "\n".join(extra)


if __name__ == "__main__":
    print(configuration_reference(), end="")
