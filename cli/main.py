"""`rmtkd-tf`: the command-line front end.

Commands: `analyze` (spectra and ranks), `compress` (the RMT-KD loop, then
TFLite export), `export` (`.keras` → `.tflite`) and `bench` (host, adb, ssh).
Every error ends with a one-line message, never a traceback: exit code 1 for
errors (bad input, a refused output path, a locked or mismatched run folder,
diverged training, an unexpected failure), 2 for click's usage errors, 130
when interrupted (Ctrl-C). Set RMTKD_TF_TRACEBACK=1 to see the traceback of
an unexpected error.

Nothing heavy is imported at start-up: `rmtkd-tf --help` and `rmtkd-tf COMMAND --help` never
import TensorFlow. TensorFlow's start-up notices are hidden (`cli.quiet_tf`) unless `-v` is
given before the command (`rmtkd-tf -v compress ...`) or RMTKD_TF_VERBOSE=1 is set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from cli import quiet_tf
from cli.library_constants import EXIT_INTERRUPTED, PRECISIONS

DEFAULT_MODEL = "cifar10_cnn.keras"
DEFAULT_DATA = "cifar10_sample.npz"
# compress settings of the embedded default (options the user did not give): see the README.
DEFAULT_SETTINGS = "demo_settings.json"


def _assets_dir():
    return Path(__file__).resolve().parent.parent / "rmtkd_tf" / "assets"


def _run_log(quiet, listeners=()):
    """The command's `rmtkd_tf.progress.RunLog` (timestamped lines and progress on stderr).

    Says "loading TensorFlow" first: importing it takes seconds, and nothing else would be printed meanwhile.
    """
    t0 = time.time()
    if not quiet:
        click.echo(f"[{0.0:7.1f}s] loading TensorFlow and Keras", err=True)
    from rmtkd_tf.progress import RunLog

    log = RunLog(quiet=quiet, listeners=listeners)
    log.t0 = t0
    return log


def _fail(exc):
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise click.ClickException(message)


def _one_line_for(error):
    """The message an exception that reached the top of a command is reported with."""
    from rmtkd_tf.errors import RMTKDError

    text = str(error).strip()
    first = text.splitlines()[0][:500] if text else ""
    if isinstance(error, RMTKDError):
        return first or type(error).__name__
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename or first}"
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or first or type(error).__name__}{where}"
    if isinstance(error, MemoryError):
        return "out of memory; try a smaller --limit or --batch-size"
    return (f"unexpected {type(error).__name__}: {first}" if first else f"unexpected {type(error).__name__}") + (
        " (set RMTKD_TF_TRACEBACK=1 for the traceback)")


class _OneLineGroup(click.Group):
    """Turns whatever escapes a command into one line and a documented exit code.

    click's standalone mode would turn Ctrl-C into "Aborted!" with exit code 1, and let any other
    exception print a traceback; both are handled here, where they arrive, for the console script
    and for click's test runner alike.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as interrupt:
            message = getattr(interrupt, "message", None) or "interrupted; rerun with --resume to continue"
            click.echo(f"\n{message}", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as error:
            if os.environ.get("RMTKD_TF_TRACEBACK"):
                raise
            raise click.ClickException(_one_line_for(error)) from None


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rmtkd-tf")
@click.option("-v", "--verbose", is_flag=True,
              help=f"Show TensorFlow's own start-up and log messages (hidden by default; or set {quiet_tf.VERBOSE_ENV}=1).")
def cli(verbose):
    """RMT-KD: shrink a trained Keras model with random-matrix theory and self-distillation."""
    quiet_tf.configure_logging(verbose or quiet_tf.verbose_requested([]))


def embedded_default_settings(command):
    """Without MODEL, fill the options the user left at their defaults from the embedded default's settings."""
    import functools
    import json

    @functools.wraps(command)
    def wrapper(**kwargs):
        if kwargs.get("model") is None:
            context = click.get_current_context()
            settings = json.loads((_assets_dir() / DEFAULT_SETTINGS).read_text())["compress"]
            for name, value in settings.items():
                if context.get_parameter_source(name) == click.core.ParameterSource.DEFAULT:
                    kwargs[name] = value
            kwargs["embedded_settings"] = settings
        return command(**kwargs)

    return wrapper


def _resolve_inputs(model_path, data_spec):
    if model_path is None:
        model_path = _assets_dir() / DEFAULT_MODEL
        if data_spec is None:
            data_spec = str(_assets_dir() / DEFAULT_DATA)
    if data_spec is None:
        raise click.UsageError("--data is required when a model is given")
    return Path(model_path), data_spec


def _prepare(model_path, data_spec, unsafe, limit, seed, calibration_fraction, validation_fraction, log,
             tokenizer=None, seq_len=None, validation="auto"):
    from rmtkd_tf.errors import RMTKDError
    from rmtkd_tf.pipeline import load_task

    try:
        return load_task(
            model_path,
            data_spec,
            unsafe=unsafe,
            limit=limit,
            seed=seed,
            calibration_fraction=calibration_fraction,
            validation_fraction=validation_fraction,
            tokenizer=tokenizer,
            sequence_length=seq_len,
            validation=validation,
            log=log,
        )
    except (RMTKDError, ValueError, FileNotFoundError) as exc:
        _fail(exc)


_common = [
    click.option("--data", "data_spec", help="Data: .npz, CIFAR python folder, image folder, TSV/CSV (file or folder), tfds:NAME."),
    click.option("--unsafe", is_flag=True, help="Allow Lambda layers (arbitrary code) when loading the model."),
    click.option("--limit", type=int, default=None, help="Use at most this many samples per split."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed for the data splits, sampling and weight initialisation (same seed, same run)."),
    click.option("--calibration-fraction", type=float, default=0.1, show_default=True,
                 help="Share of the training split held out as calibration examples, whose activations give the "
                      "spectra (compress uses at most --calibration-samples of them)."),
    click.option("--validation-fraction", type=float, default=0.1, show_default=True,
                 help="Of the training split, used when the data has no validation split of its own "
                      "(SST-2's dev.tsv, an image folder's val/ are used as they are)."),
    click.option("--rank-rule", type=click.Choice(["mp", "energy", "gavish-donoho", "fixed-rank", "fixed-ratio"]), default="mp",
                 show_default=True, help="How each layer's rank is chosen: mp (eigenvalues above the fitted "
                 "Marchenko-Pastur edge), energy (--energy), gavish-donoho, fixed-rank (--rank), fixed-ratio (--ratio)."),
    click.option("--tau", type=float, default=0.5, show_default=True, help="Quantile initialising the MP noise fit."),
    click.option("--energy", "energy_fraction", type=float, default=0.95, show_default=True, help="For --rank-rule energy."),
    click.option("--rank", "fixed_rank", type=int, default=None, help="For --rank-rule fixed-rank."),
    click.option("--ratio", "fixed_ratio", type=float, default=None, help="For --rank-rule fixed-ratio."),
    click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), required=True, help="Output folder."),
    click.option("--tokenizer", type=click.Path(exists=True), default=None, help="Text models: vocab.txt or HF folder (default: <model>.vocab.txt)."),
    click.option("--seq-len", type=int, default=None, help="Text models: tokens per example (default: the model's input length)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress lines or bars: only the result (and errors)."),
    click.option("--overwrite", is_flag=True,
                 help="Write into a non-empty -o folder that holds no rmtkd-tf run (or start over an earlier run)."),
]


