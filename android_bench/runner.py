"""Command runners: how the transports execute `adb` / `ssh` / `scp`.

Transports never call `subprocess` directly; they take a *runner*, a callable
`runner(argv, input=None, timeout=None) -> CommandResult`.  Production code
uses `SubprocessRunner`; tests use `ReplayRunner`, which replays a recorded
transcript and fails on the first command that differs from it, so the exact
command sequence (including clean-up) is part of the test.  `RecordingRunner`
wraps a real runner and writes such a transcript from a real device session.

Transcript format (JSON): `{"commands": [{"argv": [...], "returncode": 0,
"stdout": "...", "stderr": ""}, ...]}`.  An `argv` element of the form
`"<ANY>"` matches any single argument (for temp-file names that differ
between runs).

Example:

>>> runner = ReplayRunner([{"argv": ["adb", "version"], "returncode": 0, "stdout": "Android Debug Bridge"}])
>>> runner(["adb", "version"]).stdout
'Android Debug Bridge'
>>> runner.assert_done()
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Sequence

ANY_ARG = "<ANY>"


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


CommandRunner = Callable[..., CommandResult]


class SubprocessRunner:
    """Runs commands for real (text mode, captured output, no shell)."""

    def __init__(self, default_timeout: float | None = 600.0):
        self.default_timeout = default_timeout

    def __call__(self, argv: Sequence[str], input: str | None = None, timeout: float | None = None) -> CommandResult:
        argv = [os.fspath(a) for a in argv]
        try:
            done = subprocess.run(
                argv, input=input, capture_output=True, text=True, errors="replace",
                timeout=timeout if timeout is not None else self.default_timeout,
            )
        except subprocess.TimeoutExpired as err:
            return CommandResult(tuple(argv), 124, _text(err.stdout), _text(err.stderr) + f"\ntimed out after {err.timeout:g} s")
        except FileNotFoundError:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def last_line(*texts: str) -> str:
    """Last non-empty line of the first of `texts` that has one (a failed command's message ends there).

    >>> last_line("", "warning: slow\\r\\nerror: no such file\\n\\n", "ignored")
    'error: no such file'
    >>> last_line(None, " ")
    'no output'
    """
    for text in texts:
        lines = [line.strip() for line in (text or "").replace("\r", "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class TranscriptMismatch(AssertionError):
    """The code under test issued a command the transcript did not expect."""


class ReplayRunner:
    """Replays a recorded transcript; every call must match the next entry."""

    def __init__(self, commands: Sequence[dict]):
        self.expected = [dict(c) for c in commands]
        self.calls: list[list[str]] = []
        self.inputs: list[str | None] = []

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ReplayRunner":
        with open(path) as handle:
            return cls(json.load(handle)["commands"])

    def __call__(self, argv: Sequence[str], input: str | None = None, timeout: float | None = None) -> CommandResult:
        argv = [os.fspath(a) for a in argv]
        position = len(self.calls)
        self.calls.append(argv)
        self.inputs.append(input)
        if position >= len(self.expected):
            raise TranscriptMismatch(f"unexpected extra command #{position}: {argv}")
        entry = self.expected[position]
        want = entry["argv"]
        if len(want) != len(argv) or any(w != ANY_ARG and w != a for w, a in zip(want, argv)):
            raise TranscriptMismatch(f"command #{position} differs:\n  expected {want}\n  got      {argv}")
        return CommandResult(tuple(argv), int(entry.get("returncode", 0)), entry.get("stdout", ""), entry.get("stderr", ""))

    def assert_done(self) -> None:
        if len(self.calls) != len(self.expected):
            missing = [e["argv"] for e in self.expected[len(self.calls):]]
            raise TranscriptMismatch(f"{len(missing)} expected command(s) never ran, first: {missing[0]}")


class RecordingRunner:
    """Wraps a runner and records every call, for making new transcripts."""

    def __init__(self, inner: CommandRunner | None = None):
        self.inner = inner or SubprocessRunner()
        self.commands: list[dict] = []

    def __call__(self, argv: Sequence[str], input: str | None = None, timeout: float | None = None) -> CommandResult:
        result = self.inner(argv, input=input, timeout=timeout)
        self.commands.append({"argv": list(result.argv), "returncode": result.returncode,
                              "stdout": result.stdout, "stderr": result.stderr})
        return result

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as handle:
            json.dump({"commands": self.commands}, handle, indent=1)
            handle.write("\n")
