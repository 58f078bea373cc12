"""The teachers' GPU routes (on a borrowed GPU machine that has PyTorch and JAX but no TensorFlow).

- BERT teachers with PyTorch: `python -m benchmarks train {gpu-prepare,gpu-torch,gpu-import}`;
  `train_torch.py` needs nothing of this repository but its siblings `shard_pack.py` and `script_command.py`
  (standard library only), so the three run alone on the GPU machine.
- keras.applications teachers on CIFAR-10 with Keras 3 on JAX: `train_keras_apps.py` (see its docstring);
  it imports nothing from this repository either but those two siblings, except in its `import` step, which runs here.
"""
