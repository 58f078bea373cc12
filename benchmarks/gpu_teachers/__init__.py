"""The BERT teachers' GPU route (PyTorch on a borrowed GPU): `python -m benchmarks train {gpu-prepare,gpu-torch,gpu-import}`.

`train_torch.py` has no dependency on this repository, so it also runs alone on the GPU machine.
"""
