"""Exceptions with one-line messages meant to be shown to users as they are."""


class RMTKDError(ValueError):
    """Base class for errors caused by user input or by a model we cannot handle."""


class NonFiniteActivationError(RMTKDError):
    """A layer produced NaN or Inf activations on the calibration data."""


class UnsupportedModelError(RMTKDError):
    """The model cannot be rebuilt (e.g. a subclassed model)."""
