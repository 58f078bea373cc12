"""`python -m benchmarks`: argument parsing, task configs, the result reader on every committed file, the renderer.

The central check: every command recorded in a committed result or in BENCHMARKS.md parses with the driver,
resolves to an existing task config, and asks for the same settings as the command it was first run with
(`command_as_run`), except the settings its config declares in `differs_from_as_run`, with a reason.
"""

import doctest
import json
import re
import shlex
from pathlib import Path

import pytest

from benchmarks import driver, floor, render, schema, timing
from benchmarks.report import aggregate, compress_results, sections

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
IGNORED = {"task", "config", "seeds", "command_line", "command", "write_markdown", "out", "run_dir"}
# What the replaced scripts were called, and the driver subcommand that took them over.
OLD_SCRIPTS = {"benchmarks/run_compression.py": "compress", "benchmarks/compare_methods.py": "compare",
               "benchmarks/latency_floor.py": "floor"}


@pytest.mark.parametrize("module", [driver, render, schema, timing, floor])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


def _settings(args):
    values = {k: v for k, v in vars(args).items() if k not in IGNORED}
    if "name" in values and values["name"] is None and values.get("teacher"):
        values["name"] = Path(values["teacher"]).stem  # the default name
    return values


def _parse_driver_command(command):
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "benchmarks"], command
    return driver.parse(argv[3:])


def _parse_as_run(command):
    argv = command.split()
    return driver.parse([OLD_SCRIPTS[argv[1]], *argv[2:]])


def _recorded(path):
    result = json.loads(path.read_text())
    return result["command"], result.get("command_as_run")


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_every_committed_result_reads_and_keeps_its_original_command(path):
    result = schema.read_result(path)
    assert result["schema_version"] == schema.SCHEMA_VERSION and result["kind"] in schema.KINDS
    command, as_run = _recorded(path)
    assert command.startswith(("python -m benchmarks ", "python -m tools.", "python -m pytest "))
    if as_run is None:  # written by the driver or a tool itself: its command is the one it was run with
        assert command.startswith("python -m tools.") or "--task" in shlex.split(command), path.name
    else:
        assert as_run.strip(), f"{path.name}: the command it was run with is kept as command_as_run"


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_recorded_command_maps_to_the_settings_it_was_run_with(path):
    command, as_run = _recorded(path)
    if not command.startswith("python -m benchmarks "):
        target = command.split()[-1] if "pytest" in command else command.split()[2].replace(".", "/") + ".py"
        assert (ROOT / target).is_file(), command
        return
    subcommand = shlex.split(command)[3]
    if subcommand == "arm64":  # its arguments are kept in the config; file paths follow the run folder's layout
        args = _parse_driver_command(command)
        old = as_run.split(" --models-label ")[0].split()[2:]
        assert [a for a in args.args if a.startswith("--")] == [a for a in old if a.startswith("--")] + ["--models-label"]
        assert [Path(a).suffix for a in args.args[1:-2:2]] == [Path(a).suffix for a in old[1::2]]
        assert args.args[-1] in as_run and set(args.config["differs_from_as_run"]) == {"args"}
        return
    args = _parse_driver_command(command)
    assert args.config is not None and args.config["_path"].is_file()
    result = schema.read_result(path)
    if result["kind"] == "seeds":  # an aggregate: its per-seed results carry the settings, each checked on its own
        assert result["runs"] and all((ROOT / "benchmarks" / "results" / Path(run).name).is_file() for run in result["runs"])
        return
    if as_run is None:  # run by the driver: the settings it recorded are the ones its command parses to now
        recorded = result["settings"]
        parsed = _settings(args)
        if parsed.get("match_params") == "auto" and recorded.get("match_params") in ("model", "encoder"):
            parsed["match_params"] = recorded["match_params"]  # compare.py records what "auto" resolved to
        shared = set(recorded) & set(parsed)
        assert {"schedule", "epochs", "target_params", "seed"} <= shared
        assert {k: recorded[k] for k in shared} == {k: parsed[k] for k in shared}, path.name
        assert "differs_from_as_run" not in args.config
        return
    new, old = _settings(args), _settings(_parse_as_run(as_run))
    declared = args.config.get("differs_from_as_run", {})
    differing = {key for key in new if new[key] != old.get(key)}
    assert differing == set(declared), f"{path.name}: undeclared differences {differing - set(declared)}"
    for key in declared:
        assert new[key] == args.config[key] and declared[key]  # the config's value, with a reason


