#!/usr/bin/env bash
# Build TFLite's C++ `benchmark_model` from the public sources (google-ai-edge/LiteRT, its `tflite/` CMake
# project, target `benchmark_model`), for this machine or cross-compiled for aarch64 Linux.
#
#   android_bench/build_benchmark_model.sh [--arch host|aarch64] [--work DIR] [--jobs N] [--xnnpack on|off]
#                                          [--dry-run]
#
# Online (the default): clones LiteRT at $LITERT_REF into DIR/LiteRT and lets the CMake project download
# what it declares itself: TensorFlow v2.21.0-rc0 (FetchContent in tflite/CMakeLists.txt) and abseil-cpp,
# eigen, flatbuffers, gemmlowp, ruy, farmhash, fft2d, cpuinfo, ml_dtypes, NEON_2_SSE, protobuf (and with
# XNNPACK: XNNPACK, pthreadpool, FP16), each at the commit pinned in tflite/tools/cmake/modules/*.cmake.
# Offline: set LITERT_SRC (a LiteRT checkout), TENSORFLOW_SRC (a TensorFlow checkout) and DEPS_DIR, a folder
# holding one checkout per dependency named as CMake names it (abseil-cpp, eigen, flatbuffers, gemmlowp,
# ruy, farmhash, fft2d, cpuinfo, ml_dtypes, neon2sse, protobuf, xnnpack, fp16_headers, pthreadpool); each one found
# there is passed as FETCHCONTENT_SOURCE_DIR_<NAME> and nothing is downloaded for it (TFLite's
# OverridableFetchContent still downloads a LICENSE for a dependency whose folder has none: add one).
#
# Output: DIR/build-<arch>/tools/benchmark/benchmark_model, and DIR/build-<arch>/SOURCES.txt recording the
# commit of every source tree used. The binary stays out of git (tens of MB): rerun this script to rebuild.
# It prints the TFLite 2.x text that `rmtkd-tf bench --tool benchmark_model --binary PATH` parses.
#
# --arch aarch64 cross-compiles with Debian's aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu);
# run the result on a board (`rmtkd-tf bench m.tflite --tool benchmark_model --binary B --ssh pi@board`) or
# here under qemu-user (apt-get install qemu-user-static; qemu-aarch64-static -L /usr/aarch64-linux-gnu B ...).
#
# Android (arm64-v8a) needs the NDK, which this script does not fetch. Either build with it:
#   cmake -S LiteRT/tflite -B build-android -DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake \
#         -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM=android-26 -DTFLITE_ENABLE_BENCHMARK_MODEL=ON
#   cmake --build build-android --target benchmark_model -j"$(nproc)"
# or take TFLite's official nightly prebuilt:
#   https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/android_aarch64_benchmark_model
# and pass it as `rmtkd-tf bench m.tflite --adb --binary android_aarch64_benchmark_model`.
#
# Cost: a full build compiles protobuf, abseil and every TFLite kernel (several hundred C++ files; not
# timed here: it was never run to the end on the project's build machine, which has no TensorFlow source).
# `nice` keeps it from starving a shared machine.
set -euo pipefail

ARCH=host
WORK=${WORK:-$PWD/benchmark_model_build}
JOBS=${JOBS:-$(nproc)}
XNNPACK=off
DRY_RUN=0
LITERT_REPO=${LITERT_REPO:-https://github.com/google-ai-edge/LiteRT}
# The LiteRT commit whose tflite/ CMake project and benchmark sources this project's parsers were read from.
LITERT_REF=${LITERT_REF:-f67457790c9c2ab67347d6fe53270e8d3df20868}

die() { echo "build_benchmark_model.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:-}; shift 2 ;;
    --work) WORK=${2:-}; shift 2 ;;
    --jobs) JOBS=${2:-}; shift 2 ;;
    --xnnpack) XNNPACK=${2:-}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$ARCH" in host|aarch64) ;; *) die "--arch must be host or aarch64; got '$ARCH'" ;; esac