def common_options(func):
    for option in reversed(_common):
        func = option(func)
    return func


def _rule_params(rank_rule, tau, energy_fraction, fixed_rank, fixed_ratio):
    if rank_rule == "mp":
        return {"tau": tau}
    if rank_rule == "energy":
        return {"fraction": energy_fraction}
    if rank_rule == "fixed-rank":
        if fixed_rank is None:
            raise click.UsageError("--rank-rule fixed-rank needs --rank K")
        return {"rank": fixed_rank}
    if rank_rule == "fixed-ratio":
        if fixed_ratio is None:
            raise click.UsageError("--rank-rule fixed-ratio needs --ratio R")
        return {"ratio": fixed_ratio}
    return {}


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True), required=False)
@common_options
@click.option("--no-plots", is_flag=True, help="Skip the per-layer PNGs.")
def analyze(model, data_spec, unsafe, limit, seed, calibration_fraction, validation_fraction, rank_rule, tau,
            energy_fraction, fixed_rank, fixed_ratio, tokenizer, seq_len, output_dir, quiet, overwrite, no_plots):
    """Per-layer activation spectra, fitted MP noise and chosen ranks (JSON + PNGs).

    Without MODEL, analyses the embedded default: the small CIFAR-10 CNN packaged with rmtkd-tf
    (rmtkd_tf/assets/cifar10_cnn.keras) on the packaged sample of real CIFAR-10 images
    (rmtkd_tf/assets/cifar10_sample.npz), or on --data when given.
    """
    log = _run_log(quiet)
    from rmtkd_tf.io import unsafe_loading
    from rmtkd_tf.pipeline import analyze_model
    from rmtkd_tf.run_folder import check_output_folder, removing_created_on_failure

    model_path, data_spec = _resolve_inputs(model, data_spec)
    check_output_folder(output_dir, {"model": model_path, "data": data_spec, "tokenizer": tokenizer}, overwrite=overwrite)
    with unsafe_loading(unsafe), removing_created_on_failure(output_dir):
        task = _prepare(model_path, data_spec, unsafe, limit, seed, calibration_fraction, validation_fraction, log,
                        tokenizer=tokenizer, seq_len=seq_len)
        try:
            result = analyze_model(
                task, rank_rule, _rule_params(rank_rule, tau, energy_fraction, fixed_rank, fixed_ratio),
                Path(output_dir), plots=not no_plots, log=log,
            )
        except ValueError as exc:
            _fail(exc)
    click.echo(result["table"])


