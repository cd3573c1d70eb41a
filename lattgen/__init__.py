"""lattgen: a plugin-based zoo of generative models and samplers for lattice field theories."""

from .errors import (
    ConfigError,
    LatticeError,
    LattgenError,
    PluginError,
    RunDirError,
    TrainingError,
    UnknownComponentError,
)
from .hookspecs import hookimpl
from .lattice import Lattice
from .params import Param

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Lattice",
    "LatticeError",
    "LattgenError",
    "Param",
    "PluginError",
    "RunDirError",
    "TrainingError",
    "UnknownComponentError",
    "hookimpl",
    "__version__",
]
