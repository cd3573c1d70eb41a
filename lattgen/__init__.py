"""lattgen: a plugin-based zoo of generative models and samplers for lattice field theories.

The names below are the public plugin API (docs/plugins.md): a plugin, built-in or third-party,
imports only these from ``lattgen`` (a test walks the built-in plugins' imports). Everything
else in the package is internal and may change, except the Python API of the commands:
``lattgen.api`` (``from lattgen import api``; docs/api.md), whose ``load_config``, ``analyse``,
``compare`` and ``export_pyerrors`` and result types are also here (``api.sample`` and
``api.train`` stay in ``api``: ``lattgen.sample`` and ``lattgen.train`` are modules).
"""

from .action import Action
from .conditional import ConditionalModel, coupling_ranges
from .errors import (
    ConfigError,
    LatticeError,
    LattgenError,
    LattgenWarning,
    PluginError,
    ResourceError,
    RunDirError,
    SamplingError,
    TrainingError,
    UnknownComponentError,
)
from .field import FieldSpace, LinkAngles, RealField, UnitVectors, wrap_angle
from .fourier import apply_circulant, power_spectrum, sample_gaussian_field
from .hookspecs import hookimpl
from .lattice import Lattice
from .model import Bijection, Composition, FlowModel, GenerativeModel, standard_normal_log_prob
from .observable import Observable
from .params import Param
from .rng import make_generator
from .sampler import Chain, Sampler, merge_infos, metropolis_accept
from .theory import ScalingLine, Theory
from .training_data import make_training_data

__version__ = "0.1.0"

from . import api  # noqa: E402  (the commands' Python API; imports nothing heavy at import time)
from .api import (  # noqa: E402
    CompareResult,
    ObservableResult,
    SampleResult,
    TrainResult,
    analyse,
    compare,
    export_pyerrors,
    load_config,
)

__all__ = [
    "Action",
    "Bijection",
    "Chain",
    "Composition",
    "ConditionalModel",
    "ConfigError",
    "FieldSpace",
    "FlowModel",
    "GenerativeModel",
    "Lattice",
    "LatticeError",
    "LattgenError",
    "LattgenWarning",
    "LinkAngles",
    "Observable",
    "Param",
    "PluginError",
    "RealField",
    "ResourceError",
    "RunDirError",
    "Sampler",
    "SamplingError",
    "ScalingLine",
    "Theory",
    "TrainingError",
    "UnitVectors",
    "UnknownComponentError",
    "apply_circulant",
    "coupling_ranges",
    "hookimpl",
    "make_generator",
    "make_training_data",
    "merge_infos",
    "metropolis_accept",
    "power_spectrum",
    "sample_gaussian_field",
    "standard_normal_log_prob",
    "wrap_angle",
    "__version__",
    # the commands' Python API (docs/api.md)
    "api",
    "CompareResult",
    "ObservableResult",
    "SampleResult",
    "TrainResult",
    "analyse",
    "compare",
    "export_pyerrors",
    "load_config",
]
