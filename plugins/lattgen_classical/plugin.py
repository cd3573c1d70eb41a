"""Hook implementations of the classical plugin: samplers ``hmc`` and ``metropolis``."""

from __future__ import annotations

from lattgen import Param, hookimpl

INIT_PARAM = Param("init", "str", "random", "initial fields: random (N(0,1) per site) or cold (zeros)",
                   choices=("random", "cold"))

HMC_PARAMS = (
    Param("n_chains", "int", 128, "chains advanced together (one batch; 128 x 16^2 sites keeps "
          "each CPU op at torch's serial grain size, fastest at L = 16 idle or loaded)", min=1),
    Param("integrator", "str", "omelyan", "MD integrator", choices=("omelyan", "leapfrog")),
    Param("trajectory_length", "float", None, "MD time per trajectory (default 3.0 unless n_steps "
          "and step_size are both given)", min=0, min_exclusive=True, nullable=True),
    Param("n_steps", "int", None, "MD steps per trajectory (default: trajectory_length/step_size)",
          min=1, nullable=True),
    Param("step_size", "float", None, "MD step size (default: tuned to target_acceptance during "
          "thermalisation, then frozen)", min=0, min_exclusive=True, nullable=True),
    Param("target_acceptance", "float", 0.8, "acceptance the step-size tuner aims at",
          min=0, max=1, min_exclusive=True, max_exclusive=True),
    Param("trajectory_jitter", "float", 0.5, "MD steps of each trajectory drawn uniformly in "
          "n_steps (1 +- jitter) (breaks resonances)", min=0, max=1, max_exclusive=True),
    INIT_PARAM,
)

METROPOLIS_PARAMS = (
    Param("n_chains", "int", 64, "chains advanced together (fewer than HMC: local updates "
          "decorrelate slowly, so each chain needs more steps)", min=1),
    Param("n_hits", "int", 1, "proposals per site and sweep", min=1),
    Param("proposal_width", "float", None, "half-width w of the uniform proposal U(-w, w) (default: "
          "tuned to target_acceptance during thermalisation, then frozen)", min=0,
          min_exclusive=True, nullable=True),
    Param("target_acceptance", "float", 0.5, "acceptance the width tuner aims at",
          min=0, max=1, min_exclusive=True, max_exclusive=True),
    INIT_PARAM,
)


def make_hmc(action, *, device, dtype, generator, model=None, **params):
    """Hybrid Monte Carlo, Omelyan or leapfrog, step size tuned in thermalisation (model ignored)."""
    from .hmc import HMC

    return HMC(action, device=device, dtype=dtype, generator=generator, model=model, **params)


def make_metropolis(action, *, device, dtype, generator, model=None, **params):
    """Checkerboard local Metropolis, proposal width tuned in thermalisation (model ignored)."""
    from .metropolis import Metropolis

    return Metropolis(action, device=device, dtype=dtype, generator=generator, model=model, **params)


@hookimpl
def lattgen_register_samplers(register):
    register("hmc", make_hmc, params=HMC_PARAMS, doc=make_hmc.__doc__.strip(), exact=True)
    register("metropolis", make_metropolis, params=METROPOLIS_PARAMS,
             doc=make_metropolis.__doc__.strip(), exact=True)
