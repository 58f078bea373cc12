"""The comparison tables of benchmarks/plot_compare.py: one marked section per task, text around it kept."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plot_compare():
    spec = importlib.util.spec_from_file_location("plot_compare", ROOT / "benchmarks" / "plot_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry(params, flops, accuracy, speedup=None):
    latency = None if speedup is None else {"fp32": {"speedup_vs_teacher": speedup, "median_ms": 1.0 / speedup,
                                                     "teacher_median_ms": 1.0}}
    return {"params": params, "param_reduction": 1 - params / 100, "flops": flops, "test_accuracy": accuracy,
            "tflite_fp32_test_accuracy": accuracy, "tflite_int8_test_accuracy": accuracy - 0.5,
            "size_bytes": {"fp32": 4096, "int8": 1024, "int8_gzip": 900}, "latency": latency,
            "finetune_epochs": 3, "compression_wall_s": 60.0}


def _result(name):
    return {
        "name": name, "teacher": {**_entry(100, 1000, 90.0), "encoder_params": None},
        "methods": [{"method": "rmtkd-mp", **_entry(20, 250, 89.5, speedup=3.0)}],
        "splits": {"calibration": 10, "validation": 10, "fine_tuning": 80, "test": 50},
        "data": "d", "finetune_budget_epochs": 3, "settings": {"latency": "l", "latency_runs": 5},
        "notes": [], "command": "c", "date": "2026-11-26", "total_wall_s": 60,
    }


def test_table_reports_speedup_over_flop_ratio(plot_compare):
    table = plot_compare.markdown_table(_result("compare_a"))
    header, _, _, student = table.splitlines()[:4]
    column = header.split(" | ").index("fp32 speed-up ÷ FLOP ratio")
    assert student.split(" | ")[column] == "0.75"  # 3.0x measured for a 4x FLOP cut


def test_each_task_has_its_own_section_and_the_reading_is_kept(plot_compare, tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    plot_compare.write_markdown_section("TABLE A v1", doc, "compare_a")
    plot_compare.write_markdown_section("TABLE B", doc, "compare_b")
    begin_a, end_a = plot_compare.markers("compare_a")
    doc.write_text(doc.read_text().replace(end_a, end_a + "\nreading of A, written by hand\n"))
    plot_compare.write_markdown_section("TABLE A v2", doc, "compare_a")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert "TABLE A v1" not in text and text.count("TABLE A v2") == 1 and text.count("TABLE B") == 1
    assert "reading of A, written by hand" in text
    assert text.index(begin_a) < text.index("TABLE A v2") < text.index(end_a) < text.index("TABLE B")
