"""Joint query/key surgery on a tiny randomly initialised BERT: exact at full rank, the predicted error below it."""

import numpy as np
import pytest

import keras

from rmtkd_tf.model_walk import iter_graph_layers
from rmtkd_tf.transformers import LowRankTransformerEncoder, encoder_flops
from rmtkd_tf.transformers.joint_qk_surgery import collect_qk_moments, factorize_joint_qk, qk_factors
from rmtkd_tf.transformers.low_rank_encoder import joint_qk_rank
from tests.test_transformers_encoder import ENCODER, SEQ_LEN, tiny_bert_classifier, token_batch

HEAD_DIM = 8  # hidden 16, 2 heads
ENCODERS = [ENCODER.format(0), ENCODER.format(1)]


def layers_of(model):
    return dict(iter_graph_layers(model))


def attention_inputs(model, path, x):
    """The unpadded tokens `(n, hidden)` that enter the attention of the encoder at `path`."""
    query = layers_of(model)[path]._self_attention_layer._query_dense
    captured = []
    original = query.call
    query.call = lambda inputs, *a, **k: captured.append(keras.ops.convert_to_numpy(inputs)) or original(inputs, *a, **k)
    try:
        model(x, training=False)
    finally:
        del query.call
    return captured[0][x["padding_mask"].astype(bool)].astype(np.float64)


def centred_scores(encoder, tokens):
    """`(heads, n, n)` scores of every token pair (before 1/sqrt(d)), centred over keys."""
    attention = encoder._self_attention_layer
    q = np.einsum("ic,chd->hid", tokens, keras.ops.convert_to_numpy(attention._query_dense.kernel))
    q += keras.ops.convert_to_numpy(attention._query_dense.bias)[:, None, :]
    k = np.einsum("jc,chd->hjd", tokens, keras.ops.convert_to_numpy(attention._key_dense.kernel))
    z = q @ np.transpose(k, (0, 2, 1))
    return z - z.mean(axis=-1, keepdims=True)


def test_full_rank_reproduces_the_teacher_and_round_trips(tmp_path):
    model = tiny_bert_classifier()
    x = token_batch(48)
    moments = collect_qk_moments(model, x, batch_size=16)
    assert set(moments) == set(ENCODERS)
    assert moments[ENCODERS[0]].n_tokens == int(x["padding_mask"].sum())
    student = factorize_joint_qk(model, qk_factors(model, moments, {p: HEAD_DIM for p in ENCODERS}))
    encoder = layers_of(student)[ENCODERS[1]]
    assert isinstance(encoder, LowRankTransformerEncoder) and joint_qk_rank(encoder) == HEAD_DIM
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(student.predict(x, verbose=0), expected, atol=1e-5)
    assert not {id(v) for v in model.weights} & {id(v) for v in student.weights}
    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    assert joint_qk_rank(layers_of(reloaded)[ENCODERS[0]]) == HEAD_DIM
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5)


def test_lower_rank_score_error_is_what_the_maths_predicts():
    model = tiny_bert_classifier(seed=1)
    x = token_batch(40, seed=2)
    path = ENCODERS[0]  # its input is the teacher's in the student too
    moments = collect_qk_moments(model, x, [path], key_covariance="global")
    tokens = attention_inputs(model, path, x)
    teacher_scores = centred_scores(layers_of(model)[path], tokens)
    previous = np.inf
    for rank in (1, 3, 5):
        factors = qk_factors(model, moments, {path: rank})
        student = factorize_joint_qk(model, factors)
        encoder = layers_of(student)[path]
        assert tuple(encoder._self_attention_layer._query_dense.kernel.shape) == (16, 2, rank)
        error = ((centred_scores(encoder, tokens) - teacher_scores) ** 2).mean(axis=(1, 2))
        np.testing.assert_allclose(error, factors[path].errors, rtol=1e-3)
        assert 0 < error.sum() < previous
        previous = error.sum()
        # The score product narrows from key_dim to rank per head; the value product is untouched.
        saved = 2 * SEQ_LEN * SEQ_LEN * 2 * (HEAD_DIM - rank) + 2 * SEQ_LEN * 2 * 16 * 2 * (HEAD_DIM - rank)
        assert encoder_flops(layers_of(model)[path]) - encoder_flops(encoder) == saved


def test_joint_qk_parts_name_the_query_and_key_of_each_joint_encoder():
    from rmtkd_tf.joint_qk import joint_qk_parameter_count
    from rmtkd_tf.model_walk import iter_graph_layers
    from rmtkd_tf.transformers.low_rank_encoder import joint_qk_parts

    model = tiny_bert_classifier()
    assert joint_qk_parts(iter_graph_layers(model)) == {}
    moments = collect_qk_moments(model, token_batch(32))
    student = factorize_joint_qk(model, qk_factors(model, moments, {ENCODERS[0]: 3}))
    parts = joint_qk_parts(iter_graph_layers(student))
    assert sorted(parts) == [ENCODERS[0] + "/attention_key", ENCODERS[0] + "/attention_query"]
    entry = parts[ENCODERS[0] + "/attention_query"]
    assert (entry["joint_qk_rank"], entry["heads"], entry["rank"]) == (3, 2, 6)
    assert 2 * entry["params_after"] == joint_qk_parameter_count(16, 2, 3)


def test_joint_rank_excludes_separate_query_and_key_ranks():
    with pytest.raises(ValueError, match="leave query_rank and key_rank None"):
        LowRankTransformerEncoder(intermediate_dim=8, num_heads=2, joint_qk_rank=2, key_rank=3)
    encoder = LowRankTransformerEncoder(intermediate_dim=8, num_heads=2, joint_qk_rank=5)
    with pytest.raises(ValueError, match="joint_qk_rank must be in"):
        encoder.build((1, 3, 8))
    config = LowRankTransformerEncoder(intermediate_dim=8, num_heads=2, joint_qk_rank=3, value_rank=2).get_config()
    assert LowRankTransformerEncoder.from_config(config).joint_qk_rank == 3


