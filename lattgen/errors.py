"""The LattgenError family: every error a user can cause, with a message they can act on."""

from __future__ import annotations


class LattgenError(Exception):
    """Base class of all errors a user can cause (bad config, bad plugin, bad input)."""


class ConfigError(LattgenError):
    """A configuration key is unknown, has the wrong type or an out-of-range value."""


class PluginError(LattgenError):
    """A plugin is broken: a name registered twice, a bad registration, a failed hook."""


class UnknownComponentError(LattgenError):
    """A requested action, model, sampler or observable is not registered."""


class LatticeError(LattgenError):
    """A field or lattice shape does not fit what an operation needs."""


class TrainingError(LattgenError):
    """Training failed (for example the loss turned NaN); the message says what was kept."""


class RunDirError(LattgenError):
    """A run directory is missing, incomplete or incompatible with the request."""


class SamplingError(LattgenError):
    """A sampler cannot go on exactly (for example its proposals are mostly non-finite)."""


class ResourceError(LattgenError):
    """The request does not fit the machine (memory); the message gives the figure."""


class LattgenWarning(UserWarning):
    """Something was repaired or left out and the run goes on (a torn metrics line, a plugin)."""
