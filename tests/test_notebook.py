"""Execute notebooks/walkthrough.ipynb end to end (reduced settings) with nbclient, as CI does."""

import json
from pathlib import Path

import pytest

nbclient = pytest.importorskip(
    "nbclient", reason="nbclient is not installed (pip install -e '.[test]' installs nbclient, nbformat, ipykernel)"
)
import nbformat  # noqa: E402  (a dependency of nbclient)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"

# Small enough for CI (2 cores): one RMT-KD step, no final distillation, a short benchmark.
REDUCED = {"LIMIT": 400, "DISTILLATION_EPOCHS": 1, "LATENCY_RUNS": 20}


def _with_parameters(notebook, values):
    """Insert a cell after the one tagged "parameters" that overrides `values` (papermill's convention)."""
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = notebook.cells[index].source
    missing = [name for name in values if f"{name} =" not in source]
    assert not missing, f"the parameters cell no longer defines {missing}"
    lines = [f"{name} = {value!r}" for name, value in values.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
    return notebook


def _png_outputs(notebook):
    return [output for cell in notebook.cells for output in cell.get("outputs", [])
            if "image/png" in output.get("data", {})]


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_walkthrough_runs_analyze_compress_export_bench(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    notebook = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), {**REDUCED, "OUTPUT_DIR": str(tmp_path)})
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell's traceback, on any error

    spectra = _png_outputs(notebook)
    assert len(spectra) >= 2, "the spectrum plots were not displayed inline"
    for name in ("teacher_fp32", "teacher_int8", "student_fp32", "student_int8"):
        assert (tmp_path / f"{name}.tflite").stat().st_size > 0
    assert (tmp_path / "compress" / "student.keras").exists()

    summary_cell = next(cell for cell in notebook.cells if cell.source.startswith("summary = {"))
    summary = json.loads("".join(o["text"] for o in summary_cell.outputs if o.get("name") == "stdout"))
    assert summary["student_params"] < summary["teacher_params"]
    assert 0 < summary["param_reduction"] < 1
    for key in ("teacher_test_accuracy", "student_test_accuracy", "student_int8_tflite_accuracy"):
        assert 20.0 < summary[key] <= 100.0, (key, summary[key])  # 10 classes: well above chance
    assert summary["student_int8_kib"] < summary["teacher_fp32_kib"]
    assert summary["fp32_speedup"] > 0 and summary["int8_speedup"] > 0