case "$XNNPACK" in on|off) ;; *) die "--xnnpack must be on or off; got '$XNNPACK'" ;; esac
case "$JOBS" in ''|*[!0-9]*|0) die "--jobs must be a positive integer; got '$JOBS'" ;; esac

run() {  # print, then run unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

for tool in cmake git; do
  command -v "$tool" >/dev/null || die "$tool not found: install it (Debian: apt-get install $tool)"
done
if [ "$ARCH" = aarch64 ]; then
  command -v aarch64-linux-gnu-g++ >/dev/null || die "aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu)"
fi

SRC=${LITERT_SRC:-$WORK/LiteRT}
if [ -z "${LITERT_SRC:-}" ] && [ ! -d "$SRC/.git" ]; then
  run mkdir -p "$WORK"
  run git clone --filter=blob:none "$LITERT_REPO" "$SRC"
  run git -C "$SRC" checkout "$LITERT_REF"
fi
[ "$DRY_RUN" -eq 1 ] || [ -f "$SRC/tflite/CMakeLists.txt" ] || die "no tflite/CMakeLists.txt under $SRC (not a LiteRT checkout)"

BUILD=$WORK/build-$ARCH
ARGS=(-S "$SRC/tflite" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTFLITE_ENABLE_BENCHMARK_MODEL=ON
      -DTFLITE_ENABLE_XNNPACK="$( [ "$XNNPACK" = on ] && echo ON || echo OFF )" -DTFLITE_ENABLE_GPU=OFF)
if command -v ninja >/dev/null; then ARGS+=(-G Ninja); fi
if [ -n "${TENSORFLOW_SRC:-}" ]; then
  ARGS+=(-DTENSORFLOW_SOURCE_DIR="$TENSORFLOW_SRC")
fi
if [ -n "${DEPS_DIR:-}" ]; then
  ARGS+=(-DFETCHCONTENT_FULLY_DISCONNECTED=ON)
  for dep in abseil-cpp eigen flatbuffers gemmlowp ruy farmhash fft2d cpuinfo ml_dtypes neon2sse protobuf xnnpack fp16_headers pthreadpool; do
    if [ -d "$DEPS_DIR/$dep" ]; then
      upper=$(echo "$dep" | tr '[:lower:]' '[:upper:]')
      ARGS+=(-DFETCHCONTENT_SOURCE_DIR_"$upper"="$DEPS_DIR/$dep")
    fi
  done
  [ -d "$DEPS_DIR/pthreadpool" ] && ARGS+=(-DPTHREADPOOL_SOURCE_DIR="$DEPS_DIR/pthreadpool")
  [ -d "$DEPS_DIR/fp16_headers" ] && ARGS+=(-DFP16_SOURCE_DIR="$DEPS_DIR/fp16_headers")
fi
if [ "$ARCH" = aarch64 ]; then
  ARGS+=(-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
         -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++
         -DCMAKE_C_FLAGS=-funsafe-math-optimizations -DCMAKE_CXX_FLAGS=-funsafe-math-optimizations)
fi

run cmake "${ARGS[@]}"
run nice -n 19 cmake --build "$BUILD" --target benchmark_model -j "$JOBS"

if [ "$DRY_RUN" -eq 0 ]; then
  {
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) for $ARCH, XNNPACK $XNNPACK, $(cmake --version | head -1)"
    echo "LiteRT $(git -C "$SRC" rev-parse HEAD)"
    for dir in "${TENSORFLOW_SRC:-$BUILD/tensorflow-src}" "$BUILD"/*-src "$BUILD"/abseil-cpp "$BUILD"/eigen "$BUILD"/flatbuffers \
               ${DEPS_DIR:+"$DEPS_DIR"/*}; do
      [ -d "$dir/.git" ] && echo "$(basename "$dir") $(git -C "$dir" rev-parse HEAD)"
    done
  } > "$BUILD/SOURCES.txt"
  BIN=$(find "$BUILD" -type f -name benchmark_model -perm -u+x | head -1)
  [ -n "$BIN" ] || die "the build finished but no benchmark_model binary was found under $BUILD"
  echo "benchmark_model: $BIN"
  echo "sources: $BUILD/SOURCES.txt"
fi
