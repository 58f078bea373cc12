"""Output-path policy, run lock and run fingerprint: no input or user file is ever overwritten.

One policy for every command that writes (`compress`, `analyze`, `export`, `bench`):

- an output path that is an input, or a folder that holds an input, or lies inside an input folder,
  is refused (`refuse_overlap`; symlinks and hard links are resolved);
- a non-empty output folder that holds no run of this tool is refused unless `--overwrite`
  (`check_output_folder`); an existing output file that is not what the command writes (a `.tflite`, a
  JSON report) is refused unless `--overwrite` (`check_output_file`);
- a compression run folder is locked while a run works in it (`RunLock`: pid, host and start time in
  `run.lock`; the lock of a process that is gone is stale and taken over) and holds the fingerprint of
  its inputs and settings (`fingerprint.json`); `--resume` refuses a folder whose fingerprint differs;
- a run that fails before its first step is recorded, and was not a resume, removes the files it
  created, and only those, so a rerun is not blocked (`claimed_run_folder`).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "model.keras").write_bytes(b"x")
1
>>> refuse_overlap(root, [root / "model.keras"], output_is_folder=True)
Traceback (most recent call last):
...
rmtkd_tf.errors.OutputPathError: the input ... lies inside the output folder ...; choose another output folder
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from rmtkd_tf.errors import OutputPathError, RunFolderError, RunInterrupted

LOCK_NAME = "run.lock"
FINGERPRINT_NAME = "fingerprint.json"
STATE_NAME = "state.json"
# Files that mark a folder as holding a run of this tool (compress, analyze).
RUN_MARKERS = (STATE_NAME, FINGERPRINT_NAME, "spectra.json")
# A lock file that cannot be parsed is being written right now, unless it is older than this.
UNREADABLE_LOCK_GRACE_S = 10.0


# --- paths ---------------------------------------------------------------------------------------------


def _resolved(path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overlap(output, inputs, *, output_is_folder):
    """Raise `OutputPathError` if `output` is one of `inputs`, holds one (a folder), or lies inside one.

    `inputs` is a list of paths or a dict {what: path} ("model", "data", ...) naming them in messages;
    None and strings that are not paths (`tfds:...`) are skipped.
    """
    out = _resolved(output)
    named = inputs.items() if isinstance(inputs, dict) else (("", given) for given in inputs)
    for what, given in named:
        if given is None or str(given).startswith("tfds:"):
            continue
        source = _resolved(given)
        if not source.exists():
            continue
        label = f"input {what}".strip()
        if out == source or _same_file(out, source):
            raise OutputPathError(f"the output {output} is the {label} {given}; choose another output path")
        if output_is_folder and _is_within(source, out):
            raise OutputPathError(
                f"the {label} {given} lies inside the output folder {output}; choose another output folder"
            )
        if source.is_dir() and _is_within(out, source):
            raise OutputPathError(f"the output {output} lies inside the {label} folder {given}; choose another output path")


def check_writable(path, *, what="output"):
    """Raise `OutputPathError` unless `path` (or, if it does not exist yet, its nearest parent) is writable."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe != path:
            raise OutputPathError(f"cannot write the {what} {path}: {probe} is a file, not a folder")
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write the {what} {path}: permission denied on {probe}")


def holds_run(folder) -> bool:
    """Whether `folder` holds a run of this tool (a compression run, an analysis)."""
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_MARKERS)


def _user_entries(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name != LOCK_NAME)


def check_output_folder(folder, inputs, *, overwrite=False, resume=False):
    """The checks an output folder must pass before anything is loaded or written.

    Refuses: an overlap with an input; a path that is a file; a folder that cannot be written; with
    `resume`, a folder with no run to resume; without it, a folder holding a run (unless `overwrite`)
    or holding other files (unless `overwrite`).
    """
    refuse_overlap(folder, inputs, output_is_folder=True)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"the output {folder} is a file; -o takes a folder")
    check_writable(folder, what="output folder")
    if resume:
        if not (folder / STATE_NAME).exists():
            raise RunFolderError(f"nothing to resume in {folder}: no {STATE_NAME}; run without --resume")
        return
    if not folder.exists() or overwrite:
        return
    if (folder / STATE_NAME).exists():
        raise RunFolderError(
            f"{folder} already holds a run; pass --resume to continue it, --overwrite to start over, "
            "or choose another folder"
        )
    entries = _user_entries(folder)
    if entries and not holds_run(folder):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise OutputPathError(
            f"{folder} is not empty ({shown}) and holds no rmtkd-tf run; choose an empty or new folder, "
            "or pass --overwrite to write into it"
        )


def looks_like_tflite(path) -> bool:
    """A TFLite flatbuffer carries the identifier `TFL3` at bytes 4..8."""
    with open(path, "rb") as fh:
        return fh.read(8)[4:8] == b"TFL3"


