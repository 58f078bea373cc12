"""The models users bring, small and randomly initialised: keras.applications backbones and a keras-hub encoder.

Each goes through what `compress` does to it, without the training: calibration batches, rank selection,
surgery (exact at full rank, in the post-BatchNorm metric where a BN follows), save/reload and a TFLite
export with builtin ops only. BatchNorm statistics are randomised so that activations are O(1) and a wrong
fold or a dropped bias would show (a fresh BN is the identity and hides both).
"""

import json
import os

import keras
import numpy as np
import pytest

import rmtkd_tf  # noqa: F401  (registers the factorized layers for load_model)
from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.export import export_tflite
from rmtkd_tf.flops import model_flops
from rmtkd_tf.model_walk import CANDIDATE, SKIPPED, iter_graph_layers, layer_support, output_layers
from rmtkd_tf.selection import decide_ranks, layer_factors
from rmtkd_tf.spectral import get_rank_rule
from rmtkd_tf.surgery import LayerFactors, factorize_model

# Rank selection on the layers up to this width (numpy's eigh on the 1280-2048-wide heads is what costs).
SELECTED_MAX_DIM = 256


def _randomise_batchnorms(model, seed=0):
    rng = np.random.default_rng(seed)
    for _, layer in iter_graph_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = []
            for variable in layer.weights:
                shape, name = tuple(variable.shape), variable.name
                if name in ("gamma", "moving_variance"):
                    weights.append(rng.uniform(0.5, 1.5, shape))
                else:  # beta, moving_mean
                    weights.append(rng.normal(scale=0.2, size=shape))
            layer.set_weights([w.astype("float32") for w in weights])


def _outputs(model, x):
    """The model's outputs, called eagerly: tracing `predict` for every copy of a 200-layer model costs more."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def _assert_close(actual, expected, rtol=1e-4):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, atol=rtol * scale, rtol=0)


def _run_pipeline(model, x, tmp_path, export=True):
    """Calibrate, select ranks, cut, check exactness, save/reload and export; returns (decisions, student)."""
    _randomise_batchnorms(model)
    teacher_out = _outputs(model, x)
    assert np.abs(teacher_out).max() > 1e-3  # a model whose outputs vanish would hide any surgery error

    layers = dict(candidate_layers(model))
    for path, layer in iter_graph_layers(model):
        status, reason = layer_support(layer)
        if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization)):
            assert status == SKIPPED and reason, path
            assert path not in layers
    stats = collect_activations(model, x, batch_size=8)
    assert set(stats) == set(layers)
    assert all(layer_support(layers[p])[0] == CANDIDATE for p in layers)

    selected = {p: s for p, s in stats.items() if s.dim <= SELECTED_MAX_DIM}
    decisions, factors = decide_ranks(layers, selected, get_rank_rule("mp", tau=0.5))
    assert factors, "the MP rule reduced no layer"

    # Full rank in each decision's own metric (oblique where a BN is folded), identity elsewhere: exact.
    full = {p: LayerFactors(np.eye(s.dim), s.mean) for p, s in stats.items()}
    for decision in decisions:
        if decision.skipped is None:
            full[decision.path] = layer_factors(stats[decision.path], decision, decision.dim)
    exact = factorize_model(model, full)
    _assert_close(_outputs(exact, x), teacher_out)

    student = factorize_model(model, factors)
    assert student.count_params() < model.count_params()
    assert model_flops(student) < model_flops(model)
    student_out = _outputs(student, x)
    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(_outputs(reloaded, x), student_out, rtol=0, atol=1e-6)
    if export:
        report = export_tflite(reloaded, tmp_path / "student.tflite", verify_inputs=x[:4])
        assert report.flex_ops == [] and not any(op.startswith("Flex") for op in report.op_histogram)
        assert report.verification["max_abs_err"] <= 1e-3 * max(1.0, float(np.abs(student_out).max()))
    return decisions, student, report.op_histogram if export else None


def _images(n=16, high=255.0, seed=1):
    return np.random.default_rng(seed).uniform(0.0, high, size=(n, 32, 32, 3)).astype("float32")


def test_mobilenet_v2_as_a_nested_base(tmp_path):
    """The transfer-learning idiom: the keras.applications model is one layer of the user's model."""
    base = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, include_top=False)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    decisions, student, ops = _run_pipeline(model, _images(high=1.0), tmp_path)

    prefix = base.name + "/"
    by_path = {d.path: d for d in decisions}
    # The 1x1 projection after a depthwise conv is a candidate, with its BatchNormalization folded inside the base.
    project = by_path[prefix + "block_1_project"]
    assert project.metric == "post-batchnorm" and "block_1_project_BN" in project.metric_note
    assert layer_support(base.get_layer("block_1_depthwise"))[0] == SKIPPED
    # The student keeps the nesting (paths unchanged) and the depthwise convs as they were.
    student_paths = dict(iter_graph_layers(student))
    assert type(student_paths[prefix + "block_1_depthwise"]).__name__ == "DepthwiseConv2D"
    reduced = [d.path for d in decisions if d.rank is not None]
    assert all(type(student_paths[p]).__name__ == "LowRankConv2D" for p in reduced if p.startswith(prefix))
    assert ops["DEPTHWISE_CONV_2D"] == 17


