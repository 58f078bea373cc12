"""Plain values that the library and the `rmtkd-tf` command share: exit codes, precisions, exporters.

This module imports nothing. `cli.library_constants` executes it from its file, without importing the
`rmtkd_tf` package (whose `__init__` imports TensorFlow), so that `rmtkd-tf --help` stays fast and shows
the library's own values. The library reads them from where they belong: `rmtkd_tf.errors` (exit codes)
and `rmtkd_tf.export` (precisions, exporters).

>>> "int8" in CALIBRATED_PRECISIONS and set(CALIBRATED_PRECISIONS) <= set(PRECISIONS)
True
"""

# Exit codes of the `rmtkd-tf` command (rmtkd_tf.errors describes the cases).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# TFLite precisions of rmtkd_tf.export.export_tflite.
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-mixed", "int16x8", "int8")
# Precisions calibrated on representative data.
CALIBRATED_PRECISIONS = ("int8", "int16x8", "int8-mixed")
# Conversion paths: "auto" takes Keras' LiteRT exporter where it exists and can trace the model.
EXPORTERS = ("auto", "keras-litert", "saved-model")
