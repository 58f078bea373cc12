#!/usr/bin/env bash
# Make a local aarch64 "board" for testing the ssh benchmark path without hardware: an arm64 Debian root
# file system whose programs run under qemu-user (binfmt_misc), with Python 3 + numpy + ai-edge-litert, so
# that `rmtkd-tf bench --ssh` runs real aarch64 code on it (tests/test_ssh_board_e2e.py reaches it through
# an sshd chrooted into it, on loopback in a network namespace the test makes).
#
#   android_bench/make_arm64_board.sh ROOT [--benchmark-model AARCH64_BINARY]
#
# Needs root and Debian's debootstrap and qemu-user-static (apt-get install debootstrap qemu-user-static),
# plus the Debian archive and PyPI (this machine's pip downloads the aarch64 wheels of ai-edge-litert and
# numpy; LITERT_VERSION pins the former, PYTHON picks the Python whose pip is used). Idempotent: an existing ROOT
# with python3 skips the bootstrap. Registers qemu-aarch64 with binfmt_misc (with the F flag, so it also
# runs inside a chroot) when it is not registered yet. With --benchmark-model the binary is copied to
# ROOT/opt/benchmark_model. Then: RMTKD_ARM64_BOARD=ROOT pytest tests/test_ssh_board_e2e.py
# ROOT and every folder above it must be root-owned and not group/world-writable (sshd's ChrootDirectory
# rule), so use e.g. /srv/arm64-board, not a folder under /tmp.
set -euo pipefail

die() { echo "make_arm64_board.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: make_arm64_board.sh ROOT [--benchmark-model AARCH64_BINARY]"
ROOT=$1; shift
BINARY=
while [ $# -gt 0 ]; do
  case "$1" in
    --benchmark-model) BINARY=${2:-}; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, binfmt_misc)"
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
[ -n "$MIRROR" ] || die "set MIRROR to a Debian archive URL"

BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$conf" ] || die "$conf missing: apt-get install qemu-user-static"
  cat "$conf" > "$BINFMT/register"
fi
grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" || die "qemu-aarch64 is registered without the F flag: chroots cannot run it"

if [ ! -x "$ROOT/usr/bin/python3" ]; then
  command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The aarch64 wheels are downloaded by this machine's pip (its network and TLS settings), then installed
# offline inside the root.
if ! chroot "$ROOT" /opt/litert/bin/python -c "import ai_edge_litert, numpy" 2>/dev/null; then
  mkdir -p "$ROOT/opt/wheels-arm64"
  "${PYTHON:-python3}" -m pip download --quiet "ai-edge-litert${LITERT_VERSION:+==$LITERT_VERSION}" numpy \
    --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    --python-version "$(chroot "$ROOT" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    --implementation cp --only-binary=:all: -d "$ROOT/opt/wheels-arm64"
  chroot "$ROOT" python3 -m venv /opt/litert
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_CERT chroot "$ROOT" /opt/litert/bin/pip install --quiet --isolated \
    --no-index --find-links /opt/wheels-arm64 ai-edge-litert numpy
fi
# The ssh benchmark runs `python3 - ...`: make that the venv's Python for every login.
printf '#!/bin/sh\nexec /opt/litert/bin/python "$@"\n' > "$ROOT/usr/local/bin/python3"
chmod 755 "$ROOT/usr/local/bin/python3"
if [ -n "$BINARY" ]; then
  install -m 755 "$BINARY" "$ROOT/opt/benchmark_model"
fi
chroot "$ROOT" uname -m
chroot "$ROOT" python3 -c "import ai_edge_litert, numpy, platform; print('board python', platform.python_version(), 'ok')"
