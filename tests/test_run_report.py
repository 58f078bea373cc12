"""`report.md` and its plots; the spectrum plot of a fit without an MP bulk."""

import struct
from types import SimpleNamespace

import numpy as np
from matplotlib.figure import Figure

from rmtkd_tf.run_report import SpectrumRecorder, write_run_report
from rmtkd_tf.spectral import estimate_noise_variance
from rmtkd_tf.spectral.plotting import draw_spectrum, has_mp_bulk


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _spiked(d, n, spikes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, :len(spikes)] *= np.sqrt(spikes)
    return np.linalg.eigvalsh(np.cov(x, rowvar=False))


def _legend(eigenvalues, n, rank):
    fit = estimate_noise_variance(eigenvalues, n)
    axes = Figure().add_subplot()
    draw_spectrum(axes, eigenvalues, fit, rank, "t")
    return fit, [text.get_text() for text in axes.get_legend().get_texts()], axes


def test_a_fit_with_a_bulk_draws_the_mp_density():
    fit, legend, axes = _legend(_spiked(100, 2000, [30.0, 20.0]), 2000, 2)
    assert has_mp_bulk(fit)
    assert any(text.startswith("MP fit") for text in legend)
    assert len(axes.get_lines()) >= 1


def test_a_fit_without_a_bulk_draws_only_the_edge_and_says_so():
    # Every direction is signal (a conv layer on a trained net): eigenvalues spread over 6 decades.
    eigenvalues = np.geomspace(1e-5, 10.0, 27)
    fit, legend, _ = _legend(eigenvalues, 600, None)
    assert not has_mp_bulk(fit)
    assert not any(text.startswith("MP fit") for text in legend)
    assert any(text.startswith("no MP bulk") for text in legend)


def _report():
    return {
        "model": "m.keras", "data": "d.npz", "schedule": "budgeted", "cut_chosen_by": "target", "stopped": "done",
        "teacher": {"params": 1000, "flops": 5000, "val_accuracy": 90.0, "test_accuracy": 89.0},
        "student": {"params": 400, "flops": 3000, "val_accuracy": 89.5, "test_accuracy": 88.6},
        "layers": {"fc1": {"rank": 3}},
        "export": {"teacher": {"size_bytes": 4096, "precision": "fp32"}, "student": {"size_bytes": 2048, "precision": "fp32"}},
        "latency": {"teacher_ms": 2.0, "student_ms": 1.5, "runs": 50, "threads": 1},
    }


def test_report_md_links_plots_that_exist(tmp_path):
    recorder = SpectrumRecorder()
    eigenvalues = _spiked(40, 800, [25.0, 15.0, 9.0])
    fit = estimate_noise_variance(eigenvalues, 800)
    decision = SimpleNamespace(path="block/fc1", eigenvalues=eigenvalues, noise=fit.to_dict(), rule_rank=3, dim=40,
                               fan_in=64, units=40, n_samples=800, n_effective=800)
    recorder.on_event("analysis", {"step": 0, "decisions": [decision]})
    recorder.on_event("analysis", {"step": 5, "decisions": [SimpleNamespace(path="block/fc1", eigenvalues=None)]})
    assert recorder.decisions["block/fc1"] is decision  # the first analysis is kept

    path = write_run_report(tmp_path, _report(), recorder)
    text = path.read_text()
    assert "| parameters | 1,000 | 400 | -60.0% |" in text
    assert "| test accuracy | 89.00% | 88.60% | -0.40 pts |" in text
    assert "| `.tflite` latency (median) | 2 ms | 1.5 ms | -25.0% |" in text
    assert "| block/fc1 | 40 | 3 | 40 |" in text  # not in the report's layers: left at its full rank
    for name in ("compared.png", "ranks.png", "spectrum_block__fc1.png"):
        assert f"(report/{name})" in text
        width, height = _png_size(tmp_path / "report" / name)
        assert width > 300 and height > 200
    assert not list(tmp_path.rglob("*.tmp"))


def test_report_without_export_or_spectra_still_has_the_comparison(tmp_path):
    report = _report()
    del report["export"], report["latency"]
    text = write_run_report(tmp_path, report).read_text()
    assert "latency" not in text and "## Spectra" not in text
    assert (tmp_path / "report" / "compared.png").exists()
