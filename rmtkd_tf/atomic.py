"""Atomic file writes: a file appears whole, with a normal file's mode, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def current_umask():
    """The process umask, read without changing it where the OS allows (Linux), else by a quick swap."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def match_umask(path):
    """Give `path` the mode a plain `open(path, "w")` would (0644 under umask 022), not mkstemp's 0600."""
    os.chmod(path, 0o666 & ~current_umask())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The file gets the mode a normal write would give it (0644 under the usual umask).

    >>> import tempfile, os, stat
    >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> open(target).read(), oct(stat.S_IMODE(os.stat(target).st_mode)) == oct(0o666 & ~current_umask())
    ('hello', True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            match_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
