"""Errors that ddm-bench reports to the user as clear messages (the CLI exits with code 2)."""


class DdmError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class DataError(DdmError):
    """A dataset is unknown, missing, malformed, or cannot give what was asked (e.g. n_per_class)."""


class ConfigError(DdmError):
    """A configuration value is invalid (unknown architecture, bad width, ...)."""


class CacheError(DdmError):
    """A cache entry is corrupted or was written for a different configuration."""


class DivergedError(DdmError, FloatingPointError):
    """Training, distillation or a fit went non-finite; the message names the likely cause (a learning
    rate too high, or non-finite data). Nothing non-finite is cached."""
