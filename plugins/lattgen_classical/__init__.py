"""lattgen built-in plugin: classical samplers ``hmc`` and ``metropolis``."""

from .hmc import HMC, INTEGRATORS, OMELYAN_LAMBDA, MDSchedule, leapfrog, omelyan
from .metropolis import Metropolis
from .tuning import DualAveraging

__all__ = [
           "HMC",
           "INTEGRATORS",
           "OMELYAN_LAMBDA",
           "DualAveraging",
           "MDSchedule",
           "Metropolis",
           "leapfrog",
           "omelyan",
]
