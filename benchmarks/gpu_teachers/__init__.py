"""The teachers' GPU routes (on a borrowed GPU machine that has PyTorch and JAX but no TensorFlow).

- BERT teachers with PyTorch: `python -m benchmarks train {gpu-prepare,gpu-torch,gpu-import}`;
  `train_torch.py` has no dependency on this repository, so it also runs alone on the GPU machine.
- keras.applications teachers on CIFAR-10 with Keras 3 on JAX: `train_keras_apps.py` (see its docstring);
  it imports nothing from this repository either, except in its `import` step, which runs here.
"""
