"""Run exported `.tflite` models on aarch64 (qemu-user, arm64 Debian chroot) and compare with the host.

    sudo .venv/bin/python -m benchmarks arm64 --task configs/arm64_qemu     # the committed run, or:
    sudo .venv/bin/python -m benchmarks arm64 \\
        --teacher benchmarks/runs/cifar10_cnn/teacher/model_fp32.tflite \\
        --student benchmarks/runs/cifar10_cnn/rmtkd-mp/model_fp32.tflite \\
        --teacher benchmarks/runs/cifar10_cnn/teacher/model_int8.tflite \\
        --student benchmarks/runs/cifar10_cnn/rmtkd-mp/model_int8.tflite

What it does (every step is cached, so a second run only repeats the last two):

1. builds a minimal arm64 Debian bookworm chroot with `debootstrap --arch=arm64 --foreign
   --variant=minbase`, runs the second stage under qemu-user (binfmt_misc), and moves it into
   place only once it is complete (`$RMTKD_ARM64_CHROOT`, default /var/tmp/rmtkd-arm64-chroot,
   never inside the repository);
2. pip-installs the aarch64 manylinux wheels of `ai-edge-litert` (the host's version) and NumPy
   from PyPI into the chroot;
3. runs every model on the same real inputs (the first `--n-inputs` CIFAR-10 test images of the
   packaged sample `rmtkd_tf/assets/cifar10_sample.npz`) with the aarch64 CPython inside the
   chroot, and on the host with `rmtkd_tf.export.tflite_predict`;
4. writes `benchmarks/results/arm64_qemu.json`: the machine seen inside the chroot, versions,
   per model the max abs output difference vs the host, top-1 agreement, accuracy on the batch,
   and the emulated wall time, flagged by `timing_note` as NOT a speed measurement.

The exit status is 1 when an output differs from the host's by more than the tolerance
(the JSON is still written, with `"all_within_tolerance": false`).

Needs root (debootstrap, chroot) and the Debian packages `debootstrap` and `qemu-user-static`
(plus `binfmt-support` where binfmt_misc is not registered yet). See README.md beside this file.
Not run in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

DEFAULT_CHROOT = "/var/tmp/rmtkd-arm64-chroot"
SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = "python3,python3-pip,python3-venv,ca-certificates"
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BASE_MARKER = ".rmtkd-base-complete"  # written by this script once the second stage succeeded
CA_IN_CHROOT = "/etc/rmtkd-host-ca-certificates.crt"
RUN_DIR_IN_CHROOT = "/opt/rmtkd-run"
SAMPLE = REPO / "rmtkd_tf" / "assets" / "cifar10_sample.npz"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "arm64_qemu.json"
TIMING_NOTE = "emulated under qemu-user; not a speed measurement"
ELF_MACHINE_AARCH64 = 0xB7


class Arm64RunError(RuntimeError):
    """A step of the arm64 run failed; the message says which and what to do."""


def log(message):
    print(f"[arm64_qemu] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Host checks
# ----------------------------------------------------------------------------------------------


def check_host():
    if os.geteuid() != 0:
        raise Arm64RunError("needs root (debootstrap and chroot); rerun with sudo")
    missing = [tool for tool in ("debootstrap", "chroot") if shutil.which(tool) is None]
    if not os.path.exists(QEMU):
        missing.append(QEMU)
    if missing:
        raise Arm64RunError(
            f"missing {', '.join(missing)}; install with: "
            "apt-get update && apt-get install -y debootstrap qemu-user-static binfmt-support"
        )


def chroot_path(value):
    path = Path(os.path.abspath(value))
    if path == REPO or REPO in path.parents:
        raise Arm64RunError(f"the chroot must live outside the repository, got {path}")
    if str(path) in ("/", "/var", "/var/tmp", "/tmp"):
        raise Arm64RunError(f"refusing to use {path} itself as the chroot; name a subdirectory")
    return path


def debian_mirror():
    """The first Debian mirror serving the bookworm suite in this machine's apt sources."""
    files = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and SUITE in suites.group(1).split() and "/debian" in uris.group(1):
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                # deb [options] URI suite components...
                words = [w for w in words if not w.startswith("[") and not w.endswith("]")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1].rstrip("/")
    return "http://deb.debian.org/debian"


