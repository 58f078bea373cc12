"""`--precision auto`: export the smallest `.tflite` whose accuracy stays within `max_drop` of the Keras model.

The precisions are tried in `AUTO_ORDER`, most integer (and smallest, or what integer-only NPUs and DSPs
run) first: `int8 < int16x8 < int8-mixed < int8-dynamic < fp16 < fp32`. Each candidate is converted in
memory and scored on the same validation examples as the Keras model; the drop is the paired one of
`rmtkd_tf.acceptance` (only the examples the two score differently count), and a candidate is accepted
when the upper bound of its `confidence` interval is within `max_drop` points, the rule compression
steps are accepted by. The first accepted candidate is written; every candidate tried is reported
(precision, exporter, size, accuracies, drop and its bound, accepted, or why it failed to convert).
When none is accepted, fp32 is written anyway (it is the model itself, up to float rounding) and the
result says so (`accepted` is False); a validation set too small to confirm even a lossless file ends
there too, as a compression step would.

>>> import os, tempfile, numpy as np, keras
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).normal(size=(4000, 8)).astype("float32")
>>> y = model.predict(x, verbose=0).argmax(-1)
>>> result = export_smallest_accurate(model, os.path.join(tempfile.mkdtemp(), "m.tflite"), x, y,
...                                   representative_data=x[:200], max_drop=2.0)
>>> result.report.precision, result.accepted, [trial.precision for trial in result.trials]
('int8', True, ['int8'])
"""

from __future__ import annotations

import dataclasses
import time

from rmtkd_tf.acceptance import accept_drop, paired_accuracy_drop
from rmtkd_tf.export import (
    CALIBRATED_PRECISIONS,
    ExportError,
    FlexOpsError,
    convert_tflite,
    keras_predictions,
    per_example_correct,
    write_tflite,
)

AUTO_ORDER = ("int8", "int16x8", "int8-mixed", "int8-dynamic", "fp16", "fp32")


@dataclasses.dataclass
class PrecisionTrial:
    """One candidate precision: its conversion, size and paired accuracy drop on validation data.

    `drop` / `drop_upper` are in accuracy points (Keras minus `.tflite`, and the upper bound of its
    interval); `error` says why it did not convert (then the other numbers are None).
    """

    precision: str
    exporter: str | None = None
    size_bytes: int | None = None
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    drop: float | None = None
    drop_upper: float | None = None
    accepted: bool = False
    error: str | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class AutoExportResult:
    """What `export_smallest_accurate` wrote (`report`) and every candidate it tried (`trials`)."""

    report: object
    trials: list
    accepted: bool
    max_drop: float
    confidence: float
    n_validation: int

    def to_dict(self):
        """JSON-serializable: the chosen precision, the rule and the trials."""
        return {
            "chosen": self.report.precision,
            "accepted": self.accepted,
            "max_drop": self.max_drop,
            "confidence": self.confidence,
            "validation_examples": self.n_validation,
            "tried": [dataclasses.asdict(trial) for trial in self.trials],
        }

    def format_table(self):
        """A plain-text table of the trials (one row per precision tried)."""
        return format_trials(self.trials, self.max_drop, self.confidence, self.n_validation)


def format_trials(trials, max_drop, confidence, n_validation):
    """The trials as an aligned text table, sizes in KiB (1024 bytes).

    >>> print(format_trials([PrecisionTrial("int8", "keras-litert", 2048, 0.9, 0.85, 5.0, 7.1)], 1.0, 0.95, 100))
    precision  exporter      size KiB  keras acc  tflite acc  drop (pts)  upper  accepted
    int8       keras-litert       2.0      90.00       85.00       +5.00   7.10  no
    (auto: smallest precision whose validation drop's 95% upper bound is <= 1 pt; 100 validation examples)
    """
    header = ("precision", "exporter", "size KiB", "keras acc", "tflite acc", "drop (pts)", "upper", "accepted")
    rows = []
    for trial in trials:
        if trial.error is not None:
            rows.append((trial.precision, trial.exporter or "-", "-", "-", "-", "-", "-", "failed: " + trial.error))
            continue
        rows.append((
            trial.precision, trial.exporter, f"{trial.size_bytes / 1024:.1f}", f"{100 * trial.keras_accuracy:.2f}",
            f"{100 * trial.tflite_accuracy:.2f}", f"{trial.drop:+.2f}", f"{trial.drop_upper:.2f}",
            "yes" if trial.accepted else "no",
        ))
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header) - 1)]
    lines = []
    for row in [header] + rows:
        cells = [str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [str(row[-1])]))
    lines.append(
        f"(auto: smallest precision whose validation drop's {100 * confidence:.0f}% upper bound is <= "
        f"{max_drop:g} pt; {n_validation} validation examples)"
    )
    return "\n".join(lines)


