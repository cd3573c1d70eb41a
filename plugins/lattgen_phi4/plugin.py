"""Hook implementations of the phi4 plugin: actions ``phi4`` (form B) and ``phi4_standard`` (form A)."""

from __future__ import annotations

from lattgen import Param, hookimpl

PHI4_PARAMS = (
    Param("beta", "float", doc="hopping parameter beta (form B); free field needs beta < 1/d", min=0),
    Param("lam", "float", 0.5, doc="quartic coupling lam of lam (phi^2 - 1)^2", min=0),
)

PHI4_STANDARD_PARAMS = (
    Param("m2", "float", doc="bare mass squared m2 (form A); free field needs m2 > 0"),
    Param("lamA", "float", doc="quartic coupling lamA of lamA phi^4", min=0),
)


def make_phi4(lattice, **params):
    """phi^4, seed's form B: S = sum_x [-beta sum_mu phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2]."""
    from .action import Phi4Action

    return Phi4Action(lattice, **params)


def make_phi4_standard(lattice, **params):
    """phi^4, standard form A: S = sum_x [-2 sum_mu phi_x phi_{x+mu} + (2d + m2) phi_x^2 + lamA phi_x^4]."""
    from .action import Phi4StandardAction

    return Phi4StandardAction(lattice, **params)


@hookimpl
def lattgen_register_actions(register):
    register("phi4", make_phi4, params=PHI4_PARAMS, doc=make_phi4.__doc__.strip())
    register("phi4_standard", make_phi4_standard, params=PHI4_STANDARD_PARAMS,
             doc=make_phi4_standard.__doc__.strip())
