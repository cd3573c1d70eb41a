"""Consistency of a comparison: each entry's observables against the action's exact values where it
knows them, else against the exact samplers' pooled estimate."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def consistency(entries: Sequence[Mapping[str, Any]], sigma: float,
                exact: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Pull of each entry against the exact value of the observable (``exact``, from
    ``Action.exact``) where there is one, pull = (x_i - exact) / err_i, for every entry,
    classical samplers included (a frozen chain is caught too); else against the pooled
    estimate of the reference (exact) samplers.

    The reference is every entry without a model — classical samplers, exact by construction —
    leaving the entry itself out (a lone classical entry gets no pull); without any classical
    entry, all other entries. The pool is the
    inverse-variance weighted mean, pull = (x_i - x_pool) / sqrt(err_i^2 + err_pool^2), and
    |pull| > sigma flags the entry inconsistent: its sampler (or its model's density) is not exact.
    Except where the entry's own error is unreliable (``reliable`` False: the Gamma window failed,
    the chains are too short for their autocorrelation, the error is an underestimate): such a
    pull cannot be judged and is listed under ``too_short`` instead, unless it stays beyond
    sigma against the observable's ``replica_error`` (the spread over its independent chains,
    which does not depend on tau_int): that pull is too large for a short chain to explain, and
    flags the entry inconsistent. ``unreliable`` lists the observables with a pull whose error
    is not reliable. ``verdict`` is "NO" (a judged failure), "too short" (a too-short pull, or
    every pull of the entry unreliable: nothing could be judged) or "yes".
    """
    names: list[str] = []
    for e in entries:
        for name, o in e["observables"].items():
            if isinstance(o.get("value"), (int, float)) and name not in names:
                names.append(name)
    reference = {e["label"] for e in entries if not e.get("model")}
    out: dict[str, dict[str, Any]] = {e["label"]: {"pulls": {}, "consistent": True, "too_short": [],
                                                   "unreliable": []} for e in entries}
    reliable = {(e["label"], name): o.get("reliable", True) is not False
                for e in entries for name, o in e["observables"].items()}
    replica = {(e["label"], name): o.get("replica_error")
               for e in entries for name, o in e["observables"].items()}
    for name in names:
        vals = {}
        for e in entries:
            o = e["observables"].get(name, {})
            v, s = o.get("value"), o.get("error")
            if isinstance(v, (int, float)) and isinstance(s, (int, float)) and s > 0 and math.isfinite(v):
                vals[e["label"]] = (v, s)
        known = (exact or {}).get(name)
        exact_value = isinstance(known, (int, float)) and math.isfinite(known)
        for label, (v, s) in vals.items():
            if exact_value:
                pool, pool_err = float(known), 0.0
            else:
                if reference:
                    # a lone reference sampler defines the reference: nothing exact to test it against
                    others = [vals[k] for k in vals if k in reference and k != label]
                else:
                    others = [vals[k] for k in vals if k != label]
                if not others:
                    continue
                w = np.array([1 / sx**2 for _, sx in others])
                pool = float(np.sum(w * np.array([x for x, _ in others])) / w.sum())
                pool_err = float(1 / math.sqrt(w.sum()))
            pull = (v - pool) / math.sqrt(s**2 + pool_err**2)
            out[label]["pulls"][name] = pull
            if not reliable[(label, name)]:
                out[label]["unreliable"].append(name)
            if abs(pull) > sigma:
                if reliable[(label, name)] or _beyond_replica_spread(v, replica[(label, name)], pool,
                                                                      pool_err, sigma):
                    out[label]["consistent"] = False
                else:
                    out[label]["too_short"].append(name)
    for judged in out.values():
        nothing_judged = bool(judged["pulls"]) and len(judged["unreliable"]) == len(judged["pulls"])
        judged["verdict"] = "NO" if not judged["consistent"] else \
            "too short" if judged["too_short"] or nothing_judged else "yes"
    return out


def _beyond_replica_spread(value: float, replica_error: float | None, pool: float, pool_err: float,
                           sigma: float) -> bool:
    """Whether a pull stays beyond sigma with the between-chain error in place of the Gamma one."""
    if not isinstance(replica_error, (int, float)) or not math.isfinite(replica_error):
        return False
    return abs(value - pool) > sigma * math.sqrt(replica_error**2 + pool_err**2)