def _compression_config(options):
    """The `CompressionConfig` of `compress`'s options: every option named like a config field sets that field;
    the rank rule's parameters come from --tau / --energy / --rank / --ratio, the layer paths from --layers."""
    import dataclasses

    from rmtkd_tf.compression import CompressionConfig

    values = {field.name: options[field.name] for field in dataclasses.fields(CompressionConfig) if field.name in options}
    values["rule_params"] = _rule_params(options["rank_rule"], options["tau"], options["energy_fraction"],
                                         options["fixed_rank"], options["fixed_ratio"])
    values["layers"] = options["layers"].split(",") if options["layers"] else None
    return CompressionConfig(**values)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True), required=False)
@common_options
@click.option("--schedule", type=click.Choice(["budgeted", "iterative"]), default="budgeted", show_default=True,
              help="budgeted: analyse once, cut once, distil the final student from the original; "
                   "iterative: the paper's layer-by-layer loop.")
@click.option("--target-params", type=float, default=None, help="Cut to params <= this fraction of the original (e.g. 0.2).")
@click.option("--target-flops", type=float, default=None, help="Cut to FLOPs <= this fraction of the original (e.g. 0.5).")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Max validation accuracy drop (points, paired with the original on the same examples).")
@click.option("--distillation-epochs", type=int, default=3, show_default=True,
              help="budgeted: distillation epochs of the final student, from the original model.")
@click.option("--distillation-learning-rate", type=float, default=1e-3, show_default=True,
              help="budgeted: peak learning rate of that distillation (cosine decay to 0).")
@click.option("--search-tolerance", type=float, default=5.0, show_default=True,
              help="budgeted, no target: deepest cut whose validation accuracy before training is within this many points.")
@click.option("--max-attempts", type=int, default=2, show_default=True,
              help="budgeted, no target: distillations in all, backing off when a student misses --max-drop.")
@click.option("--validation", "validation", default="auto", show_default=True, metavar="SPEC",
              help="Where the validation set (checked against --max-drop) comes from: auto (the data's own "
                   "validation split, else carved from train with a warning), train (carved from train), "
                   "test-split (a stratified half of the test split; test figures on the other half), "
                   "or a data path in any --data format whose rows are the validation set.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Level of the validation drop's interval: a step is kept only when its upper bound is within --max-drop.")
@click.option("--min-rank-ratio", type=float, default=0.02, show_default=True, help="Never reduce a layer below this k/d.")
@click.option("--order", type=click.Choice(["shallow-to-deep", "block-by-block", "all-at-once"]), default="shallow-to-deep",
              show_default=True, help="Layers per step: one; one transformer block's parts; all.")
