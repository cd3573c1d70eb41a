"""Hook implementations of the phi4 plugin: actions ``phi4`` (form B) and ``phi4_standard`` (form A)."""

from __future__ import annotations

from lattgen import Param, ScalingLine, Theory, hookimpl

PHI4_PARAMS = (
    Param("beta", "float", doc="hopping parameter beta (form B); free field needs beta < 1/d", min=0,
          coupling=True),
    Param("lam", "float", 0.5, doc="quartic coupling lam of lam (phi^2 - 1)^2", min=0, coupling=True),
)

PHI4_STANDARD_PARAMS = (
    Param("m2", "float", doc="bare mass squared m2 (form A); free field needs m2 > 0", coupling=True),
    Param("lamA", "float", doc="quartic coupling lamA of lamA phi^4", min=0, coupling=True),
)


#: the xi = L/4 line at lam = 0.5 (docs/physics.md#reference-points: beta from the ensembles of
#: arXiv 1904.12072); ``lattgen scale`` runs the points with L <= 16 by default
XI_L4_POINTS = ((6, 0.536), (8, 0.577), (10, 0.600), (12, 0.616), (14, 0.625), (16, 0.635),
                (20, 0.645), (32, 0.661), (64, 0.674))

PHI4_THEORY = Theory(
    default_point={"lattice": [8, 8], "beta": 0.577, "lam": 0.5},  # xi ~ 2 on the xi = L/4 line
    default=True,
    classical_samplers=("hmc", "metropolis"),
    headline=("abs_magnetisation", "susceptibility"),
    figure_of_merit="susceptibility",
    histogram="magnetisation",
    histogram_label="magnetisation m = (1/V) sum_x phi_x",
    scaling=ScalingLine(points=tuple(p for p in XI_L4_POINTS if p[0] <= 16), coupling="beta",
                        base={"lam": 0.5}, source="arXiv 1904.12072 (docs/physics.md#reference-points)",
                        x_observable="correlation_length"),
    data_sampler="hmc",
    data_observable="susceptibility",
)


def make_phi4(lattice, **params):
    """phi^4, seed's form B: S = sum_x [-beta sum_mu phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2]."""
    from .action import Phi4Action

    action = Phi4Action(lattice, **params)
    action.coupling_params = {p.name: p for p in PHI4_PARAMS if p.coupling}  # also without the registry
    return action


def make_phi4_standard(lattice, **params):
    """phi^4, standard form A: S = sum_x [-2 sum_mu phi_x phi_{x+mu} + (2d + m2) phi_x^2 + lamA phi_x^4]."""
    from .action import Phi4StandardAction

    action = Phi4StandardAction(lattice, **params)
    action.coupling_params = {p.name: p for p in PHI4_STANDARD_PARAMS if p.coupling}
    return action


@hookimpl
def lattgen_register_actions(register):
    register("phi4", make_phi4, params=PHI4_PARAMS, doc=make_phi4.__doc__.strip(), theory=PHI4_THEORY)
    register("phi4_standard", make_phi4_standard, params=PHI4_STANDARD_PARAMS,
             doc=make_phi4_standard.__doc__.strip(),
             theory=Theory(classical_samplers=PHI4_THEORY.classical_samplers, headline=PHI4_THEORY.headline,
                           figure_of_merit=PHI4_THEORY.figure_of_merit, histogram=PHI4_THEORY.histogram,
                           histogram_label=PHI4_THEORY.histogram_label, data_sampler="hmc",
                           data_observable="susceptibility"))
