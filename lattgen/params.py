"""Typed parameter specifications: one declaration drives validation, `lattgen list` and docs.

A component (action, model, sampler, observable) declares its parameters as ``Param`` objects;
``validate_params`` turns a user's dict into checked keyword arguments or raises a
``ConfigError`` that names the key and lists what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


class _Required:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "<required>"


REQUIRED: Any = _Required()

#: Type names a Param may take, and what they accept.
TYPES = ("int", "float", "bool", "str", "list[int]", "list[float]", "list[str]", "table", "any")


def _type_error(where: str, value: Any, type_: str) -> ConfigError:
    return ConfigError(f"{where}: expected {type_}, got {type(value).__name__} {value!r}")


def coerce(value: Any, type_: str, where: str) -> Any:
    """Check ``value`` against a type name from TYPES; ints are accepted for floats."""
    if type_ == "any":
        return value
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        raise _type_error(where, value, "a boolean (true/false)")
    if type_ == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(where, value, "an integer")
    if type_ == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise ConfigError(f"{where}: NaN is not a valid value")
            return value
        raise _type_error(where, value, "a number")
    if type_ == "str":
        if isinstance(value, str):
            return value
        raise _type_error(where, value, "a string")
    if type_ == "table":
        if isinstance(value, Mapping):
            return dict(value)
        raise _type_error(where, value, "a table")
    if type_.startswith("list["):
        inner = type_[5:-1]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise _type_error(where, value, f"a list of {inner}")
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"unknown parameter type {type_!r}")  # programming error, not user error


@dataclass(frozen=True)
class Param:
    """One parameter of a component: name, type, default, bounds and a one-line doc."""

    name: str
    type: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    nullable: bool = False  # None (omitted in TOML) is a valid value meaning "automatic"
    #: +-inf is a valid value of this float parameter (NaN never is); without it, a non-finite
    #: number is refused: it would run and print meaningless results (and JSON has no inf)
    allow_inf: bool = False
    #: a continuous coupling of an action (its min/max are the valid domain): a conditional model
    #: may be trained over a range of it and ``lattgen scan`` may vary it (docs/scan.md)
    coupling: bool = False
    #: the value a run directory's recorded config is read with when it lacks this key: it was
    #: trained before the parameter existed (None: no such value; the default applies)
    legacy: Any = None

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"Param {self.name}: unknown type {self.type!r}")
        if self.coupling and self.type != "float":
            raise ValueError(f"Param {self.name}: a coupling must be a float parameter")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe_range(self) -> str:
        """Human-readable constraint, e.g. 'in (0, 0.5)' or 'one of hmc, metropolis'."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_exclusive else '>='} {self.min}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_exclusive else '<='} {self.max}")
        return " and ".join(parts)

    def validate(self, value: Any, where: str) -> Any:
        """Return the checked value or raise ConfigError naming ``where``."""
        if value is None and self.nullable:
            return None
        value = coerce(value, self.type, where)
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            at = f"{where}[{i}]" if isinstance(value, list) else where
            if self.choices is not None and v not in self.choices:
                raise ConfigError(
                    f"{at}: {v!r} is not valid; choose one of: "
                    + ", ".join(map(str, self.choices))
                )
            if isinstance(v, float) and math.isinf(v) and not self.allow_inf:
                raise ConfigError(f"{at}: {v!r} is not valid; a finite number is needed")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                lo_bad = self.min is not None and (
                    v < self.min or (self.min_exclusive and v == self.min)
                )
                hi_bad = self.max is not None and (
                    v > self.max or (self.max_exclusive and v == self.max)
                )
                if lo_bad or hi_bad:
                    raise ConfigError(f"{at}: {v!r} is out of range; must be {self.describe_range()}")
        return value

    def to_dict(self) -> dict:
        d = {"name": self.name, "type": self.type, "doc": self.doc}
        d["default"] = None if self.required else self.default
        d["required"] = self.required
        if self.choices is not None:
            d["choices"] = list(self.choices)
        rng = self.describe_range()
        if rng and self.choices is None:
            d["range"] = rng
        if self.coupling:
            d["coupling"] = True
        return d


def reject_unknown(keys: Iterable[str], valid: Iterable[str], where: str = "", what: str = "key") -> None:
    """ConfigError for the first key not in ``valid``, naming it (dotted under ``where``) and listing the valid ones."""
    valid = sorted(valid)
    for key in keys:
        if key not in valid:
            dotted = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{dotted}: unknown {what}; valid {what}s are: {', '.join(valid) or '(none)'}")


def validate_params(
    params: Sequence[Param], given: Mapping[str, Any], where: str, ignore: Sequence[str] = ()
) -> dict[str, Any]:
    """Validate ``given`` against ``params``; fill defaults; reject unknown and missing keys.

    ``where`` prefixes messages (e.g. ``"action"``) so errors name the full dotted key.
    Keys in ``ignore`` (e.g. ``name``) are skipped silently.
    """
    known = {p.name: p for p in params}
    reject_unknown((k for k in given if k not in ignore), known, where)
    out: dict[str, Any] = {}
    for p in params:
        if p.name in given:
            out[p.name] = p.validate(given[p.name], f"{where}.{p.name}")
        elif p.required:
            raise ConfigError(f"{where}.{p.name}: required key is missing ({p.doc})")
        else:
            out[p.name] = p.default
    return out