def ensure_binfmt():
    """Make aarch64 ELF files runnable through binfmt_misc if we can; return its flags or None.

    Debian's qemu-user-static registers its handler with the F (fix-binary) flag, so the
    interpreter is opened once at registration and works inside any chroot.
    """
    if not (BINFMT_DIR / "register").exists():
        subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            check=False, capture_output=True,
        )
    if binfmt_aarch64_flags() is None and shutil.which("update-binfmts"):
        subprocess.run(
            ["update-binfmts", "--enable", "qemu-aarch64"], check=False, capture_output=True
        )
    return binfmt_aarch64_flags()


def binfmt_aarch64_flags():
    """The flags of the enabled qemu-aarch64 binfmt_misc entry ("" if none), None if disabled."""
    try:
        lines = (BINFMT_DIR / "qemu-aarch64").read_text().splitlines()
    except OSError:
        return None
    if not lines or lines[0].strip() != "enabled":
        return None
    flags = [line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")]
    return flags[0] if flags else ""


def binfmt_aarch64_interpreter():
    try:
        lines = (BINFMT_DIR / "qemu-aarch64").read_text().splitlines()
    except OSError:
        return None
    paths = [line.split(None, 1)[1].strip() for line in lines if line.startswith("interpreter ")]
    return paths[0] if paths else None


def _run(argv, env=None):
    """Run a setup command, its output streamed; a failure names the command."""
    result = subprocess.run(argv, env=env, check=False)
    if result.returncode != 0:
        raise Arm64RunError(f"{' '.join(argv[:6])} ... failed with exit status {result.returncode}")


def _mounts_under(path):
    with open("/proc/mounts") as fh:
        points = [line.split()[1] for line in fh]
    return [p for p in points if p == str(path) or p.startswith(str(path) + "/")]


# ----------------------------------------------------------------------------------------------
# Chroot
# ----------------------------------------------------------------------------------------------


def ensure_base_chroot(root, mirror, binfmt_flags):
    """debootstrap stage 1 + stage 2 into `<root>.partial`, then rename to `root` (cached)."""
    if (root / BASE_MARKER).exists():
        log(f"chroot {root} already built")
        return
    if root.exists():
        raise Arm64RunError(
            f"{root} exists but was not completed by this script (no {BASE_MARKER}); "
            "remove it or set RMTKD_ARM64_CHROOT to another directory"
        )
    if binfmt_flags is None:
        raise Arm64RunError(
            "the debootstrap second stage runs dpkg and maintainer scripts, which exec aarch64 "
            "binaries, so it needs the qemu-aarch64 binfmt_misc handler; it is not registered "
            "and could not be (try: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc "
            "&& update-binfmts --enable qemu-aarch64)"
        )
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        if _mounts_under(partial):
            raise Arm64RunError(f"{partial} has mounts under it: {_mounts_under(partial)}")
        log(f"removing the unfinished {partial} of an earlier run")
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log(f"debootstrap stage 1 (arm64 {SUITE} minbase from {mirror})")
    _run([
        "debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
        f"--include={DEBOOTSTRAP_INCLUDE}", SUITE, str(partial), mirror,
    ])
    # For the explicit `chroot DIR qemu-aarch64-static ...` way of running.
    shutil.copy2(QEMU, partial / "usr" / "bin" / "qemu-aarch64-static")
    interpreter = binfmt_aarch64_interpreter()
    if "F" not in binfmt_flags and interpreter:
        # Without the F flag the kernel looks the interpreter up inside the chroot.
        target = partial / interpreter.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(QEMU, target)
    log("debootstrap stage 2 under qemu-user (several minutes)")
    _run(["chroot", str(partial), "/debootstrap/debootstrap", "--second-stage"])
    (partial / BASE_MARKER).write_text(
        json.dumps({"suite": SUITE, "mirror": mirror, "include": DEBOOTSTRAP_INCLUDE,
                    "built_s": round(time.perf_counter() - start, 1),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
    )
    os.rename(partial, root)
    log(f"chroot ready at {root} after {time.perf_counter() - start:.0f} s")


def chroot_command(root, argv, binfmt):
    """`chroot root argv...`, through qemu-aarch64-static explicitly when binfmt is missing.

    The explicit form runs one aarch64 process; anything it execs would need binfmt, so
    only single-process steps (python3, pip --target with wheels only, uname) use it.
    """
    prefix = [] if binfmt else ["/usr/bin/qemu-aarch64-static"]
    # An absolute path: the command runs with the chroot's PATH, which has no /usr/sbin.
    return [shutil.which("chroot") or "/usr/sbin/chroot", str(root)] + prefix + list(argv)


def chroot_env(extra=None):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def ensure_litert(root, litert_version, binfmt):
    """pip-install ai-edge-litert==version and NumPy (aarch64 wheels) into the chroot (cached)."""
    site = f"/opt/rmtkd-litert-{litert_version}"
    if (root / site.lstrip("/") / ".complete").exists():
        log(f"ai-edge-litert {litert_version} already installed in the chroot")
        return site
    # Name resolution and this machine's CA bundle (TLS may be intercepted by an egress proxy
    # whose CA the chroot's Debian bundle lacks); on an ordinary host both are the same.
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / CA_IN_CHROOT.lstrip("/"))
    target = root / site.lstrip("/")
    if target.exists():
        shutil.rmtree(target)
    log(f"pip install ai-edge-litert=={litert_version} numpy (aarch64 wheels) in the chroot")
    _run(
        chroot_command(root, [
            "/usr/bin/python3", "-m", "pip", "install", "--no-cache-dir",
            "--disable-pip-version-check", "--no-input", "--only-binary=:all:",
            "--cert", CA_IN_CHROOT, "--target", site,
            f"ai-edge-litert=={litert_version}", "numpy",
        ], binfmt),
        env=chroot_env(),
    )
    (target / ".complete").write_text(f"ai-edge-litert=={litert_version}\n")
    return site


def run_in_chroot(root, site, binfmt, models, inputs, batch_size):
    """Copy models + inputs + arm64_predict.py in, run them on aarch64, return (outputs, info)."""
    run_dir = root / RUN_DIR_IN_CHROOT.lstrip("/")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    shutil.copy2(HERE / "arm64_predict.py", run_dir / "arm64_predict.py")
    np.save(run_dir / "inputs.npy", inputs)
    names = []
    for index, path in enumerate(models):
        name = f"model_{index}.tflite"
        shutil.copy2(path, run_dir / name)
        names.append(f"{RUN_DIR_IN_CHROOT}/{name}")

    uname_m = subprocess.run(
        chroot_command(root, ["/bin/uname", "-m"], binfmt),
        check=True, capture_output=True, text=True, env=chroot_env(),
    ).stdout.strip()
    log(f"running {len(models)} models on {len(inputs)} inputs inside the chroot (uname -m: {uname_m})")
    start = time.perf_counter()
    result = subprocess.run(
        chroot_command(root, [
            "/usr/bin/python3", f"{RUN_DIR_IN_CHROOT}/arm64_predict.py",
            "--inputs", f"{RUN_DIR_IN_CHROOT}/inputs.npy",
            "--out", f"{RUN_DIR_IN_CHROOT}/outputs.npz",
            "--batch-size", str(batch_size), *names,
        ], binfmt),
        capture_output=True, text=True, env=chroot_env({"PYTHONPATH": site}),
    )
    process_wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise Arm64RunError(
            f"the aarch64 run failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    info = json.loads(result.stdout.strip().splitlines()[-1])
    info["uname_m"] = uname_m
    info["process_wall_s"] = process_wall_s
    with np.load(run_dir / "outputs.npz") as data:
        outputs = [data[f"model_{index}"] for index in range(len(models))]
    return outputs, info


def elf_machine(root, path_inside):
    """The e_machine field of an ELF file in the chroot (0xB7 = AArch64, 0x3E = x86-64)."""
    path = root / path_inside.lstrip("/")
    for _ in range(40):  # follow symlinks inside the chroot, never out to the host's files
        if not path.is_symlink():
            break
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    with open(path, "rb") as fh:
        header = fh.read(20)
    if header[:4] != b"\x7fELF":
        raise Arm64RunError(f"{path} is not an ELF file")
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def debian_version(root):
    try:
        return (root / "etc" / "debian_version").read_text().strip()
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


def load_inputs(n_inputs):
    with np.load(SAMPLE) as data:
        x_test, y_test = data["x_test"], data["y_test"]
    if not 1 <= n_inputs <= len(x_test):
        raise ValueError(f"--n-inputs must be in [1, {len(x_test)}], got {n_inputs}")
    # Float 0..255: the CIFAR models rescale inside, and tflite_predict quantizes float inputs
    # for int8 input tensors (raw uint8 would be cast, not quantized).
    return x_test[:n_inputs].astype(np.float32), y_test[:n_inputs].astype(np.int64)


def host_predictions(models, inputs, batch_size):
    from rmtkd_tf.export import tflite_predict

    return [tflite_predict(path, inputs, batch_size=batch_size) for path in models]


def check_runner_matches_tflite_predict(models, inputs, batch_size, host_outputs):
    """Run arm64_predict.py with the host Python: it must reproduce tflite_predict exactly."""
    with tempfile.TemporaryDirectory(prefix="rmtkd_arm64_") as tmp:
        np.save(Path(tmp) / "inputs.npy", inputs)
        subprocess.run(
            [sys.executable, str(HERE / "arm64_predict.py"), "--inputs", f"{tmp}/inputs.npy",
             "--out", f"{tmp}/outputs.npz", "--batch-size", str(batch_size),
             *[str(p) for p in models]],
            check=True, capture_output=True, text=True,
        )
        with np.load(Path(tmp) / "outputs.npz") as data:
            for index, expected in enumerate(host_outputs):
                if not np.array_equal(data[f"model_{index}"], expected):
                    raise Arm64RunError(
                        f"arm64_predict.py on the host disagrees with tflite_predict for "
                        f"{models[index]}; the two code paths have drifted apart"
                    )
    return True


def tensor_details(path):
    from ai_edge_litert.interpreter import Interpreter

    runner_details = Interpreter(model_path=str(path)).get_signature_runner()
    (_, inp), = runner_details.get_input_details().items()
    (_, out), = runner_details.get_output_details().items()
    return inp, out


def compare(arm_output, host_output, labels, output_detail, atol):
    """Differences of the aarch64 output from the host's, and what the tolerance allows."""
    if arm_output.shape != host_output.shape:
        raise Arm64RunError(f"output shapes differ: arm64 {arm_output.shape}, host {host_output.shape}")
    diff = np.abs(arm_output.astype(np.float64) - host_output.astype(np.float64))
    max_abs_diff = float(diff.max())
    scale = float(output_detail["quantization"][0])
    quantized = np.dtype(output_detail["dtype"]) in (np.int8, np.uint8, np.int16) and scale
    # A quantized output may legitimately move by one step where two CPUs round a
    # requantization differently; a float output gets the absolute tolerance.
    tolerance = scale * 1.0001 if quantized else atol
    arm_top1, host_top1 = arm_output.argmax(-1), host_output.argmax(-1)
    return {
        "max_abs_diff_vs_host": max_abs_diff,
        "max_diff_in_quantization_steps": round(max_abs_diff / scale, 3) if quantized else None,
        "max_abs_host_output": float(np.abs(host_output).max()),
        "n_outputs_differing": int((diff > 0).sum()),
        "tolerance": tolerance,
        "within_tolerance": bool(max_abs_diff <= tolerance),
        "top1_agreement_vs_host": float((arm_top1 == host_top1).mean()),
        "top1_accuracy_arm64": float((arm_top1 == labels).mean()),
        "top1_accuracy_host": float((host_top1 == labels).mean()),
    }


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def display_path(path):
    path = Path(os.path.abspath(path))
    return str(path.relative_to(REPO)) if REPO in path.parents else str(path)


# ----------------------------------------------------------------------------------------------
# Demo models (for a first end-to-end check before the real ones exist)
# ----------------------------------------------------------------------------------------------


def make_demo_models(directory, epochs=2, seed=0):
    """Small teacher/student CNNs, trained briefly on the packaged sample, exported fp32 + int8."""
    import keras

    from rmtkd_tf.export import export_tflite

    keras.utils.set_random_seed(seed)
    with np.load(SAMPLE) as data:
        x_train, y_train = data["x_train"].astype(np.float32), data["y_train"]

    def cnn(widths, dense, name):
        inputs = keras.Input((32, 32, 3), name="image")
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        for width in widths:
            x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(dense, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, model in (("teacher", cnn((32, 64), 128, "demo_teacher")),
                        ("student", cnn((8, 16), 32, "demo_student"))):
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
        for precision in ("fp32", "int8"):
            path = directory / f"{role}_{precision}.tflite"
            export_tflite(model, path, precision=precision, representative_data=x_train[:200])
            paths.setdefault(role, []).append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", action="append", default=[], metavar="PATH",
                        help="teacher .tflite (repeat for fp32/int8/...)")
    parser.add_argument("--student", action="append", default=[], metavar="PATH",
                        help="student .tflite (repeat for fp32/int8/...)")
    parser.add_argument("--demo-models", metavar="DIR",
                        help="train and export two small demo models into DIR and run those")
    parser.add_argument("--models-label", help="what the models are, recorded in the JSON")
    parser.add_argument("--n-inputs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--atol", type=float, default=1e-3,
                        help="max abs difference allowed for float outputs (default 1e-3)")
    parser.add_argument("--chroot", default=os.environ.get("RMTKD_ARM64_CHROOT", DEFAULT_CHROOT))
    parser.add_argument("--mirror", help="Debian mirror (default: the one in /etc/apt/sources*)")
    parser.add_argument("--litert-version",
                        help="ai-edge-litert version for the chroot (default: the host's)")
    parser.add_argument("--exec", choices=("auto", "binfmt", "qemu"), default="auto",
                        help="how aarch64 processes are started: binfmt_misc, or 'qemu': "
                             "chroot DIR qemu-aarch64-static ... (pip and the run only; building "
                             "the chroot always needs binfmt). auto: binfmt if it can be enabled")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    if args.demo_models and (args.teacher or args.student):
        parser.error("give either --demo-models or --teacher/--student, not both")
    if not args.demo_models and not (args.teacher and args.student):
        parser.error("give at least one --teacher and one --student (or --demo-models DIR)")
    for path in args.teacher + args.student:
        if not os.path.isfile(path):
            parser.error(f"no .tflite file at {path!r}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv=None, command=None):
    """Run it; `command` is what the record says regenerates it (default: this module with `argv`)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    total_start = time.perf_counter()
    check_host()
    root = chroot_path(args.chroot)
    inputs, labels = load_inputs(args.n_inputs)

    if args.demo_models:
        log(f"training and exporting demo models into {args.demo_models}")
        paths = make_demo_models(args.demo_models)
        roles = [("teacher", p) for p in paths["teacher"]] + [("student", p) for p in paths["student"]]
        label = args.models_label or (
            "DEMO models, not the benchmark ones: two small CNNs (teacher conv32-conv64-dense128, "
            "student conv8-conv16-dense32) trained 2 epochs on the 1,500-image packaged CIFAR-10 "
            "sample, exported fp32 and int8 by rmtkd_tf.export.export_tflite"
        )
    else:
        roles = [("teacher", Path(p)) for p in args.teacher] + [("student", Path(p)) for p in args.student]
        label = args.models_label or "given with --teacher/--student"
    models = [path for _, path in roles]

    litert_version = args.litert_version or importlib.metadata.version("ai-edge-litert")
    log("host predictions with rmtkd_tf.export.tflite_predict")
    host_outputs = host_predictions(models, inputs, args.batch_size)
    runner_ok = check_runner_matches_tflite_predict(models, inputs, args.batch_size, host_outputs)

    binfmt_flags = binfmt_aarch64_flags() if args.exec == "qemu" else ensure_binfmt()
    binfmt = args.exec != "qemu" and binfmt_flags is not None
    if args.exec == "binfmt" and not binfmt:
        raise Arm64RunError("--exec binfmt: the qemu-aarch64 binfmt_misc handler is not enabled")
    log("aarch64 processes run through " + (
        f"binfmt_misc (flags {binfmt_flags!r})" if binfmt
        else "qemu-aarch64-static named explicitly"))
    mirror = args.mirror or debian_mirror()
    ensure_base_chroot(root, mirror, binfmt_flags)
    site = ensure_litert(root, litert_version, binfmt)
    arm_outputs, arm_info = run_in_chroot(root, site, binfmt, models, inputs, args.batch_size)

    python_elf = elf_machine(root, "/usr/bin/python3")
    if arm_info["machine"] != "aarch64" or python_elf != ELF_MACHINE_AARCH64:
        raise Arm64RunError(
            f"the chroot Python is not aarch64 (platform.machine {arm_info['machine']!r}, "
            f"ELF machine {python_elf:#x})"
        )

    results = []
    for index, ((role, path), arm, host) in enumerate(zip(roles, arm_outputs, host_outputs)):
        input_detail, output_detail = tensor_details(path)
        entry = {
            "role": role,
            "path": display_path(path),
            "sha256": sha256(path),
            "size_bytes": os.path.getsize(path),
            "input_dtype": np.dtype(input_detail["dtype"]).name,
            "output_dtype": np.dtype(output_detail["dtype"]).name,
        }
        entry.update(compare(arm, host, labels, output_detail, args.atol))
        entry["arm64_emulated_wall_s"] = round(arm_info["wall_s"][index], 3)
        results.append(entry)

    all_ok = all(entry["within_tolerance"] for entry in results)
    record = {
        "what": "exported .tflite models run on aarch64 (arm64 Debian chroot under qemu-user) "
                "with the aarch64 ai-edge-litert wheel from PyPI, outputs compared with the host's",
        "schema_version": 2,
        "kind": "arm64",
        "name": Path(args.out).stem,
        "command": command or "python -m benchmarks arm64 " + shlex.join(argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": {"label": label, "files": results},
        "inputs": {
            "source": f"{display_path(SAMPLE)} x_test[:{len(inputs)}]",
            "n": int(len(inputs)),
            "fed_as": "float32 pixel values 0..255 (models rescale inside; int8 inputs are "
                      "quantized from these with the input tensor's scale)",
            "batch_size": args.batch_size,
        },
        "all_within_tolerance": all_ok,
        "arm64": {
            "uname_m": arm_info["uname_m"],
            "platform_machine": arm_info["machine"],
            "python_elf_machine": f"{python_elf:#x} (AArch64)",
            "debian": debian_version(root),
            "python": arm_info["python"],
            "numpy": arm_info["numpy"],
            "ai_edge_litert": arm_info["ai_edge_litert"],
        },
        "host": {
            "uname_m": platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
            "predict": "rmtkd_tf.export.tflite_predict",
            "arm64_runner_equals_tflite_predict_on_host": runner_ok,
        },
        "emulation": {
            "qemu": _qemu_version(),
            "exec": f"chroot DIR /usr/bin/python3 ... via binfmt_misc qemu-aarch64 (flags {binfmt_flags})"
                    if binfmt else "chroot DIR /usr/bin/qemu-aarch64-static /usr/bin/python3 ...",
            "chroot": str(root),
        },
        "timing_note": TIMING_NOTE,
        "timing": {
            "note": TIMING_NOTE,
            "arm64_process_wall_s": round(arm_info["process_wall_s"], 3),
            "script_wall_s": round(time.perf_counter() - total_start, 1),
        },
    }
    from rmtkd_tf.io import write_json

    write_json(args.out, record)
    log(f"wrote {args.out}")
    for entry in results:
        log(f"{entry['path']}: max |arm64 - host| = {entry['max_abs_diff_vs_host']:.3g}, "
            f"top-1 agreement {entry['top1_agreement_vs_host']:.3f}"
            + ("" if entry["within_tolerance"] else "  OUT OF TOLERANCE"))
    return 0 if all_ok else 1


def _qemu_version():
    result = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Arm64RunError, ValueError) as error:
        print(f"arm64_qemu: error: {error}", file=sys.stderr)
        sys.exit(2)