def looks_like_json(path, max_bytes=50_000_000) -> bool:
    if os.path.getsize(path) > max_bytes:
        return False
    try:
        with open(path, "rb") as fh:
            json.loads(fh.read().decode("utf-8"))
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def check_output_file(path, inputs, *, overwrite=False, replaceable=None, kind="file", option="-o"):
    """The checks an output file must pass: not an input, not a folder, writable, and, if it exists,
    replaceable (`replaceable(path)` says it is what this command writes) or `overwrite` given."""
    refuse_overlap(path, inputs, output_is_folder=False)
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file path")
    check_writable(path, what=kind)
    if path.exists() and not overwrite and replaceable is not None and not replaceable(path):
        raise OutputPathError(
            f"{option} {path} exists and is not a {kind}; choose another path or pass --overwrite to replace it"
        )


# --- fingerprint ---------------------------------------------------------------------------------------


def file_sha256(path, chunk=1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(spec) -> dict:
    """What identifies a `--data SPEC`: a file by the sha256 of its content; a folder by the sha256 of
    its listing (every file's relative path, size and mtime; contents are not read: a folder of 60,000
    images would take minutes); `tfds:NAME` by its name.

    >>> data_fingerprint("tfds:mnist")
    {'kind': 'tfds name', 'spec': 'tfds:mnist', 'sha256': None}
    """
    spec = str(spec)
    if spec.startswith("tfds:"):
        return {"kind": "tfds name", "spec": spec, "sha256": None}
    path = _resolved(spec)
    if path.is_file():
        return {"kind": "file content", "spec": spec, "sha256": file_sha256(path)}
    digest = hashlib.sha256()
    for directory, subdirectories, names in os.walk(path):
        subdirectories.sort()
        for name in sorted(names):
            full = os.path.join(directory, name)
            stat = os.stat(full)
            digest.update(f"{os.path.relpath(full, path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"kind": "folder listing (path, size, mtime)", "spec": spec, "sha256": digest.hexdigest()}


def run_fingerprint(model_path, data_spec, settings) -> dict:
    """Fingerprint of a run: the model file's sha256, the data's (see `data_fingerprint`), the settings."""
    from rmtkd_tf.io import json_safe

    return {
        "model": {"path": str(model_path), "sha256": file_sha256(model_path)},
        "data": data_fingerprint(data_spec),
        "settings": json.loads(json.dumps(json_safe(settings), default=str)),
    }


def fingerprint_differences(stored, current) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty when they match).

    >>> a = {"model": {"sha256": "aa"}, "data": {"sha256": "dd"}, "settings": {"seed": 0, "limit": None}}
    >>> b = {"model": {"sha256": "bb"}, "data": {"sha256": "dd"}, "settings": {"seed": 1, "limit": None}}
    >>> fingerprint_differences(a, b)
    ['the model (sha256 aa... here, bb... now)', 'settings seed (0 here, 1 now)']
    """
    differences = []
    for part, label in (("model", "the model"), ("data", "the data")):
        old, new = stored.get(part, {}).get("sha256"), current.get(part, {}).get("sha256")
        old_spec, new_spec = stored.get(part, {}).get("spec"), current.get(part, {}).get("spec")
        if old != new or (old is None and old_spec != new_spec):
            differences.append(f"{label} (sha256 {str(old)[:12]}... here, {str(new)[:12]}... now)")
    old_settings, new_settings = stored.get("settings", {}), current.get("settings", {})
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            differences.append(f"settings {key} ({old_settings.get(key)!r} here, {new_settings.get(key)!r} now)")
    return differences


def _check_or_write_fingerprint(folder: Path, fingerprint, resume, log):
    from rmtkd_tf.io import write_json

    if fingerprint is None:
        return
    path = folder / FINGERPRINT_NAME
    if resume and path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            raise RunFolderError(f"cannot resume {folder}: {path.name} is unreadable; start a new run") from None
        differences = fingerprint_differences(stored, fingerprint)
        if differences:
            raise RunFolderError(
                f"cannot resume {folder}: {'; '.join(differences[:4])}{'; ...' if len(differences) > 4 else ''} "
                "differ from the run it holds; resume with the same inputs and settings or use a new folder"
            )
        return
    if resume:
        log(f"note: {folder} has no {FINGERPRINT_NAME} (an older run); resuming without checking the inputs")
    write_json(path, fingerprint)


# --- lock ----------------------------------------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError):
        return False
    return True


class RunLock:
    """An exclusive lock on a run folder: `run.lock` holds the owner's pid, host and start time.

    A lock whose process is gone (same host, pid not running) is stale: it is taken over with a message.
    A lock from another host cannot be checked and is honoured; its message says which file to delete.
    """

    def __init__(self, folder, log=print):
        self.path = Path(folder) / LOCK_NAME
        self.log = log
        self.owner = None

    def _describe(self, holder):
        return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                if holder else "a run that is still writing its lock")

    def acquire(self):
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nonce": os.urandom(8).hex(),
        }
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(owner, fh)
            self.owner = owner
            return self
        raise RunFolderError(f"cannot lock {self.path.parent}: another run keeps taking its lock")

    def _handle_existing(self):
        try:
            holder = json.loads(self.path.read_text())
            if not isinstance(holder, dict):
                holder = {}
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError):
            holder = {}
        if not holder:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            stale = age > UNREADABLE_LOCK_GRACE_S
        elif holder.get("host") != socket.gethostname():
            stale = False
        else:
            try:
                stale = not _process_alive(int(holder.get("pid")))
            except (TypeError, ValueError):
                stale = True
        if not stale:
            raise RunFolderError(
                f"{self.path.parent} is in use by another run ({self._describe(holder)}); wait for it, "
                f"or delete {self.path} if no run is active"
            )
        self.log(f"taking over the stale lock of {self.path.parent} ({self._describe(holder)}: no longer running)")
        aside = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)  # atomic: of two runs taking over, one renames, the other retries
            os.remove(aside)
        except FileNotFoundError:
            pass

    def release(self):
        if self.owner is None:
            return
        try:
            if json.loads(self.path.read_text()).get("nonce") == self.owner["nonce"]:
                os.remove(self.path)
        except (OSError, ValueError, AttributeError):
            pass
        self.owner = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --- a claimed run folder ------------------------------------------------------------------------------


def _listing(folder: Path) -> set[Path]:
    return {Path(directory) / name for directory, dirs, files in os.walk(folder) for name in dirs + files}


def _first_step_recorded(folder: Path) -> bool:
    """Whether the run in `folder` has progress worth resuming: an iterative step, or a budgeted run's chosen
    cut (its analysis and search are done) or distillation attempt."""
    try:
        state = json.loads((folder / STATE_NAME).read_text())
        return bool(state.get("steps") or state.get("attempts") or state.get("cut_index") is not None)
    except (OSError, ValueError, AttributeError):
        return False


def _remove_created(folder: Path, before: set[Path]):
    """Delete what appeared in `folder` since `before` (files, then the folders left empty)."""
    created = sorted(_listing(folder) - before, key=lambda p: len(p.parts), reverse=True)
    for path in created:
        if path.name == LOCK_NAME and path.parent == folder:
            continue
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def _remove_previous_run(folder: Path, log):
    """`--overwrite` over an earlier run: remove that run's bookkeeping (not the user's other files)."""
    removed = 0
    for name in (STATE_NAME, "history.json", FINGERPRINT_NAME):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
            removed += 1
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir():
        # The iterative schedule's steps, the budgeted schedule's distillation attempts (and their optimizer
        # states) and final student.
        for pattern in ("step_*.keras", "attempt_*.keras", "attempt_*.optimizer.npz", "final.keras"):
            for file in checkpoints.glob(pattern):
                file.unlink()
                removed += 1
    if removed:
        log(f"--overwrite: removed the earlier run's state and checkpoints in {folder}")


@contextlib.contextmanager
def claimed_run_folder(output_dir, *, resume=False, overwrite=False, fingerprint=None, log=print):
    """Lock `output_dir` for one compression run; check or record its fingerprint; clean up a failed start.

    Raises `RunFolderError` when another live run holds the folder, when it already holds a run and
    neither `resume` nor `overwrite` is given, or when `resume` finds another fingerprint. A
    `KeyboardInterrupt` inside the block comes out as `RunInterrupted`, whose message says whether the
    folder can be resumed.
    """
    folder = Path(output_dir)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"cannot create the output folder {folder}: {error.strerror or error}") from None
    lock = RunLock(folder, log=log)
    try:
        lock.acquire()
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    before = _listing(folder)
    clean_up = False
    try:
        if resume and not (folder / STATE_NAME).exists():
            raise RunFolderError(f"nothing to resume in {folder}: no {STATE_NAME}; run without --resume")
        if not resume and (folder / STATE_NAME).exists():
            if not overwrite:
                raise RunFolderError(
                    f"{folder} already holds a run; pass --resume to continue it, --overwrite to start over, "
                    "or choose another folder"
                )
            _remove_previous_run(folder, log)
            before = _listing(folder)
        _check_or_write_fingerprint(folder, fingerprint, resume, log)
        yield folder
    except KeyboardInterrupt:
        if (folder / STATE_NAME).exists():
            raise RunInterrupted("interrupted; rerun with --resume to continue") from None
        clean_up = not resume
        raise RunInterrupted("interrupted before the run's first checkpoint; nothing was kept, rerun without --resume") from None
    except BaseException:
        clean_up = not resume and not _first_step_recorded(folder)
        raise
    finally:
        if clean_up:
            _remove_created(folder, before)
        lock.release()
        if created and clean_up:
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def removing_created_on_failure(folder):
    """If the block fails, delete what it created in `folder` (and `folder` itself if it created it).

    For commands whose partial output would block a rerun (an `analyze` folder with plots but no
    `spectra.json` is "not empty and holds no run"). Files that were there before are left alone.
    """
    folder = Path(folder)
    created = not folder.exists()
    before = set() if created else _listing(folder)
    try:
        yield folder
    except BaseException:
        if folder.is_dir():
            _remove_created(folder, before)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
