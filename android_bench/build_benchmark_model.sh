#!/usr/bin/env bash
# Build TFLite's C++ `benchmark_model` from the public sources (google-ai-edge/LiteRT, its `tflite/` CMake
# project, target `benchmark_model`), for this machine or cross-compiled for aarch64 Linux.
#
#   android_bench/build_benchmark_model.sh [--arch host|aarch64] [--work DIR] [--jobs N] [--xnnpack on|off]
#                                          [--protobuf source|system] [--configure-only] [--dry-run]
#
# LiteRT's tflite/ project takes 14 files from TensorFlow / XLA besides its own tree (TF_FILE_PATHS below: the
# Example protos and their CMakeLists, XLA's stats calculator, the fft2d and Philox/Eigen-convolution headers the
# kernels include); its tensorflow/compiler/mlir/lite sources are LiteRT's own tflite/converter/. Instead of the
# 2.4 GB TensorFlow checkout the CMake project would clone, this script assembles DIR/src: a copy of LiteRT's
# tflite/, those files at their TensorFlow paths, tensorflow/compiler/mlir/lite -> tflite/converter, and one
# patch (the proto CMakeLists declare their generated files under tensorflow/lite/ while protoc writes them, and
# the sources include them, under tflite/). CMake then runs with -DTENSORFLOW_SOURCE_DIR=DIR/src.
#
# Online (the default): clones LiteRT at $LITERT_REF, downloads those files from
# raw.githubusercontent.com/tensorflow/tensorflow/$TF_REF (default v2.21.0-rc0, the tag LiteRT's CMake pins),
# and lets CMake download each dependency at the commit pinned in tflite/tools/cmake/modules/*.cmake
# (abseil-cpp, eigen, flatbuffers, gemmlowp, ruy, farmhash, fft2d, cpuinfo, ml_dtypes, NEON_2_SSE, protobuf;
# with XNNPACK also XNNPACK, pthreadpool, FP16).
# Offline: set LITERT_SRC (a LiteRT checkout or a tree holding its tflite/), TF_FILES (a TensorFlow checkout,
# or any folder holding those files at the same relative paths) and DEPS_DIR, a folder holding one
# source tree per dependency named as CMake names it (abseil-cpp, eigen, flatbuffers, gemmlowp, ruy, farmhash,
# fft2d, cpuinfo, ml_dtypes, neon2sse, protobuf, xnnpack, fp16_headers, pthreadpool); each one found there is
# passed as FETCHCONTENT_SOURCE_DIR_<NAME> and nothing is downloaded for it (TFLite's OverridableFetchContent
# still downloads a LICENSE for a dependency whose folder has none: add one). A DEPS_DIR/COMMITS.txt, if
# present, is copied into SOURCES.txt (say there which commit each folder is).
# --protobuf system uses Debian's protobuf (apt-get install libprotobuf-dev protobuf-compiler: 3.21.12 on Debian 12)
# instead of compiling the pinned protobuf v3.21.9 (168 of the 749 steps): imported targets made at the top of
# the project (CMAKE_PROJECT_tensorflow-lite_INCLUDE) stand for it; host builds only.
# --configure-only stops after CMake's configure step.
#
# Output: DIR/build-<arch>/tools/benchmark/benchmark_model, and DIR/build-<arch>/SOURCES.txt recording the
# commit of every source tree used. The binary stays out of git (tens of MB): rerun this script to rebuild.
# It prints the TFLite 2.x text that `rmtkd-tf bench --tool benchmark_model --binary PATH` parses.
#
# --arch aarch64 cross-compiles with Debian's aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu) and
# runs the aarch64 protoc it builds under qemu-aarch64-static (apt-get install qemu-user-static); it needs a
# flatc for this machine in HOST_TOOLS_DIR (TFLITE_HOST_TOOLS_DIR): after a host build,
# `cmake --build DIR/build-host --target flatc` puts one in DIR/build-host/_deps/flatbuffers-build. (Not run to
# the end on the project's build machine: see tests/data/benchmark_model/x86_64/README.md.) Run the result on a
# board (`rmtkd-tf bench m.tflite --tool benchmark_model --binary B --ssh pi@board`) or
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
# Cost: 749 compile/link steps (protobuf with protoc, abseil, ruy, cpuinfo and every TFLite kernel) without
# XNNPACK; see tests/data/benchmark_model/README.md for the time it took here. `nice` keeps it from starving a
# shared machine.
set -euo pipefail

