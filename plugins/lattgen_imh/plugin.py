"""Hook implementations of the imh plugin: sampler ``imh`` (independence Metropolis-Hastings)."""

from __future__ import annotations

from lattgen import Param, hookimpl

IMH_PARAMS = (
    Param("n_chains", "int", 16, "independent chains advanced together (one proposal each per step)",
          min=1),
    Param("batch_size", "int", 64, "steps whose proposals are drawn in one model call "
          "(batch_size * n_chains configurations per call)", min=1),
    Param("z2_flip", "bool", False, "output each state with a random sign (needs a Z2-symmetric "
          "action; exact: the internal IMH chain is untouched)"),
    Param("translate", "bool", False, "output each state shifted by a random lattice vector "
          "(exact for translation-invariant actions)"),
    Param("max_non_finite", "float", 0.01, "largest fraction of proposals with a non-finite "
          "log-weight (rejected and counted) before sampling stops with an error", min=0, max=1),
)


def make_imh(action, *, device, dtype, generator, model=None, **params):
    """Independence Metropolis-Hastings with a generative-model proposal (pseudo-marginal if q is estimated)."""
    from .imh import IMH

    return IMH(action, model=model, device=device, dtype=dtype, generator=generator, **params)


@hookimpl
def lattgen_register_samplers(register):
    register("imh", make_imh, params=IMH_PARAMS, doc=make_imh.__doc__.strip(), exact=True,
             needs_model=True)
