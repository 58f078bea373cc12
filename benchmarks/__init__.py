"""The benchmarks of rmtkd-tf, one package with one driver: `python -m benchmarks --help` (see `driver`).

Modules: `driver` (command line and task configs in `configs/`), `compare` (the `compress` and `compare`
runs), `floor`, `report`, `timing` (the one latency protocol), `schema` (the one result schema and the
reader of every committed result), `render` (the one BENCHMARKS.md renderer), `plot`, the teacher
trainers (`train_cifar10`, `train_bert`, `teacher_split`, `gpu_teachers`) and `arm64_qemu`.
"""