def test_mobilenet_v3_small_with_hard_swish(tmp_path):
    model = keras.applications.MobileNetV3Small(
        weights=None, minimalistic=False, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    activations = {l.activation.__name__ for _, l in iter_graph_layers(model) if isinstance(l, keras.layers.Activation)}
    assert "hard_silu" in activations  # keras' name for hard_swish
    # The head is the 1x1 Conv2D before Flatten and the output Activation: left out unless asked for.
    assert [layer.name for layer in output_layers(model)] == ["logits"]
    assert "logits" not in dict(candidate_layers(model, include_outputs=False))
    _, _, ops = _run_pipeline(model, _images(), tmp_path)
    assert ops.get("HARD_SWISH", 0) > 0


def test_efficientnet_b0(tmp_path):
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    decisions, _, _ = _run_pipeline(model, _images(), tmp_path, export=False)
    # Squeeze-and-excitation 1x1 convs (swish/sigmoid inline, no BN) are analysed unweighted.
    se = [d for d in decisions if d.path.endswith("_se_reduce")]
    assert se and all(d.metric == "pre-activation" for d in se)


def _bottleneck_block(x, filters, stride, name):
    """ResNet-50's v1 bottleneck (1x1 -> 3x3 -> 1x1, BN after each, projection shortcut), as keras.applications builds it."""
    shortcut = keras.layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
    shortcut = keras.layers.BatchNormalization(epsilon=1.001e-5, name=name + "_0_bn")(shortcut)
    x = keras.layers.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=name + "_1_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_1_relu")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=name + "_2_bn")(x)
    x = keras.layers.Activation("relu", name=name + "_2_relu")(x)
    x = keras.layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name=name + "_3_bn")(x)
    x = keras.layers.Add(name=name + "_add")([shortcut, x])
    return keras.layers.Activation("relu", name=name + "_out")(x)


def test_small_resnet_bottlenecks(tmp_path):
    """CI's stand-in for ResNet-50 (see the slow test below): the same blocks, two of them, 16-64 channels."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(3)(inputs)
    x = keras.layers.Conv2D(16, 7, strides=2, name="conv1_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = _bottleneck_block(x, 16, 1, "conv2_block1")
    x = _bottleneck_block(x, 32, 2, "conv3_block1")
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))
    decisions, _, ops = _run_pipeline(model, _images(high=1.0), tmp_path)
    by_path = {d.path: d for d in decisions}
    assert by_path["conv2_block1_3_conv"].metric == "post-batchnorm"  # BN before the residual Add is folded
    assert "ADD" in ops and not any(op.startswith("Flex") for op in ops)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RMTKD_SLOW_TESTS"), reason="minutes on 2 cores; set RMTKD_SLOW_TESTS=1")
@pytest.mark.parametrize("application", ["ResNet50", "EfficientNetB0"])
def test_full_size_application_with_export(tmp_path, application):
    """ResNet-50 itself (CI runs the bottleneck stand-in above) and EfficientNet-B0's TFLite export."""
    model = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3), classes=10,
                                                     classifier_activation=None)
    _run_pipeline(model, _images(), tmp_path)


