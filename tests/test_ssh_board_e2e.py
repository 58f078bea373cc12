"""`rmtkd-tf bench --ssh` end to end against a local aarch64 "board": real ssh, real aarch64 code.

The board is an arm64 Debian root made by android_bench/make_arm64_board.sh (its programs run under
qemu-user through binfmt_misc). The test starts an sshd chrooted into it, listening on 127.0.0.1 inside a
network namespace it makes (`unshare -n`), and runs the CLI in that namespace, so nothing outside sees the
port. Set RMTKD_ARM64_BOARD=ROOT to run it; it skips, saying what is missing, otherwise.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_bench_host import build_tiny_tflite_models

REPO = Path(__file__).resolve().parent.parent
BOARD = os.environ.get("RMTKD_ARM64_BOARD", "")


def _missing() -> str | None:
    if not BOARD:
        return "RMTKD_ARM64_BOARD is not set (make one with android_bench/make_arm64_board.sh)"
    if not os.path.isfile(os.path.join(BOARD, "usr/local/bin/python3")):
        return f"{BOARD} is not a board made by android_bench/make_arm64_board.sh"
    if os.geteuid() != 0:
        return "needs root (sshd with ChrootDirectory, unshare -n)"
    for tool in ("sshd", "ssh", "scp", "ssh-keygen", "unshare", "ip"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} not installed"
    if not os.path.exists("/proc/sys/fs/binfmt_misc/qemu-aarch64"):
        return "qemu-aarch64 is not registered with binfmt_misc"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def sshd_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sshd")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    for name in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "id.pub").read_text())
    config = tmp / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", "Port 2222", f"HostKey {tmp / 'host_key'}", f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        f"ChrootDirectory {BOARD}", "Subsystem sftp internal-sftp", ""]))
    return tmp


def bench_on_board(sshd_config, args, output):
    """Run `rmtkd-tf bench ARGS --ssh root@127.0.0.1` in a fresh network namespace with the board's sshd."""
    tmp = sshd_config
    cli = [sys.executable, "-m", "cli.main", "bench", *args, "--ssh", "root@127.0.0.1", "--ssh-port", "2222",
           "--ssh-option", f"IdentityFile={tmp / 'id'}", "--ssh-option", "StrictHostKeyChecking=no",
           "--ssh-option", "UserKnownHostsFile=/dev/null", "--ssh-option", "LogLevel=ERROR", "-o", str(output)]
    script = (f"ip link set lo up && /usr/sbin/sshd -f {tmp / 'sshd_config'} -E {tmp / 'sshd.log'} || exit 97\n"
              + " ".join(f"'{word}'" for word in cli) + "\nrc=$?\nkill $(cat " + str(tmp / "sshd.pid") + ")\nexit $rc\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr + (tmp / "sshd.log").read_text()
    return json.loads(Path(output).read_text()), done.stdout


def test_interpreter_over_ssh_on_the_arm64_board(sshd_config, tmp_path):
    float_model, int8_model = build_tiny_tflite_models(tmp_path)
    report, stdout = bench_on_board(sshd_config, [str(float_model), "--vs", str(int8_model), "--runs", "5",
                                                  "--warmup", "1"], tmp_path / "report.json")
    for side in ("a", "b"):
        result = report[side]
        assert (result["transport"], result["runner"], result["runs"]) == ("ssh", "litert-python", 5)
        assert result["device"]["machine"] == "aarch64" and result["device"]["serial"] == "root@127.0.0.1"
        assert result["latency_ms"]["min"] > 0
    assert report["method"]["schedule"] == "sequential ssh runs: MODEL then OTHER"
    assert "a/b: median latency" in stdout


def test_benchmark_model_over_ssh_on_the_arm64_board(sshd_config, tmp_path):
    binary = os.path.join(BOARD, "opt/benchmark_model")
    if not os.path.isfile(binary):
        pytest.skip("no aarch64 benchmark_model on the board (make_arm64_board.sh --benchmark-model BINARY)")
    float_model, _ = build_tiny_tflite_models(tmp_path)
    report, _ = bench_on_board(sshd_config, [str(float_model), "--tool", "benchmark_model", "--binary-on-device",
                                             "/opt/benchmark_model", "--runs", "5", "--warmup", "1"],
                               tmp_path / "report.json")
    assert (report["runner"], report["transport"], report["device"]["machine"]) == ("benchmark_model", "ssh", "aarch64")
    assert report["runs"] >= 5