@pytest.mark.slow
def test_joint_qk_student_exports_to_tflite_without_flex_ops(tmp_path):
    from rmtkd_tf.export import export_tflite, tflite_predict

    model = tiny_bert_classifier(pooling="cls")
    x = token_batch(32, seed=4)
    moments = collect_qk_moments(model, x)
    student = factorize_joint_qk(model, qk_factors(model, moments, {p: 3 for p in ENCODERS}))
    report = export_tflite(student, tmp_path / "student.tflite", verify_inputs=x)
    assert report.flex_ops == []
    assert report.verification["max_abs_err"] < 1e-4 and report.verification["top1_agreement"] == 1.0
    np.testing.assert_allclose(tflite_predict(report.path, x), student.predict(x, verbose=0), atol=1e-4)


def test_factorize_with_joint_qk_replaces_separate_query_and_key_cuts_at_no_more_parameters():
    from rmtkd_tf.collection import collect_activations
    from rmtkd_tf.surgery import factorize_model
    from rmtkd_tf.transformers.joint_qk_surgery import factorize_with_joint_qk
    from tests.test_transformers_encoder import all_factors

    model = tiny_bert_classifier()
    x = token_batch(48)
    factors = all_factors(collect_activations(model, x, batch_size=16), rank=4,
                          parts=("attention_query", "attention_key", "attention_value"))
    factors.pop(ENCODERS[1] + "/attention_key")  # only encoder 0 has both query and key cut
    separate = factorize_model(model, factors)
    student, ranks = factorize_with_joint_qk(model, factors, collect_qk_moments(model, x))
    # Separate: 2 x (16*4 + 4*16 + 16) = 288 parameters; joint: 2*heads*(hidden+1) = 68 per unit of rank -> 4.
    assert ranks == {ENCODERS[0]: 4}
    encoder = layers_of(student)[ENCODERS[0]]
    assert joint_qk_rank(encoder) == 4 and encoder.value_rank == 4
    assert joint_qk_rank(layers_of(student)[ENCODERS[1]]) is None
    assert student.count_params() <= separate.count_params()
    assert np.all(np.isfinite(student.predict(x, verbose=0)))


def test_joint_qk_is_a_budgeted_option():
    from rmtkd_tf.compression import CompressionConfig
    from rmtkd_tf.errors import RMTKDError

    assert CompressionConfig().joint_qk is False
    with pytest.raises(RMTKDError, match="budgeted"):
        CompressionConfig(schedule="iterative", joint_qk=True)


@pytest.mark.slow
def test_budgeted_compress_with_joint_qk_cuts_query_and_key_jointly(tmp_path):
    from rmtkd_tf.compression import CompressionConfig, CompressionData
    from rmtkd_tf.compression import run as compress
    from rmtkd_tf.progress import RunLog
    from rmtkd_tf.report import format_summary
    from rmtkd_tf.run_report import SpectrumRecorder, write_run_report
    from rmtkd_tf.tensorboard import TensorBoardLog, read_scalars

    model = tiny_bert_classifier()
    x, y = token_batch(96, seed=5), np.random.default_rng(5).integers(0, 3, 96)
    rows = lambda a, b: {k: v[a:b] for k, v in x.items()}  # noqa: E731
    data = CompressionData(x_train=rows(0, 64), y_train=y[:64], x_calibration=rows(0, 64),
                           x_validation=rows(64, 96), y_validation=y[64:], x_test=rows(64, 96), y_test=y[64:])
    config = CompressionConfig(schedule="budgeted", target_params=0.9, distillation_epochs=1, batch_size=32,
                               calibration_samples=64, rank_rule="energy", max_drop=100.0, joint_qk=True,
                               layers=[p + "/" + part for p in ENCODERS for part in ("attention_query", "attention_key")])
    log = RunLog(quiet=True)
    spectra = log.add_listener(SpectrumRecorder())
    board = log.add_listener(TensorBoardLog(tmp_path / "tb"))
    student, report = compress(model, data, config, tmp_path / "run", log=log)
    board.close()
    joint = [joint_qk_rank(layer) for _, layer in iter_graph_layers(student)]
    assert any(rank is not None for rank in joint), report["layers"]
    joint_ranks = report["attempts"][0]["joint_qk_ranks"]
    assert joint_ranks == {p: r for p, r in zip([p for p, _ in iter_graph_layers(student)], joint) if r is not None}
    assert report["student"]["params"] <= 0.9 * report["teacher"]["params"]

    # The rank tables show the joint per-head rank of query and key, not the separate ranks it replaced.
    summary = format_summary(report)
    scalars = read_scalars(tmp_path / "tb")
    markdown = write_run_report(tmp_path / "report", report, spectra).read_text()
    for encoder, rank in joint_ranks.items():
        for part in ("attention_query", "attention_key"):
            entry = report["layers"][f"{encoder}/{part}"]
            assert (entry["joint_qk_rank"], entry["rank"]) == (rank, 2 * rank)
            assert entry["params_after"] == layers_of(student)[encoder]._self_attention_layer._query_dense.count_params()
            assert f"joint Q/K {rank}/head (2 heads: {2 * rank})" in summary
            assert f"| {encoder}/{part} | 16 | " in markdown
            assert f"| joint Q/K {rank}/head (2 heads: {2 * rank}) |" in markdown
            # ... and so does TensorBoard's rank of the attempt.
            assert scalars[f"rank/{encoder}/{part}"] == [(1, 2 * rank)]