def test_every_command_in_benchmarks_md_parses_to_a_task():
    text = (ROOT / "BENCHMARKS.md").read_text()
    commands = re.findall(r"`(python -m benchmarks [^`]+)`", text)
    assert len(commands) >= 15
    subcommands = {"compress", "compare", "floor", "report", "train", "arm64"}
    for command in commands:
        argv = shlex.split(command)
        if argv[3] == "SUBCOMMAND":  # the pattern, in the introduction
            continue
        if "--task" in argv or argv[3] == "train":  # a command to run (not a mention of a subcommand)
            args = _parse_driver_command(command)
            assert args.command == "train" or args.config is not None, command
        else:
            assert argv[3] in subcommands, command
    # The replaced scripts appear only as what a result was run with.
    outside_as_run = re.sub(r"\(as run: `[^`]+`\)", "", text)
    assert re.findall(r"benchmarks/\w+\.py", outside_as_run) == []


def test_every_task_config_is_valid_and_has_its_result():
    configs = driver.task_configs()
    assert len(configs) >= 19
    for stem, config in configs.items():
        assert (ROOT / "benchmarks" / "results" / f"{stem}.json").is_file(), f"configs/{stem} has no result"
        assert config.get("description"), stem
        if config["kind"] == "arm64":
            continue
        args = driver.parse([config["kind"], "--task", f"configs/{stem}"])
        assert args.teacher and args.data


def test_flags_override_the_config_and_name_takes_the_seed():
    args = driver.parse(["compare", "--task", "configs/cifar10_mlp_seeds", "--seed", "2", "--limit", "100"])
    assert args.seed == 2 and args.limit == 100 and args.name == "cifar10_mlp_seed2"
    assert args.target_params == 0.2 and args.methods == "rmtkd-mp,rmtkd-iterative,svd-rmtkd-ranks"
    assert args.seeds == [0, 1, 2]


def test_feature_weight_reaches_the_compression_config_and_the_recorded_settings():
    from benchmarks.compare import settings_record

    args = driver.parse(["compress", "--teacher", "t.keras", "--data", "d", "--feature-weight", "0.5"])
    assert args.feature_weight == 0.5
    assert driver.parse(["compare", "--teacher", "t.keras", "--data", "d"]).feature_weight == 0.0
    finetune = {"alpha": 0.7, "temperature": 4.0}
    assert settings_record(args, "compress", "model", finetune)["feature_weight"] == 0.5
    assert settings_record(args, "compress", "model", finetune)["recalibrate_bn"] is False
    args = driver.parse(["compare", "--task", "configs/cifar10_cnn_bn_seeds", "--recalibrate-bn"])
    assert args.recalibrate_bn and "rmtkd-mp-bn" in args.methods.split(",")


def test_compare_times_text_models_at_a_given_length_and_records_it():
    from benchmarks.compare import settings_record

    finetune = {"alpha": 0.7, "temperature": 4.0}
    for command in ("compare", "compress"):
        args = driver.parse([command, "--teacher", "t.keras", "--data", "d", "--latency-seq-len", "128"])
        assert settings_record(args, command, "model", finetune)["latency_seq_len"] == 128
        args = driver.parse([command, "--teacher", "t.keras", "--data", "d"])
        assert settings_record(args, command, "model", finetune)["latency_seq_len"] is None