@click.option("--split-on-rollback/--no-split-on-rollback", default=True, show_default=True,
              help="Retry a rolled-back step of several layers in halves (shallower half first) instead of freezing them all.")
@click.option("--layers", default=None, help="Comma-separated layer paths to consider (default: all Dense/Conv2D).")
@click.option("--epochs-per-step", type=int, default=1, show_default=True, help="iterative: self-distillation epochs after each reduction (0: surgery only).")
@click.option("--final-epochs", type=int, default=0, show_default=True, help="iterative: distillation epochs from the original teacher at the end.")
@click.option("--max-steps", type=int, default=50, show_default=True, help="iterative: at most this many steps.")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Examples per batch for collection, distillation and evaluation.")
@click.option("--learning-rate", type=float, default=1e-4, show_default=True, help="iterative: fine-tuning learning rate.")
@click.option("--alpha", type=float, default=0.7, show_default=True, help="Weight of the hard-label CE in the distillation loss.")
@click.option("--temperature", type=float, default=4.0, show_default=True,
              help="Softmax temperature T of the distillation's KL term (scaled by T^2).")
@click.option("--feature-weight", type=float, default=0.0, show_default=True,
              help="Weight of intermediate-feature distillation: the factorized layers' outputs matched to the teacher's.")
@click.option("--recalibrate-bn/--no-recalibrate-bn", "recalibrate_batch_norm", default=True, show_default=True,
              help="budgeted: re-estimate the cut student's BatchNorm statistics on training examples (no gradient "
                   "step) before scoring and distilling it, and keep that student when it beats the distilled one "
                   "on validation.")
@click.option("--joint-qk", "joint_qk", is_flag=True,
              help="budgeted: an encoder whose query and key are both cut gets them factorized jointly (each head's "
                   "query-key bilinear form, key dim r) at no more parameters than the two separate cuts. Off by "
                   "default: on pretrained MiniLM-L6 it is worse than the separate cuts (BENCHMARKS.md).")
@click.option("--calibration-samples", type=int, default=2048, show_default=True,
              help="Cap on the calibration examples whose activations are collected: the calibration set is "
                   "--calibration-fraction of the training split, and this caps it (the embedded default's "
                   "1,500 training images give 150, so the fraction decides there).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --output.")
@click.option("--strategy", type=click.Choice(["auto", "one-device", "mirrored", "multi-worker"]), default="auto",
              show_default=True,
              help="tf.distribute: auto (mirrored when more than one GPU is visible, else one-device), mirrored "
                   "(every GPU of this host), multi-worker (the hosts of TF_CONFIG; same command on each, the "
                   "chief writes -o). --batch-size is the global batch.")
@click.option("--export/--no-export", "do_export", default=True, show_default=True, help="Write student.tflite (and teacher.tflite).")
@click.option("--precision", type=click.Choice(PRECISIONS + ("auto",)),
              default="fp32", show_default=True,
              help="Of the .tflite files (see `rmtkd-tf export --help`); auto: per model, the first of int8, int16x8, "
                   "int8-mixed, int8-dynamic, fp16, fp32 whose validation accuracy is within --max-drop of its "
                   "Keras model (report.json's export.*.auto lists what was tried).")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write TensorBoard logs here: ranks per layer, losses, validation accuracy and the spectra "
                   "per step or attempt (tensorboard --logdir DIR).")
