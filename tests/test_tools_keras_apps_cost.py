"""tools/keras_apps_cost.py --markdown: a measured calibration batch is shown and counted, an unmeasured one is not."""

from tools.keras_apps_cost import markdown


def _entry(collection):
    step = {"batch_size": 64, "wall_s_median": 1.0, "cpu_s_mean": 0.5}
    return {"application": "MobileNetV2", "input_size": 32, "params": 10, "flops_per_image": 2e6, "alpha": 1.0,
            "train": step, "inference": step, "distill": step, "collection": collection,
            "decide_ranks_wall_s": 20.0, "decide_ranks_cpu_s": 10.0}


def test_calibration_cells_measured_and_not():
    measured = {"batch_size": 64, "batches_timed": 3, "wall_s_per_batch": 0.25, "cpu_s_per_batch": 0.125}
    old = {"batch_size": 64, "batches": [1, 4], "wall_s_per_batch": -2.0, "cpu_s_per_batch": 1.0}
    lines = markdown({"results": {"a": _entry(measured), "b": _entry(old)}}).splitlines()
    rows = [line for line in lines if line.startswith("| MobileNetV2")]
    assert "| 0.25 / 0.12 | 20 / 10 |" in rows[0] and "| n/a | 20 / 10 |" in rows[1]
    assert "*" not in rows[2] and rows[3].endswith("* |")  # the unmeasured calibration is left out of the totals


def test_a_model_timed_under_another_dtype_policy_is_named_so_in_both_tables():
    measured = {"batch_size": 64, "batches_timed": 3, "wall_s_per_batch": 0.25, "cpu_s_per_batch": 0.125}
    bf16 = dict(_entry(measured), dtype_policy="mixed_bfloat16")
    lines = markdown({"results": {"a": _entry(measured), "a/bf16": bf16}}).splitlines()
    rows = [line for line in lines if line.startswith("| MobileNetV2")]
    assert [", mixed_bfloat16 |" in row.split("|")[1] + "|" for row in rows] == [False, True, False, True]


def test_a_stopped_run_is_recovered_with_its_dtype_policy(tmp_path):
    from tools.keras_apps_cost import recover_from_log

    step = "{'batch_size': 64, 'wall_s_median': 1.0, 'cpu_s_mean': 0.5}"
    log = tmp_path / "run.log"
    log.write_text(f"ResNet50@32/mixed_bfloat16: 23,608,202 params\n  inference {step}\n  train {step}\n")
    out = tmp_path / "out.json"
    recover_from_log(log, out, "python -m tools.keras_apps_cost --dtype-policies mixed_bfloat16")
    import json

    entry = json.loads(out.read_text())["results"]["ResNet50@32/mixed_bfloat16"]
    assert entry["input_size"] == 32 and entry["dtype_policy"] == "mixed_bfloat16" and entry["params"] == 23608202