def export_smallest_accurate(
    model,
    path,
    validation_inputs,
    validation_labels,
    representative_data=None,
    max_drop=1.0,
    confidence=0.95,
    candidates=AUTO_ORDER,
    verify_inputs=None,
    verify_labels=None,
    max_representative_samples=200,
    exporter="auto",
    log=None,
):
    """Write the first precision of `candidates` whose `.tflite` is within `max_drop` points of `model`.

    Args:
        model: the Keras model.
        path: destination `.tflite` (written atomically, once, with the chosen precision).
        validation_inputs, validation_labels: the examples (and integer or one-hot labels) both models
            are scored on; any input form `rmtkd_tf.export.export_tflite` takes.
        representative_data: calibration inputs; without them the calibrated precisions
            (int8, int16x8, int8-mixed) are skipped (reported as failed).
        max_drop: accuracy points the `.tflite` may lose (upper confidence bound).
        confidence: two-sided level of the drop's interval.
        candidates: precisions to try, in order of preference.
        verify_inputs, verify_labels: optional other inputs (e.g. the test split) the written file is
            verified on, as `export_tflite` does.
        max_representative_samples, exporter: as in `export_tflite`.
        log: optional callable for one progress line per candidate.

    Returns:
        An `AutoExportResult`.

    Raises:
        FlexOpsError: the model needs Flex / custom ops (at every precision).
        ExportError: no candidate converted.
    """
    start = time.perf_counter()
    if not candidates:
        raise ValueError("candidates is empty")
    if validation_labels is None:
        raise ValueError("precision 'auto' needs validation labels to measure the accuracy drop")
    trials, keras_outputs, chosen, fallback = [], None, None, None
    for precision in candidates:
        trial = PrecisionTrial(precision)
        trials.append(trial)
        t0 = time.perf_counter()
        if precision in CALIBRATED_PRECISIONS and representative_data is None:
            trial.error = "no calibration data"
            continue
        try:
            conversion = convert_tflite(
                model, precision, representative_data, max_representative_samples, exporter
            )
        except FlexOpsError:
            raise
        except ExportError as error:
            trial.error = str(error)
            trial.seconds = round(time.perf_counter() - t0, 1)
            if log:
                log(f"auto precision: {precision} does not convert: {error}")
            continue
        if keras_outputs is None:
            keras_outputs = keras_predictions(model, conversion, validation_inputs)
        keras_correct, tflite_correct = per_example_correct(
            conversion, validation_inputs, validation_labels, keras_outputs
        )
        estimate = paired_accuracy_drop(keras_correct, tflite_correct, confidence)
        trial.exporter = conversion.exporter
        trial.size_bytes = len(conversion.flatbuffer)
        trial.keras_accuracy = float(keras_correct.mean())
        trial.tflite_accuracy = float(tflite_correct.mean())
        trial.drop, trial.drop_upper = estimate.drop, estimate.upper
        trial.accepted = accept_drop(estimate, max_drop)
        trial.seconds = round(time.perf_counter() - t0, 1)
        if log:
            log(f"auto precision: {precision} {trial.size_bytes / 1024:.0f} KiB, drop {trial.drop:+.2f} pts "
                f"(upper {trial.drop_upper:.2f}): {'accepted' if trial.accepted else 'rejected'}")
        if precision == "fp32":
            fallback = conversion
        if trial.accepted:
            chosen = conversion
            break
    if chosen is None and fallback is None and "fp32" not in candidates:
        try:
            fallback = convert_tflite(model, "fp32", exporter=exporter)
        except ExportError as error:
            raise ExportError(f"no precision converted; fp32: {error}") from None
    if chosen is None and fallback is None:
        raise ExportError("no precision converted: " + "; ".join(f"{t.precision}: {t.error}" for t in trials))
    report = write_tflite(model, chosen or fallback, path, verify_inputs, verify_labels, start=start)
    return AutoExportResult(
        report=report,
        trials=trials,
        accepted=chosen is not None,
        max_drop=float(max_drop),
        confidence=float(confidence),
        n_validation=int(len(keras_outputs)) if keras_outputs is not None else 0,
    )