def _cli(args):
    from click.testing import CliRunner

    from cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _compress_and_export_with_the_cli(model, tmp_path, n_train=60, n_test=20, compress_exports=False):
    """`rmtkd-tf compress` (defaults, a parameter target, one distillation epoch) then `rmtkd-tf export`.

    Returns (compress report, export report). CI's run leaves the export to `export` alone (`--no-export`:
    the teacher's conversion, latency timing and a second student conversion would double its time).
    """
    _randomise_batchnorms(model)
    model_path, data_path, out = tmp_path / "teacher.keras", tmp_path / "data.npz", tmp_path / "run"
    model.save(model_path)
    rng = np.random.default_rng(0)
    images = _images(n_train + n_test)
    labels = rng.integers(0, 10, n_train + n_test)
    np.savez(data_path, x_train=images[:n_train], y_train=labels[:n_train], x_test=images[n_train:],
             y_test=labels[n_train:])
    # Random labels and a random model: the run cannot confirm any accuracy, so it cuts to a target.
    result = _cli(["compress", model_path, "--data", data_path, "-o", out, "--target-params", "0.8",
                   "--distillation-epochs", "1", "-q", *([] if compress_exports else ["--no-export"])])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]
    if compress_exports:
        for side in ("teacher", "student"):
            export = report["export"][side]
            assert export["flex_ops"] == [] and export["verification"]["top1_agreement"] == 1.0, side
            assert export["verification"]["max_abs_err"] < 1e-3, side
    tflite, export_json = tmp_path / "student.tflite", tmp_path / "export.json"
    result = _cli(["export", out / "student.keras", "-o", tflite, "--data", data_path,
                   "--verify-samples", str(n_test), "--report-json", export_json])
    assert result.exit_code == 0, result.output
    exported = json.loads(export_json.read_text())
    assert tflite.stat().st_size > 0 and exported["flex_ops"] == []
    assert exported["verification"]["top1_agreement"] == 1.0 and exported["verification"]["max_abs_err"] < 1e-3
    return report, exported


def test_mobilenet_v2_through_compress_and_export_cli(tmp_path):
    """The keras.applications model as a user saves it, through both commands with no manual step."""
    model = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10,
                                           classifier_activation=None)
    report, exported = _compress_and_export_with_the_cli(model, tmp_path)
    assert exported["op_histogram"]["DEPTHWISE_CONV_2D"] == 17
    assert report["layers"] and all(entry["params_after"] < entry["params_before"]
                                    for entry in report["layers"].values())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RMTKD_SLOW_TESTS"), reason="minutes on 2 cores; set RMTKD_SLOW_TESTS=1")
@pytest.mark.parametrize("application, kwargs", [("ResNet50", {}), ("MobileNetV2", {"alpha": 1.0}),
                                                 ("EfficientNetB0", {})])
def test_full_size_application_through_compress_and_export_cli(tmp_path, application, kwargs):
    """The three teachers of issue #15 at full width (random weights, 32x32) through `compress` and `export`."""
    model = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3), classes=10,
                                                     classifier_activation=None, **kwargs)
    _compress_and_export_with_the_cli(model, tmp_path, compress_exports=True)


def test_user_built_keras_hub_encoder_classifier(tmp_path):
    """TokenAndPositionEmbedding + TransformerEncoder blocks + pooling + Dense: a user's functional model."""
    keras_hub = pytest.importorskip("keras_hub")
    length, vocabulary = 12, 64
    token_ids = keras.Input((length,), dtype="int32", name="token_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocabulary, length, 16, mask_zero=True, name="embedding")(token_ids)
    x = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=2, name="encoder_0")(x)
    x = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=2, name="encoder_1")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(token_ids, keras.layers.Dense(4, name="logits")(x))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocabulary, size=(24, length)).astype("int32")
    lengths = rng.integers(3, length + 1, size=24)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0  # padding (mask_zero) at the end

    stats = collect_activations(model, tokens)
    # The padding mask reaches the encoder through Keras' mask: padded tokens are no samples.
    assert stats["encoder_0/ffn_intermediate"].n_samples == int(lengths.sum())
    assert stats["encoder_1/attention_query"].n_samples == int(lengths.sum())
    assert layer_support(model.get_layer("embedding"))[0] == SKIPPED
    assert layer_support(model.get_layer("encoder_0"))[0] == CANDIDATE

    layers = dict(candidate_layers(model))
    decisions, factors = decide_ranks(layers, stats, get_rank_rule("fixed-ratio", ratio=0.5))
    full = {p: LayerFactors(np.linalg.eigh(s.covariance)[1][:, ::-1], s.mean) for p, s in stats.items()}
    _assert_close(factorize_model(model, full).predict(tokens, verbose=0), model.predict(tokens, verbose=0))
    student = factorize_model(model, factors)
    assert type(student.get_layer("encoder_0")).__name__ == "LowRankTransformerEncoder"
    assert student.count_params() < model.count_params()
    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(tokens, verbose=0), student.predict(tokens, verbose=0), atol=1e-6)
    report = export_tflite(reloaded, tmp_path / "student.tflite", verify_inputs=tokens[:4])
    assert report.flex_ops == [] and report.verification["max_abs_err"] < 1e-4
