"""Exceptions with one-line messages meant to be shown to users as they are.

Exit codes of the `rmtkd-tf` command (see the README's table of cases):

- 0: done;
- 1: an `RMTKDError` (bad input, a refused output path, a locked or mismatched run folder, training
  that diverged) or any other error, reported in one line;
- 2: a usage error (a missing or malformed option, from click);
- 130: interrupted (Ctrl-C / SIGINT).
"""

from rmtkd_tf.constants import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE  # noqa: F401  (the CLI reads them there too)


class RMTKDError(ValueError):
    """Base class for errors caused by user input or by a model we cannot handle."""


class NonFiniteActivationError(RMTKDError):
    """A layer produced NaN or Inf activations on the calibration data."""


class UnsupportedModelError(RMTKDError):
    """The model cannot be rebuilt (e.g. a subclassed model)."""


class OutputPathError(RMTKDError):
    """An output path would overwrite an input or a user's file, or cannot be written."""


class RunFolderError(RMTKDError):
    """A run folder is locked by another run, or `--resume` does not match what it holds."""


class DataValidationError(RMTKDError):
    """The data do not fit the model (labels, shapes, non-finite values, too few examples)."""


class DataLoadError(RMTKDError):
    """The data set named by a spec cannot be read; the message is one line meant for users."""


class NonFiniteTrainingError(RMTKDError):
    """Training produced NaN or Inf losses or weights; the run stops before saving them."""


class RankRuleError(RMTKDError):
    """A rank rule that cannot be resolved (unknown name, unknown or bad parameter) or serialised."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `message` says whether the run folder can be resumed."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message
