"""What the CLI runs: load a model and its data, analyze or compress, write outputs.

Kept separate from `cli/` so notebooks and scripts can call the same steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.rows import concat_rows, n_rows, take_rows


@dataclasses.dataclass
class Task:
    model: object
    model_path: Path | None  # None for a model given in memory
    data: object  # rmtkd_tf.compression.CompressionData
    splits: object  # rmtkd_tf.data.DataSplits
    description: str
    validation_warning: str | None = None  # logged by compress_task: validation carved from train
    tokenizer: object = None  # text data: the tokenizer that encoded it (its vocabulary is saved beside the student)


def _input_shape(model):
    inputs = model.inputs
    if len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _check_shape(model, x, spec):
    expected = _input_shape(model)
    if expected is None or isinstance(x, dict):
        return
    got = tuple(np.asarray(x).shape[1:])
    compatible = len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got))
    if not compatible:
        raise RMTKDError(
            f"--data {spec} gives inputs of shape {got} but the model expects {expected}"
        )


def encode_text_splits(model, model_path, splits, tokenizer=None, sequence_length=None, log=print):
    """Token-id inputs for a BERT-style model from raw-text `splits`: `(x_train, x_test, x_val, tokenizer)`.

    Each `x_*` is a dict of int32 arrays (`token_ids`, `padding_mask`, `segment_ids`), or None where the
    split is None. The texts are encoded with `tokenizer` (a keras-hub BertTokenizer, or the path of a
    `vocab.txt` or of a Hugging Face folder) or, by default, with the vocabulary saved beside the model
    (`name.keras` -> `name.vocab.txt`, `rmtkd_tf.transformers.tokenizer_for_model`), to the model's fixed
    input length, else to `sequence_length` (default 128) tokens. `compress`, `analyze` and `export` all
    encode through here. Raises `RMTKDError` (one line) for a model without a `token_ids` input, a model
    in memory without a tokenizer, a missing vocabulary or a length the model does not take.
    """
    from rmtkd_tf.transformers.bert import (
        DEFAULT_SEQUENCE_LENGTH,
        load_bert_tokenizer,
        model_sequence_length,
        takes_token_ids,
        tokenizer_for_model,
        vocabulary_path,
    )
    from rmtkd_tf.transformers.text import encode_texts

    if not takes_token_ids(model):
        shape = _input_shape(model)
        raise RMTKDError(
            "text data needs a BERT-style model with token_ids, padding_mask and segment_ids inputs; "
            f"{model_path or 'the model'} takes {shape if shape is not None else [t.name for t in model.inputs]} inputs"
        )
    if model_path is None and tokenizer is None:
        raise RMTKDError("text data with a model given in memory needs its tokenizer: pass the model's .keras "
                         "path (its vocabulary lies beside it) instead of the model")
    fixed = model_sequence_length(model)
    if fixed is not None and sequence_length is not None and int(sequence_length) != fixed:
        raise RMTKDError(f"{model_path} takes sequences of {fixed} tokens, not {sequence_length}")
    length = fixed or (int(sequence_length) if sequence_length is not None else DEFAULT_SEQUENCE_LENGTH)
    if tokenizer is None:
        tokenizer = tokenizer_for_model(model_path)
        source = vocabulary_path(model_path)
    elif isinstance(tokenizer, (str, Path)):
        source, tokenizer = tokenizer, load_bert_tokenizer(tokenizer)
    else:
        source = type(tokenizer).__name__
    log(f"encoding texts with {source} (lowercase={tokenizer.lowercase}), {length} tokens per text")
    x_train = encode_texts(splits.x_train, tokenizer, length)
    x_test = None if splits.x_test is None else encode_texts(splits.x_test, tokenizer, length)
    x_val = None if getattr(splits, "x_val", None) is None else encode_texts(splits.x_val, tokenizer, length)
    truncated = float(np.mean(x_train["padding_mask"][:, -1] == 1)) if len(splits.x_train) else 0.0
    if truncated > 0.05:
        log(f"warning: {100 * truncated:.1f}% of the training texts are cut at {length} tokens")
    return x_train, x_test, x_val, tokenizer


def load_task(model_path, data_spec, unsafe=False, limit=None, seed=0, calibration_fraction=0.1,
              validation_fraction=0.1, tokenizer=None, sequence_length=None, validation="auto", log=print):
    """Load the model (safe mode unless `unsafe`) and split the data: calibration and validation from train.

    Text data need a BERT-style model (inputs `token_ids`, `padding_mask`, `segment_ids`; see
    `rmtkd_tf.transformers.bert`). The texts are encoded with `tokenizer` (a keras-hub BertTokenizer,
    or the path of a `vocab.txt` or of a Hugging Face folder) or, by default, with the vocabulary saved
    beside the model (`name.keras` -> `name.vocab.txt`), to the model's fixed input length, else to
    `sequence_length` (default 128) tokens.

    Validation (the accuracy the loop's `max_drop` is checked on; see `rmtkd_tf.data.holdout`): with
    `validation="auto"`, the data's own validation split when it has one (an .npz's `x_val`, SST-2's
    `dev.tsv`, an image folder's `val/`), since a teacher usually fits its training examples better than
    new ones and a validation drawn from them would measure forgetting of memorised examples; otherwise
    (or with `validation="train"`) a stratified `validation_fraction` of the training split, held out of
    fine-tuning; `task.validation_warning` then says why that is optimistic (`compress_task` logs it).
    `validation="test-split"` takes a stratified half of the test
    split (the test figures are then on the other half only); any other value is a data spec whose rows
    are the validation set. `task.data.validation_origin` says which was used.
    """
    from rmtkd_tf.io import load_model

    log(f"loading model {model_path}")
    model = load_model(model_path, unsafe=unsafe)
    return task_for_model(model, data_spec, model_path=model_path, limit=limit, seed=seed,
                          calibration_fraction=calibration_fraction, validation_fraction=validation_fraction,
                          tokenizer=tokenizer, sequence_length=sequence_length, validation=validation, log=log)


def task_for_model(model, data_spec, *, model_path=None, limit=None, seed=0, calibration_fraction=0.1,
                   validation_fraction=0.1, tokenizer=None, sequence_length=None, validation="auto", log=print):
    """`load_task` for a model already in memory (`model_path`: where it was read from, if anywhere)."""
    from rmtkd_tf.compression import CompressionData
    from rmtkd_tf.data import load_data, split_train
    from rmtkd_tf.data.holdout import carved_from_train_warning, choose_validation

    image_size = None
    shape = _input_shape(model)
    if shape is not None and len(shape) == 3 and shape[0] and shape[1]:
        image_size = (shape[0], shape[1])
    log(f"loading data {data_spec}")
    splits = load_data(str(data_spec), limit=limit, image_size=image_size, seed=seed)
    if len(splits.y_train) == 0:
        raise RMTKDError(f"--data {data_spec} has no training examples")
    choice = choose_validation(splits, validation, limit=limit, image_size=image_size, seed=seed)
    splits = choice.splits  # the validation (and, for test-split, the test half) to use
    x_train, x_test, x_own_val = splits.x_train, splits.x_test, splits.x_val
    text_tokenizer = None
    if splits.modality == "text":
        x_train, x_test, x_own_val, text_tokenizer = encode_text_splits(model, model_path, splits, tokenizer,
                                                                         sequence_length, log)
    elif tokenizer is not None:
        raise RMTKDError(f"a tokenizer was given but --data {data_spec} is {splits.modality} data, not text")
    _check_shape(model, x_train, data_spec)
    own_validation = not choice.carve_from_train
    held_out = 0 if own_validation else validation_fraction
    parts = split_train(splits.x_train, splits.y_train, (calibration_fraction, held_out), seed=seed)
    x_cal, x_val, x_rest = (take_rows(x_train, index) for index in (parts.calibration, parts.validation, parts.train))
    _, y_val, y_rest = parts.take(splits.y_train)
    if own_validation:
        x_val, y_val = x_own_val, np.asarray(splits.y_val)
    y_cal = splits.y_train[parts.calibration]
    data = CompressionData(
        # Fine-tuning uses every training example except the held-out validation ones.
        x_train=concat_rows(x_rest, x_cal),
        y_train=np.concatenate([y_rest, y_cal]),
        x_calibration=x_cal,
        x_validation=x_val,
        y_validation=y_val,
        x_test=x_test,
        y_test=splits.y_test,
        validation_origin=choice.origin,
    )
    from rmtkd_tf.data.validation import validate_task_data

    validate_task_data(model, data, data_spec, calibration_fraction=calibration_fraction, n_train_total=len(splits.y_train),
                       validation_fraction=None if own_validation else validation_fraction, log=log)
    description = f"{splits.describe()}; {choice.note}"
    log(f"data: {description}; calibration {n_rows(x_cal)}, validation {n_rows(x_val)} ({choice.origin}), "
        f"fine-tuning {len(data.y_train)}")
    warning = carved_from_train_warning(len(y_val), automatic=validation == "auto") if choice.carve_from_train else None
    return Task(model=model, model_path=None if model_path is None else Path(model_path), data=data, splits=splits, description=description,
                validation_warning=warning, tokenizer=text_tokenizer)


def analyze_model(task, rank_rule, rule_params, output_dir, plots=True, log=print):
    """Spectra of every Dense/Conv2D layer on the calibration split; writes spectra.json (+ PNGs)."""
    import math

    from rmtkd_tf.collection import candidate_layers, collect_activations
    from rmtkd_tf.io import write_json
    from rmtkd_tf.progress import emit, progress_of
    from rmtkd_tf.report import format_layer_table
    from rmtkd_tf.selection import decide_ranks
    from rmtkd_tf.spectral import estimate_noise_variance, get_rank_rule, plot_spectrum
    from rmtkd_tf.spectral.noise import NoiseFit

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rule = get_rank_rule(rank_rule, **rule_params)
    layers = dict(candidate_layers(task.model))
    n_calibration = n_rows(task.data.x_calibration)
    log(f"collecting activations of {len(layers)} layers on {n_calibration} samples")
    with progress_of(log, f"collecting activations of {len(layers)} layers", math.ceil(n_calibration / 64), "batch") as bar:
        statistics = collect_activations(task.model, task.data.x_calibration, batch_size=64, progress=bar.update)
    decisions, _ = decide_ranks(layers, statistics, rule)
    emit(log, "analysis", step=0, decisions=decisions)
    entries = []
    plotting = progress_of(log if plots else None, "plotting spectra",
                           sum(d.eigenvalues is not None and d.eigenvalues.max() > 0 for d in decisions), "layer")
    for decision in decisions:
        entry = decision.to_dict(with_eigenvalues=True)
        if decision.eigenvalues is not None and decision.eigenvalues.max() > 0:
            # The fit that decided the rank (the MP rule's, at the effective sample size); other rules have
            # none, and the plot then shows the MP fit at that sample size for reference.
            fit = (NoiseFit.from_dict(decision.noise) if decision.noise is not None else
                   estimate_noise_variance(np.clip(decision.eigenvalues, 0, None), max(decision.n_effective or decision.n_samples, 1)))
            entry["noise"] = fit.to_dict()
            if plots:
                png = output_dir / f"spectrum_{decision.path.replace('/', '__')}.png"
                plot_spectrum(decision.eigenvalues, fit, decision.rule_rank,
                              f"{decision.path} (d={decision.dim}, n={decision.n_samples}, n_eff={decision.n_effective})", png)
                entry["plot"] = png.name
                plotting.update()
        entries.append(entry)
    plotting.close()
    write_json(output_dir / "spectra.json", {"model": str(task.model_path), "data": task.description, "rank_rule": rule.to_dict(), "layers": entries})
    log(f"wrote {output_dir / 'spectra.json'}")
    return {"layers": entries, "table": format_layer_table(decisions)}


def warn_if_validation_too_small(data, config, log=print):
    """Logs one `warning:` line when the validation set is too small to accept a student within `max_drop`.

    Steps are accepted on the upper confidence bound of the drop (`rmtkd_tf.acceptance`), so a small
    validation set rejects students that lose nothing; returns the warning (or None).
    """
    from rmtkd_tf.acceptance import too_few_warning

    confidence = getattr(config, "confidence", 0.95)
    warning = too_few_warning(n_rows(data.x_validation), config.max_drop, confidence=confidence)
    if warning is not None:
        log(warning)
    return warning


def compress_task(task, config, output_dir, resume=False, export_precision="fp32", log=print, fingerprint=None,
                  overwrite=False, strategy=None):
    """Run the RMT-KD loop, save student.keras (+ .tflite) and report.json in `output_dir`.

    The folder is locked for the run and records `fingerprint` (see `rmtkd_tf.run_folder`); `resume`
    refuses a folder whose fingerprint differs, `overwrite` starts over a folder that holds a run.
    `strategy` (see `rmtkd_tf.distribute`): across workers, only the chief claims and writes `output_dir`;
    the others run in a temporary folder of their own and export nothing.
    """
    return run_task(task, config, output_dir, resume=resume, export_precision=export_precision, log=log,
                    fingerprint=fingerprint, overwrite=overwrite, strategy=strategy)[1]


def run_task(task, config, output_dir, *, resume=False, export_precision="fp32", log=print, fingerprint=None,
             overwrite=False, write_report=True, strategy=None):
    """`compress_task`, returning `(student, report)`; `write_report=False` skips report.md and its plots."""
    from rmtkd_tf.distribute import is_chief, on_every_worker, resolve_strategy, worker_run_folder
    from rmtkd_tf.run_folder import claimed_run_folder

    strategy = resolve_strategy(strategy)
    if not is_chief(strategy):
        with on_every_worker(strategy, worker_run_folder(output_dir, strategy, resume=resume, log=log)) as scratch:
            return _compress_task(task, config, scratch, resume, None, log, False, strategy)
    claimed = claimed_run_folder(output_dir, resume=resume, overwrite=overwrite, fingerprint=fingerprint, log=log)
    with on_every_worker(strategy, claimed):
        return _compress_task(task, config, output_dir, resume, export_precision, log, write_report, strategy)


def _compress_task(task, config, output_dir, resume, export_precision, log, write_report=True, strategy=None):
    from rmtkd_tf.compression import run
    from rmtkd_tf.io import save_model, write_json
    from rmtkd_tf.progress import RunLog
    from rmtkd_tf.run_report import SpectrumRecorder

    output_dir = Path(output_dir)
    if not isinstance(log, RunLog):
        log = RunLog(sink=log, interactive=False)
    spectra = log.add_listener(SpectrumRecorder())
    t0 = time.time()
    if task.validation_warning:
        log(task.validation_warning)
    warn_if_validation_too_small(task.data, config, log)
    student, report = run(task.model, task.data, config, output_dir, resume=resume, log=log, strategy=strategy)
    from rmtkd_tf.finite_guard import ensure_finite_weights

    ensure_finite_weights(student, "the student")
    save_model(student, output_dir / "student.keras")
    if task.tokenizer is not None:
        _save_student_vocabulary(task.tokenizer, output_dir / "student.keras", log)
    report["model"] = str(task.model_path) if task.model_path is not None else f"{task.model.name} (in memory)"
    report["data"] = task.description
    report["validation"] = {"origin": task.data.validation_origin, "examples": n_rows(task.data.x_validation)}
    report["compression_wall_s"] = round(time.time() - t0, 1)
    if export_precision:
        report["export"] = export_models(task, {"teacher": task.model, "student": student}, output_dir,
                                         export_precision, config, log)
        latency = _tflite_latency(output_dir / "teacher.tflite", output_dir / "student.tflite", task.data.x_validation, log)
        if latency is not None:
            report["latency"] = latency
    write_json(output_dir / "report.json", report)
    log(f"wrote {output_dir / 'report.json'}")
    log.listeners.remove(spectra)
    if write_report:
        _write_run_report(output_dir, report, spectra, log)
    return student, report


def _save_student_vocabulary(tokenizer, student_path, log):
    """`student.vocab.txt` beside `student.keras`, so `export --data TEXT` and `analyze` encode as compress did."""
    from rmtkd_tf.transformers.bert import save_vocabulary

    try:
        path = save_vocabulary(tokenizer, student_path)
    except RMTKDError as error:  # a tokenizer whose lower-casing its vocabulary does not say: never lose the run
        log(f"warning: {Path(student_path).name}'s vocabulary not saved: {error}")
        return None
    log(f"wrote {path}")
    return path


def _write_run_report(output_dir, report, spectra, log):
    """`report.md` and its plots; a plot that fails is a warning, never the end of a finished run."""
    from rmtkd_tf.run_report import write_run_report

    log("plotting teacher vs student, the ranks and the spectra for report.md")
    try:
        path = write_run_report(output_dir, report, spectra, log=log)
    except Exception as error:  # noqa: BLE001 (the student and report.json are already written)
        log(f"warning: report.md not written: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return None
    log(f"wrote {path} (plots in {path.parent / 'report'})")
    return path


def _tflite_latency(teacher_path, student_path, x, log, runs=50, threads=1):
    """Median LiteRT latency of the two `.tflite` files on this host, interleaved; None when it cannot run.

    A single-array input is fed real rows (one example, cast to the file's input type); other inputs
    get `rmtkd_tf.bench.host`'s generated ones.
    """
    from rmtkd_tf.bench.host import compare_tflite

    def first_row(path):
        if isinstance(x, dict) or x is None:
            return None
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(path)).get_input_details()
        if len(details) != 1:
            return None
        row, dtype = np.asarray(x)[:1], np.dtype(details[0]["dtype"])
        scale, zero_point = details[0]["quantization"]
        if dtype in (np.int8, np.uint8) and scale and row.dtype != dtype:  # a full-int8 file: quantize, not wrap
            info = np.iinfo(dtype)
            row = np.clip(np.round(row.astype(np.float64) / scale) + zero_point, info.min, info.max)
        return row.astype(dtype)

    log(f"timing teacher.tflite and student.tflite on this host ({runs} runs each, {threads} thread)")
    try:
        result = compare_tflite(teacher_path, student_path, threads=threads, warmup=5, runs=runs, block_runs=5,
                                inputs_a=first_row(teacher_path), inputs_b=first_row(student_path))
    except (ValueError, RuntimeError, OSError) as error:
        log(f"warning: latency not measured: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        return None
    teacher_ms, student_ms = result.a.latency_ms.median, result.b.latency_ms.median
    return {"teacher_ms": teacher_ms, "student_ms": student_ms,
            "speedup": None if not student_ms else teacher_ms / student_ms, "runs": runs, "threads": threads,
            "method": "LiteRT interpreter on this host, teacher and student interleaved (ABBA blocks)"}


def export_models(task, models, output_dir, precision, config, log=print):
    """Write `<name>.tflite` for each of `models` ({name: keras.Model}) and return {name: export report}.

    Calibration uses the task's calibration split, verification its test split (validation when it has
    none). `precision="auto"` picks, per model, the smallest precision whose accuracy on the validation
    split stays within `config.max_drop` of that model (`rmtkd_tf.precision_search`), and the report keeps
    every precision it tried under `"auto"`.
    """
    from rmtkd_tf.export import export_tflite
    from rmtkd_tf.precision_search import export_smallest_accurate

    data = task.data
    verify_x, verify_y = (data.x_test, data.y_test) if data.x_test is not None else (data.x_validation, data.y_validation)
    reports = {}
    for name, model in models.items():
        path = Path(output_dir) / f"{name}.tflite"
        log(f"exporting {path.name} ({precision})")
        if precision == "auto":
            result = export_smallest_accurate(
                model, path, data.x_validation, data.y_validation, representative_data=data.x_calibration,
                max_drop=config.max_drop, confidence=getattr(config, "confidence", 0.95),
                verify_inputs=verify_x, verify_labels=verify_y, log=log,
            )
            for line in result.format_table().splitlines():
                log(f"  {name}: {line}")
            reports[name] = {**result.report.to_dict(), "auto": result.to_dict()}
        else:
            reports[name] = export_tflite(
                model, path, precision=precision, representative_data=data.x_calibration,
                verify_inputs=verify_x, verify_labels=verify_y,
            ).to_dict()
    return reports
