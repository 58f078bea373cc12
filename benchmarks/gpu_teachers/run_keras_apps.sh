#!/usr/bin/env bash
# On the GPU machine (device tool `run`, carry [".gpu_teachers/keras_apps", ".whl"]), from the repository root:
#   bash benchmarks/gpu_teachers/run_keras_apps.sh train [--max-seconds 400] [MODEL ...]
#   bash benchmarks/gpu_teachers/run_keras_apps.sh pack cifar10_resnet50 cifar10_mobilenetv2 cifar10_efficientnetb0
# Installs the three wheels the JAX image lacks (keras, namex, optree) into /tmp/site, then runs
# train_keras_apps.py with KERAS_BACKEND=jax; `pack` copies the named models' shards to $OUT.
# Prepare them here first: see the docstring of benchmarks/gpu_teachers/train_keras_apps.py.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, keras.backend.backend())"
command=$1; shift
if [ "$command" = pack ]; then
    exec python3 benchmarks/gpu_teachers/train_keras_apps.py pack --work /tmp/gk --out "$OUT" "$@"
fi
python3 benchmarks/gpu_teachers/train_keras_apps.py "$command" --work /tmp/gk "$@" 2>&1 | tee /tmp/gk.log
[ -n "${OUT:-}" ] && cp /tmp/gk.log "$OUT/train.log" || true