ARCH=host
WORK=${WORK:-$PWD/benchmark_model_build}
JOBS=${JOBS:-$(nproc)}
XNNPACK=off
DRY_RUN=0
CONFIGURE_ONLY=0
PROTOBUF=source
LITERT_REPO=${LITERT_REPO:-https://github.com/google-ai-edge/LiteRT}
# The LiteRT commit whose tflite/ CMake project and benchmark sources this project's parsers were read from.
LITERT_REF=${LITERT_REF:-f67457790c9c2ab67347d6fe53270e8d3df20868}
TF_REF=${TF_REF:-v2.21.0-rc0}
TF_FILE_PATHS=(tensorflow/core/example/CMakeLists.txt tensorflow/core/example/example.proto
               tensorflow/core/example/feature.proto tensorflow/core/util/stats_calculator.h
               tensorflow/core/util/stat_summarizer_options.h third_party/fft2d/fft.h third_party/fft2d/fft2d.h
               third_party/xla/xla/tsl/util/stats_calculator.cc third_party/xla/xla/tsl/util/stats_calculator.h
               third_party/xla/xla/tsl/util/stat_summarizer_options.h
               third_party/xla/xla/tsl/lib/random/philox_random.h
               third_party/xla/xla/tsl/lib/random/random_distributions_utils.h
               third_party/xla/xla/tsl/framework/convolution/eigen_spatial_convolutions-inl.h
               third_party/xla/xla/tsl/framework/convolution/eigen_convolution_helpers.h)

die() { echo "build_benchmark_model.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:-}; shift 2 ;;
    --work) WORK=${2:-}; shift 2 ;;
    --jobs) JOBS=${2:-}; shift 2 ;;
    --xnnpack) XNNPACK=${2:-}; shift 2 ;;
    --protobuf) PROTOBUF=${2:-}; shift 2 ;;
    --configure-only) CONFIGURE_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
case "$ARCH" in host|aarch64) ;; *) die "--arch must be host or aarch64; got '$ARCH'" ;; esac
case "$XNNPACK" in on|off) ;; *) die "--xnnpack must be on or off; got '$XNNPACK'" ;; esac
case "$JOBS" in ''|*[!0-9]*|0) die "--jobs must be a positive integer; got '$JOBS'" ;; esac
case "$PROTOBUF" in source|system) ;; *) die "--protobuf must be source or system; got '$PROTOBUF'" ;; esac
[ "$PROTOBUF" = source ] || [ "$ARCH" = host ] || die "--protobuf system is for host builds only"

run() {  # print, then run unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$DRY_RUN" -eq 0 ]; then "$@"; fi
}

for tool in cmake git; do
  command -v "$tool" >/dev/null || die "$tool not found: install it (Debian: apt-get install $tool)"
done
if [ "$PROTOBUF" = system ]; then
  command -v protoc >/dev/null && [ -f /usr/include/google/protobuf/message.h ] \
    || die "--protobuf system needs protoc and the protobuf headers (apt-get install protobuf-compiler libprotobuf-dev)"
fi
if [ "$ARCH" = aarch64 ]; then
  command -v aarch64-linux-gnu-g++ >/dev/null || die "aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu)"
  [ -n "${HOST_TOOLS_DIR:-}" ] || die "--arch aarch64 needs a host flatc: set HOST_TOOLS_DIR to its folder (see --help)"
fi
if [ -n "${TF_FILES:-}" ] && [ "$DRY_RUN" -eq 0 ]; then
  for f in "${TF_FILE_PATHS[@]}"; do [ -f "$TF_FILES/$f" ] || die "TF_FILES has no $f (see --help)"; done
elif [ -z "${TF_FILES:-}" ]; then
  command -v curl >/dev/null || die "curl not found: install it, or set TF_FILES (see --help)"
fi

LITERT=${LITERT_SRC:-$WORK/LiteRT}
if [ -z "${LITERT_SRC:-}" ] && [ ! -d "$LITERT/.git" ]; then
  run mkdir -p "$WORK"
  run git clone --filter=blob:none "$LITERT_REPO" "$LITERT"
  run git -C "$LITERT" checkout "$LITERT_REF"
fi
[ "$DRY_RUN" -eq 1 ] || [ -f "$LITERT/tflite/CMakeLists.txt" ] || die "no tflite/CMakeLists.txt under $LITERT (not a LiteRT checkout)"

# The assembled source tree (see the header): LiteRT's tflite/ + six TensorFlow files + one patch.
SRC=$WORK/src
run rm -rf "$SRC"
run mkdir -p "$SRC/tensorflow/compiler/mlir"
run cp -a "$LITERT/tflite" "$SRC/tflite"
run ln -s ../../../tflite/converter "$SRC/tensorflow/compiler/mlir/lite"
run sed -i 's#${CMAKE_BINARY_DIR}/tensorflow/lite/#${CMAKE_BINARY_DIR}/tflite/#' \
    "$SRC/tflite/profiling/proto/CMakeLists.txt" "$SRC/tflite/tools/benchmark/proto/CMakeLists.txt"