@embedded_default_settings
def compress(model, data_spec, unsafe, limit, seed, calibration_fraction, validation_fraction, rank_rule, tau,
             energy_fraction, fixed_rank, fixed_ratio, tokenizer, seq_len, output_dir, quiet, overwrite, schedule, target_params,
             target_flops, max_drop, distillation_epochs, distillation_learning_rate, search_tolerance, max_attempts, validation,
             confidence, min_rank_ratio,
             order, split_on_rollback, layers, epochs_per_step, final_epochs, max_steps, batch_size, learning_rate, alpha, temperature,
             feature_weight, recalibrate_batch_norm, joint_qk, calibration_samples, resume, strategy, do_export, precision, tensorboard_dir=None,
             embedded_settings=None):
    """Compress MODEL (.keras) with RMT-KD; writes student.keras, student.tflite, report.json and report.md to -o.

    Without MODEL, runs the embedded default: a small CIFAR-10 CNN and a sample of real CIFAR-10 images
    packaged with rmtkd-tf, with the settings in rmtkd_tf/assets/demo_settings.json for the options not
    given (its 150 validation images cannot confirm a 1-point drop, so it cuts to a target).
    """
    options = dict(locals())  # every option by its name, for the config (`_compression_config`)
    import dataclasses

    log = _run_log(quiet)
    from rmtkd_tf.distribute import is_chief, resolve_strategy
    from rmtkd_tf.errors import RMTKDError
    from rmtkd_tf.io import unsafe_loading
    from rmtkd_tf.pipeline import compress_task
    from rmtkd_tf.run_folder import check_output_folder, run_fingerprint

    # Before anything else runs TensorFlow: a multi-worker strategy configures it at start-up.
    strategy = resolve_strategy(strategy)
    chief = is_chief(strategy)
    model_path, data_spec = _resolve_inputs(model, data_spec)
    if embedded_settings:
        shown = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in embedded_settings.items())
        log(f"embedded default {model_path.name} + {Path(data_spec).name}, with {shown} unless given")
    output_dir = Path(output_dir)
    # Nothing is loaded or written before the output folder is known to be safe to write.
    validation_spec = None if validation in ("auto", "train", "test-split") else validation
    if chief:  # the other workers never write -o (rmtkd_tf.distribute)
        check_output_folder(output_dir, {"model": model_path, "data": data_spec, "tokenizer": tokenizer,
                                         "validation data": validation_spec}, overwrite=overwrite, resume=resume)
    if not model_path.is_file():
        _fail(RMTKDError(f"model file not found: {model_path}" if not model_path.exists()
                         else f"{model_path} is a folder; pass a .keras file (SavedModel folders are not supported)"))
    try:
        config = _compression_config(options)
    except RMTKDError as exc:
        _fail(exc)
    data_settings = {"limit": limit, "seed": seed, "calibration_fraction": calibration_fraction,
                     "validation_fraction": validation_fraction, "validation": validation, "seq_len": seq_len,
                     "tokenizer": None if tokenizer is None else str(Path(tokenizer).resolve())}
    board = None
    if tensorboard_dir is not None and chief:  # the other workers write no logs
        if Path(tensorboard_dir).exists() and not Path(tensorboard_dir).is_dir():
            _fail(RMTKDError(f"--tensorboard {tensorboard_dir} is a file, not a folder"))
        from rmtkd_tf.tensorboard import TensorBoardLog

        board = log.add_listener(TensorBoardLog(tensorboard_dir))
    with unsafe_loading(unsafe):
        task = _prepare(model_path, data_spec, unsafe, limit, seed, calibration_fraction, validation_fraction, log,
                        tokenizer=tokenizer, seq_len=seq_len, validation=validation)
        fingerprint = run_fingerprint(model_path, data_spec, {**data_settings, **dataclasses.asdict(config)})
        try:
            report = compress_task(task, config, output_dir, resume=resume, export_precision=precision if do_export else None,
                                   log=log, fingerprint=fingerprint, overwrite=overwrite, strategy=strategy)
        except (RMTKDError, ValueError) as exc:
            _fail(exc)
        finally:
            if board is not None:
                board.close()
    if board is not None:
        log(f"TensorBoard logs in {tensorboard_dir}: tensorboard --logdir {tensorboard_dir}")
    from rmtkd_tf.report import format_summary

    if chief:
        click.echo(format_summary(report))


def _register_optional_commands():
    from cli.bench_cmd import bench
    from cli.export_cmd import export

    cli.add_command(export)
    cli.add_command(bench)


_register_optional_commands()


def main(argv=None):
    """The console script: `_OneLineGroup` maps every error to one line and an exit code.

    Unless verbose, TensorFlow's native start-up notices are filtered out of stderr here, before
    any command can import TensorFlow (the test runner, which calls `cli` directly, is left alone).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    verbose = quiet_tf.verbose_requested(args)
    quiet_tf.configure_logging(verbose)
    if not verbose:
        quiet_tf.filter_native_stderr()
    cli.main(args=args, prog_name="rmtkd-tf", standalone_mode=True)


if __name__ == "__main__":
    main()
