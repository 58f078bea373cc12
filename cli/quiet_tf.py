"""TensorFlow's start-up noise, kept off the terminal unless asked for (`rmtkd-tf -v` or RMTKD_TF_VERBOSE=1).

TensorFlow prints notices that say nothing about the run: `oneDNN custom operations are on`,
`Could not find cuda drivers`, `failed call to cuInit ... UNKNOWN ERROR (303)` on a machine
without a GPU, absl's `All log messages before absl::InitializeLog()`, LiteRT's `Created
TensorFlow Lite XNNPACK delegate`, the converter's `W0000 ... Ignored output_format`, and
Python warnings about `tf.function` retracing. Some of them are written by native code before
any log level is read, so no environment variable hides them; `filter_native_stderr` routes
file descriptor 2 (where native code writes) through a filter that drops exactly those lines,
while Python's `sys.stderr` keeps writing to the real stream, unfiltered.

Nothing here imports TensorFlow: it must run before TensorFlow is imported.

>>> is_noise("I0000 00:00:1796207620.278607    7436 cudart_stub.cc:31] Could not find cuda drivers")
True
>>> is_noise("E0000 00:00:1796207623.568239    7436 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)")
True
>>> is_noise("Error: model file not found: nope.keras")
False
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import re
import sys
import threading

VERBOSE_ENV = "RMTKD_TF_VERBOSE"

# Native log lines (absl format: severity letter, date, time, thread, file:line]) of severity
# INFO and WARNING, and the few ERROR lines TensorFlow prints on every machine without a GPU.
_NOISE = [re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] ",
    r"^E\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] .*(cuInit|CUDA|cuda|cuDNN|cuFFT|cuBLAS|computation placer)",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate",
    r"^INFO: Initialized TensorFlow Lite runtime",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags",
)]


def is_noise(line):
    """Whether `line` (one line of native stderr, no newline needed) is a start-up notice to hide."""
    return any(pattern.search(line) for pattern in _NOISE)


def verbose_requested(argv):
    """`-v`/`--verbose` before the command name, or RMTKD_TF_VERBOSE set to anything but 0/empty.

    >>> verbose_requested(["-v", "compress", "-o", "x"]), verbose_requested(["compress", "-v"])
    (True, False)
    """
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return True
    for arg in argv:
        if arg in ("-v", "--verbose"):
            return True
        if not arg.startswith("-"):
            return False  # the command name: options after it are the command's
    return False


def configure_logging(verbose):
    """Set TensorFlow's log level before it is imported, and quieten the Python loggers that repeat it.

    Not verbose: native logs below FATAL are off (TF_CPP_MIN_LOG_LEVEL=3, unless the user set it), the
    `tensorflow` and `absl` Python loggers show errors only (the retracing paragraphs are warnings).
    Verbose: TensorFlow's own defaults (level 0 unless the user set one).
    """
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging  # pure Python, no TensorFlow

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quieten
        pass


class _NativeStderrFilter:
    """File descriptor 2 -> a pipe -> a thread that forwards every line but the noise to the real stderr."""

    def __init__(self):
        sys.stderr.flush()
        self.real_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.read_fd = read_fd
        # Python's own writes (progress, errors, tracebacks) bypass the pipe: same stream, no filter, no delay.
        self.saved_stderr = sys.stderr
        sys.stderr = open(os.dup(self.real_fd), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                          errors="backslashreplace")
        self.thread = threading.Thread(target=self._forward, name="rmtkd-tf-stderr-filter", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _forward(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self._write(lines)
        if pending:
            self._write([pending])
        os.close(self.read_fd)

    def _write(self, lines):
        kept = [line for line in lines if not is_noise(line.decode("utf-8", "replace"))]
        if kept:
            os.write(self.real_fd, b"\n".join(kept) + b"\n")

    def close(self):
        """Give fd 2 back to the real stream and forward what is left in the pipe."""
        if self.thread is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.real_fd, 2)  # closes the pipe's last write end: the thread reads EOF
        self.thread.join(timeout=2.0)
        self.thread = None


def filter_native_stderr():
    """Install the fd-2 filter for the rest of the process (the console script does, the test runner does not).

    Returns None, leaving stderr as it is, where file descriptor 2 cannot be duplicated (closed, or no OS file).
    """
    try:
        os.fstat(2)
        sys.stderr.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    return _NativeStderrFilter()