for f in "${TF_FILE_PATHS[@]}"; do
  run mkdir -p "$SRC/$(dirname "$f")"
  if [ -n "${TF_FILES:-}" ]; then
    run cp -p "$TF_FILES/$f" "$SRC/$f"
  else
    run curl -fsSL -o "$SRC/$f" "https://raw.githubusercontent.com/tensorflow/tensorflow/$TF_REF/$f"
  fi
done

BUILD=$WORK/build-$ARCH
ARGS=(-S "$SRC/tflite" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTFLITE_ENABLE_BENCHMARK_MODEL=ON
      -DTFLITE_ENABLE_XNNPACK="$( [ "$XNNPACK" = on ] && echo ON || echo OFF )" -DTFLITE_ENABLE_GPU=OFF
      -DTENSORFLOW_SOURCE_DIR="$SRC")
if command -v ninja >/dev/null; then ARGS+=(-G Ninja); fi
if [ "$PROTOBUF" = system ]; then
  run mkdir -p "$WORK"
  # Imported targets for the system libprotobuf and protoc, made before tflite's protobuf.cmake runs: it then
  # skips add_subdirectory(protobuf) (it checks for protobuf::libprotobuf) and its compiler, named `protoc`, is
  # the system one in the proto rules' COMMAND and DEPENDS alike.
  [ "$DRY_RUN" -eq 1 ] || printf '%s\n' \
    'find_program(SYSTEM_PROTOC protoc REQUIRED)' \
    'find_library(SYSTEM_LIBPROTOBUF protobuf REQUIRED)' \
    'find_path(SYSTEM_PROTOBUF_INCLUDE google/protobuf/message.h REQUIRED)' \
    'add_library(protobuf::libprotobuf UNKNOWN IMPORTED GLOBAL)' \
    'set_target_properties(protobuf::libprotobuf PROPERTIES IMPORTED_LOCATION "${SYSTEM_LIBPROTOBUF}"' \
    '                      INTERFACE_INCLUDE_DIRECTORIES "${SYSTEM_PROTOBUF_INCLUDE}")' \
    'add_executable(protoc IMPORTED GLOBAL)' \
    'set_target_properties(protoc PROPERTIES IMPORTED_LOCATION "${SYSTEM_PROTOC}")' \
    > "$WORK/system_protobuf.cmake"
  ARGS+=(-DCMAKE_PROJECT_tensorflow-lite_INCLUDE="$WORK/system_protobuf.cmake")
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
  # The build runs the protoc it compiles (for aarch64) to generate the .pb.cc files: through qemu-user.
  command -v qemu-aarch64-static >/dev/null && ARGS+=("-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64-static;-L;/usr/aarch64-linux-gnu")
  ARGS+=(-DTFLITE_HOST_TOOLS_DIR="$HOST_TOOLS_DIR")
fi

run cmake "${ARGS[@]}"
[ "$CONFIGURE_ONLY" -eq 0 ] || exit 0
run nice -n 19 cmake --build "$BUILD" --target benchmark_model -j "$JOBS"

if [ "$DRY_RUN" -eq 0 ]; then
  {
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) for $ARCH, XNNPACK $XNNPACK, $(cmake --version | head -1), $("${CXX:-c++}" --version | head -1)"
    [ "$PROTOBUF" = source ] || echo "protobuf: the system's, $(protoc --version)"
    if [ -d "$LITERT/.git" ]; then echo "LiteRT $(git -C "$LITERT" rev-parse HEAD)"
    else echo "LiteRT tree $LITERT (not a git checkout; LITERT_REF says $LITERT_REF)"; fi
    echo "TensorFlow files from ${TF_FILES:-https://raw.githubusercontent.com/tensorflow/tensorflow/$TF_REF} (sha256):"
    (cd "$SRC" && sha256sum "${TF_FILE_PATHS[@]}")
    if [ -n "${DEPS_DIR:-}" ]; then
      echo "dependencies from $DEPS_DIR:"
      for dir in "$DEPS_DIR"/*/; do
        [ -d "$dir/.git" ] && echo "$(basename "$dir") $(git -C "$dir" rev-parse HEAD)"
      done
      [ -f "$DEPS_DIR/COMMITS.txt" ] && cat "$DEPS_DIR/COMMITS.txt"
    fi
    echo "dependencies CMake fetched (pinned in tflite/tools/cmake/modules/*.cmake):"
    for dir in "$BUILD"/*/; do
      [ -d "$dir/.git" ] && echo "$(basename "$dir") $(git -C "$dir" rev-parse HEAD)"
    done
    true
  } > "$BUILD/SOURCES.txt"
  BIN=$(find "$BUILD" -type f -name benchmark_model -perm -u+x | head -1)
  [ -n "$BIN" ] || die "the build finished but no benchmark_model binary was found under $BUILD"
  echo "benchmark_model: $BIN"
  echo "sources: $BUILD/SOURCES.txt"
fi