def test_compress_keeps_the_old_model_flag_and_its_defaults():
    args = driver.parse(["compress", "--model", "m.keras", "--data", "d"])
    assert args.teacher == "m.keras" and (args.max_steps, args.final_epochs, args.runs) == (12, 2, 300)


@pytest.mark.parametrize("argv, message", [
    (["compare", "--data", "d"], "--teacher is required"),
    (["compare", "--teacher", "t", "--data", "d", "--methods", "rmtkd-mp,bogus"], "unknown methods"),
    (["compare", "--teacher", "t", "--data", "d", "--limit", "0"], "must be > 0"),
    (["compare", "--task", "configs/no_such_task"], "no task config"),
    (["compress", "--task", "configs/compare_cifar10_cnn"], "is a 'compare' task, not 'compress'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        driver.parse(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("config, message", [
    ({"kind": "compare", "teacher": "t", "data": "d", "bogus": 1}, "unknown option 'bogus'"),
    ({"kind": "compare", "teacher": "t", "data": "d", "limit": "many"}, "limit must be a number"),
    ({"kind": "compare", "teacher": "t", "data": "d", "order": "sideways"}, "order must be one of"),
    ({"kind": "compare", "teacher": "t", "data": "d", "limit": 0}, "invalid limit 0"),
    ({"kind": "compare", "teacher": "t", "data": "d", "limit": 2.5}, "limit must be a number (int)"),
    ({"kind": "compare", "teacher": "t", "data": "d", "students": []}, "unknown option 'students'"),
])
def test_bad_config_is_rejected(tmp_path, config, message, capsys):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        driver.parse(["compare", "--task", str(path)])
    assert message in capsys.readouterr().err


def test_reader_rejects_what_is_not_a_result(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(schema.ResultError):
        schema.read_result(path)
    path.write_text('{"schema_version": 3, "kind": "compare"}')
    with pytest.raises(schema.ResultError, match="newer"):
        schema.read_result(path)


def test_legacy_compress_results_read_as_teacher_and_one_method():
    results = compress_results()
    assert len([r for r in results if r.get("command_as_run")]) == 9  # the legacy ones; newer ones come from the driver
    mlp = next(r for r in results if r["name"] == "cifar10_mlp")
    student = mlp["methods"][0]
    assert set(mlp["teacher"]["exports"]) == set(student["exports"]) == {"fp32", "fp16", "int8"}
    assert student["latency"]["fp32"]["speedup_vs_teacher"] == pytest.approx(6.25, abs=0.005)


@pytest.mark.parametrize("stem", sorted(c for c, v in driver.task_configs().items() if v["kind"] in ("compress", "compare")))
def test_renderer_reproduces_the_committed_sections(stem):
    config = driver.task_configs()[stem]
    for kind, name, text in sections(config, write=False):
        committed = render.section(kind, name)
        if committed is not None:  # some results (e.g. the 25k run) are quoted by hand, not generated
            assert text == committed, f"BENCHMARKS.md section {kind}:{name} is not what the results render"


def _mlp_seed_runs():
    """The committed per-seed results of the CIFAR-10 MLP comparison (seeds 0, 1, 2): a real seeds task."""
    return [schema.read_result(p) for p in sorted(RESULTS) if p.stem.startswith("compare_cifar10_mlp_seed")]


def test_seeds_table_of_one_method_has_no_empty_pairs_table():
    runs = _mlp_seed_runs()
    summary = aggregate(runs)
    assert summary["pairs"] and "Paired test-accuracy differences" in render.seeds_table(summary)
    one_method = {**summary, "methods": dict(list(summary["methods"].items())[:1]), "pairs": {}}
    table = render.seeds_table(one_method)
    assert "Paired test-accuracy differences" not in table and "| pair |" not in table
    assert "Teacher test accuracy" in table


def test_seeds_table_says_the_length_text_models_were_timed_at():
    runs = _mlp_seed_runs()
    assert "timed at" not in render.seeds_table(aggregate(runs))
    summary = aggregate([{**run, "timed_seq_len": 128} for run in runs])
    assert summary["timed_seq_len"] == 128 and "Speed-ups timed at 128 tokens." in render.seeds_table(summary)


def test_seeds_aggregate_refuses_runs_with_different_settings():
    runs = _mlp_seed_runs()
    assert aggregate(runs)["seeds"] == [0, 1, 2]
    runs[1] = {**runs[1], "command": runs[1]["command"] + " --limit 10"}
    with pytest.raises(SystemExit, match="differ"):
        aggregate(runs)


def _compare_result(name):
    entry = {"params": 100, "flops": 1000, "test_accuracy": 90.0, "encoder_params": None,
             "exports": {"fp32": {"size_bytes": 4096, "gzip_bytes": 4000, "test_accuracy": 90.0},
                         "int8": {"size_bytes": 1024, "gzip_bytes": 900, "test_accuracy": 89.5}}}
    method = {**entry, "method": "rmtkd-mp", "schedule": "budgeted", "params": 20, "param_reduction": 0.8,
              "flops": 250, "test_accuracy": 89.5, "finetune_epochs": 3, "compression_wall_s": 60.0,
              "latency": {"fp32": {"speedup_vs_teacher": 3.0, "median_ms": 1 / 3, "teacher_median_ms": 1.0}}}
    return schema.upgrade({"schema_version": 2, "kind": "compare", "name": name, "teacher": entry,
                           "methods": [method], "splits": {"calibration": 10, "validation": 10, "fine_tuning": 80,
                                                           "test": 50},
                           "data": "d", "finetune_budget_epochs": 3, "settings": {"latency": "l", "latency_runs": 5},
                           "notes": [], "command": "python -m benchmarks compare --task configs/a",
                           "date": "2026-12-02", "total_wall_s": 60})


def test_compare_table_reports_speedup_over_flop_ratio():
    header, _, _, student = render.compare_table(_compare_result("compare_a")).splitlines()[:4]
    column = header.split(" | ").index("fp32 speed-up ÷ FLOP ratio")
    assert student.split(" | ")[column] == "0.75"  # 3.0x measured for a 4x FLOP cut
    assert "RMT-KD (MP) (`rmtkd-mp`)" in student


def test_each_section_has_its_markers_and_the_reading_is_kept(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    render.write_section("TABLE A v1", "compare", "compare_a", doc)
    render.write_section("TABLE B", "seeds", "b", doc)
    begin_a, end_a = render.markers("compare", "compare_a")
    doc.write_text(doc.read_text().replace(end_a, end_a + "\nreading of A, written by hand\n"))
    render.write_section("TABLE A v2", "compare", "compare_a", doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert "TABLE A v1" not in text and text.count("TABLE A v2") == 1 and text.count("TABLE B") == 1
    assert "reading of A, written by hand" in text and "<!-- seeds:b:begin -->" in text
    assert text.index(begin_a) < text.index("TABLE A v2") < text.index(end_a) < text.index("TABLE B")
    assert render.section("compare", "compare_a", doc) == "TABLE A v2"


def test_no_sys_path_hacks_in_benchmarks():
    offenders = [p for p in (ROOT / "benchmarks").rglob("*.py") if "sys.path" in p.read_text()]
    assert offenders == []


# The defaults of the scripts the driver replaced (git show ef27f99:benchmarks/run_compression.py and
# b251c7a:benchmarks/compare_methods.py): a recorded command that relied on one still gets it.
OLD_DEFAULTS = {
    "compress": {"rank_rule": "mp", "tau": 0.5, "target_params": None, "max_drop": 1.0, "epochs_per_step": 1,
                 "final_epochs": 2, "max_steps": 12, "batch_size": 64, "learning_rate": 1e-4, "runs": 300, "seed": 0,
                 "seq_len": None, "order": "shallow-to-deep", "test_limit": None, "calibration_fraction": 0.1,
                 "validation_fraction": 0.1, "latency_seq_len": None, "limit": None},
    "compare": {"limit": None, "test_limit": None, "calibration_fraction": 0.1, "validation_fraction": 0.1,
                "seq_len": None, "order": "shallow-to-deep", "match_params": "auto", "methods": ",".join(driver.METHODS),
                "tau": 0.5, "energy_fraction": 0.9, "max_drop": 1.0, "schedule": "budgeted", "target_params": None,
                "target_flops": None, "epochs": 3, "search_tolerance": 5.0, "validation": "auto", "epochs_per_step": 1,
                "max_steps": 7, "final_epochs": 1, "batch_size": 64, "learning_rate": 1e-4,
                "scratch_learning_rate": 1e-3, "distillation_learning_rate": 1e-3, "runs": 200, "seed": 0},
    "floor": {"runs": 200, "students": [], "name": None, "out": None},
}


@pytest.mark.parametrize("command", sorted(OLD_DEFAULTS))
def test_defaults_match_the_replaced_scripts(command):
    args = driver.parse([command, "--teacher", "t.keras", "--data", "d"])
    assert {key: getattr(args, key) for key in OLD_DEFAULTS[command]} == OLD_DEFAULTS[command]


@pytest.mark.slow
def test_compress_runs_end_to_end_on_the_packaged_model(tmp_path, capsys):
    """The driver's `compress` on the packaged CIFAR-10 CNN and sample: a version-2 result that renders."""
    out = tmp_path / "e2e.json"
    argv = ["compress", "--teacher", "rmtkd_tf/assets/cifar10_cnn.keras", "--data", "rmtkd_tf/assets/cifar10_sample.npz",
            "--epochs", "1", "--target-params", "0.6", "--runs", "5", "--name", "e2e", "--out", str(out),
            "--run-dir", str(tmp_path / "run")]
    assert driver.main(argv) == 0
    result = schema.read_result(out)
    assert (result["schema_version"], result["kind"], result["name"]) == (2, "compress", "e2e")
    assert result["command"] == driver.command_line(argv) and "command_as_run" not in result
    student = result["methods"][0]
    assert student["params"] <= 0.6 * result["teacher"]["params"] + 1
    assert set(student["exports"]) == {"fp32", "fp16", "int8"} and student["latency"]["fp32"]["speedup_vs_teacher"] > 0
    assert result["settings"]["timing_protocol"] == timing.PROTOCOL
    table = render.results_table([result])
    assert "| e2e |" in table and driver.command_line(argv) in table


def test_results_made_by_a_replaced_script_are_marked_in_the_table():
    """A row whose result was made by a script since replaced carries the mark and the table explains it once;
    a row made by its own driver command carries none."""
    results = {r["name"]: r for r in compress_results()}
    old, new = results["cifar10_mlp"], results["sst2_bert_tiny"]
    assert render.made_by_old_code(old) and not render.made_by_old_code(new)
    table = render.results_table([old, new])
    assert "| cifar10_mlp" + render.OLD_CODE_MARK + " |" in table and "| sst2_bert_tiny |" in table
    assert table.count(render.OLD_CODE_NOTE) == 1
    assert render.OLD_CODE_NOTE not in render.results_table([new])


def test_report_renders_a_task_of_any_kind(capsys):
    assert driver.main(["report", "--task", "configs/cifar10_mlp_seeds"]) == 0
    out = capsys.readouterr().out
    assert "<!-- seeds:cifar10_mlp:begin -->" in out and render.section("seeds", "cifar10_mlp") in out
    assert driver.main(["report", "--task", "configs/latency_floor_sst2_minilm_scratch"]) == 0  # no section: nothing


def test_report_of_a_task_without_result_is_one_line(tmp_path, capsys):
    path = tmp_path / "compare_nothing_yet.json"
    path.write_text(json.dumps({"kind": "compare", "teacher": "t", "data": "d"}))
    with pytest.raises(SystemExit, match="^error: .*compare_nothing_yet.json"):
        driver.main(["report", "--task", str(path)])
