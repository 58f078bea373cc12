"""Exported `.tflite` files on aarch64 under qemu-user: `python -m benchmarks arm64` (see README.md here)."""
