"""RMT-KD inside keras-hub TransformerEncoder blocks, on a tiny randomly initialised BERT."""

import numpy as np
import pytest

import keras
import keras_hub

from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.factorization import leading_eigenvectors
from rmtkd_tf.layers import LowRankDense
from rmtkd_tf.model_walk import iter_graph_layers
from rmtkd_tf.selection import decide_ranks
from rmtkd_tf.spectral import get_rank_rule
from rmtkd_tf.surgery import LayerFactors, factorize_model
from rmtkd_tf.transformers import (
    ENCODER_PARTS,
    LowRankAttentionOutput,
    LowRankAttentionProjection,
    encoder_flops,
    LowRankTransformerEncoder,
    bert_classifier,
    encoder_parts,
    encoder_ranks,
)

SEQ_LEN = 16
ENCODER = "bert_backbone/transformer_layer_{}"


def tiny_bert_classifier(pooling="mean", seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=2 * SEQ_LEN, name="bert_backbone",
    )
    return bert_classifier(backbone, num_classes=3, sequence_length=SEQ_LEN, pooling=pooling, dropout=0.0)


def token_batch(n, seed=0, min_length=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, SEQ_LEN + 1, n)
    mask = (np.arange(SEQ_LEN)[None, :] < lengths[:, None]).astype("int32")
    ids = rng.integers(5, 100, (n, SEQ_LEN)).astype("int32") * mask
    return {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}


def all_factors(statistics, rank=None, parts=ENCODER_PARTS):
    factors = {}
    for path, stats in statistics.items():
        if path.rsplit("/", 1)[-1] in parts:
            k = stats.dim if rank is None else rank
            factors[path] = LayerFactors(leading_eigenvectors(stats.covariance, k)[1], stats.mean)
    return factors


def test_candidates_are_the_encoder_parts_and_the_head():
    model = tiny_bert_classifier()
    paths = [p for p, _ in candidate_layers(model)]
    parts = ["attention_query", "attention_key", "attention_value", "attention_output", "ffn_intermediate",
             "ffn_output"]
    assert paths == [ENCODER.format(i) + "/" + part for i in (0, 1) for part in parts] + ["logits"]
    assert [p for p, _ in candidate_layers(model, include_outputs=False)] == paths[:-1]


def test_low_rank_encoder_config_round_trip_and_bad_rank():
    encoder = LowRankTransformerEncoder(intermediate_dim=32, num_heads=2, feedforward_rank=3, name="enc")
    encoder.build((None, SEQ_LEN, 16))
    config = encoder.get_config()
    assert config["feedforward_rank"] == 3 and config["attention_output_rank"] is None
    clone = LowRankTransformerEncoder.from_config(config)
    clone.build((None, SEQ_LEN, 16))
    assert encoder_ranks(clone) == {"ffn_intermediate": 3}
    assert isinstance(encoder_parts(clone)["ffn_intermediate"], LowRankDense)
    # The replaced Dense is untracked: only the factorized weights count.
    dense = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=2)
    dense.build((None, SEQ_LEN, 16))
    assert dense.count_params() - clone.count_params() == (16 * 32 + 32) - (16 * 3 + 3 * 32 + 32)
    with pytest.raises(ValueError, match="feedforward_rank"):
        LowRankTransformerEncoder(intermediate_dim=32, num_heads=2, feedforward_rank=0)


def test_full_rank_surgery_keeps_outputs_and_round_trips(tmp_path):
    model = tiny_bert_classifier()
    x = token_batch(48)
    statistics = collect_activations(model, x, batch_size=16)
    student = factorize_model(model, all_factors(statistics))
    kinds = {p: type(l).__name__ for p, l in iter_graph_layers(student)}
    assert kinds[ENCODER.format(0)] == kinds[ENCODER.format(1)] == "LowRankTransformerEncoder"
    encoder = dict(iter_graph_layers(student))[ENCODER.format(0)]
    assert isinstance(encoder_parts(encoder)["attention_output"], LowRankAttentionOutput)
    assert isinstance(encoder_parts(encoder)["attention_key"], LowRankAttentionProjection)
    full_ranks = {"attention_query": 16, "attention_key": 16, "attention_value": 16, "attention_output": 16,
                  "ffn_intermediate": 32, "ffn_output": 16}
    assert encoder_ranks(encoder) == full_ranks
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(student.predict(x, verbose=0), expected, atol=1e-5)
    # The teacher is untouched and shares no variables with the student.
    assert not {id(v) for v in model.weights} & {id(v) for v in student.weights}

    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    reloaded_encoder = dict(iter_graph_layers(reloaded))[ENCODER.format(1)]
    assert type(reloaded_encoder).__name__ == "LowRankTransformerEncoder"
    assert encoder_ranks(reloaded_encoder) == full_ranks
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5)


def test_truncated_ranks_shrink_the_model_and_refactorize_through_the_bottleneck(tmp_path):
    model = tiny_bert_classifier()
    x = token_batch(64, seed=1)
    statistics = collect_activations(model, x, batch_size=32)
    student = factorize_model(model, all_factors(statistics, rank=4, parts=("ffn_intermediate",)))
    ffn_saving = (16 * 32 + 32) - (16 * 4 + 4 * 32 + 32)
    assert model.count_params() - student.count_params() == 2 * ffn_saving
    encoder = dict(iter_graph_layers(student))[ENCODER.format(0)]
    assert encoder_ranks(encoder) == {"ffn_intermediate": 4}
    # Everything else in the encoder kept the teacher's weights.
    teacher_encoder = dict(iter_graph_layers(model))[ENCODER.format(0)]
    np.testing.assert_array_equal(
        encoder._feedforward_output_dense.kernel.numpy(), teacher_encoder._feedforward_output_dense.kernel.numpy()
    )
    # A factorized part is analysed through its bottleneck (k = 4) and can be reduced again; the other
    # part of the same encoder keeps its rank.
    again = collect_activations(student, x, layers=[ENCODER.format(0) + "/ffn_intermediate"], batch_size=32)
    assert again[ENCODER.format(0) + "/ffn_intermediate"].dim == 4
    smaller = factorize_model(student, all_factors(again, rank=4))  # full rank of the bottleneck
    np.testing.assert_allclose(smaller.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-5)
    smaller = factorize_model(student, {ENCODER.format(1) + "/attention_output": LayerFactors(
        leading_eigenvectors(statistics[ENCODER.format(1) + "/attention_output"].covariance, 5)[1],
        statistics[ENCODER.format(1) + "/attention_output"].mean)})
    ranks = {p: encoder_ranks(l) for p, l in iter_graph_layers(smaller) if p.startswith("bert_backbone/transformer")}
    assert ranks == {ENCODER.format(0): {"ffn_intermediate": 4},
                     ENCODER.format(1): {"ffn_intermediate": 4, "attention_output": 5}}


def test_rank_decisions_cover_every_encoder_part():
    model = tiny_bert_classifier()
    x = token_batch(200, seed=2)
    layers = dict(candidate_layers(model, include_outputs=False))
    statistics = collect_activations(model, x, layers=list(layers), batch_size=50)
    decisions, factors = decide_ranks(layers, statistics, get_rank_rule("mp"))
    assert [d.path for d in decisions] == list(layers)
    for decision in decisions:
        assert decision.layer_type in ("Dense", "EinsumDense")
        assert decision.n_samples == int(x["padding_mask"].sum())
        assert decision.rank is not None or decision.skipped


def test_padding_tokens_are_excluded_from_the_covariance():
    model = tiny_bert_classifier()
    x = token_batch(40, seed=3)
    padded = x["padding_mask"] == 0
    assert padded.any()
    other = {k: v.copy() for k, v in x.items()}
    other["token_ids"][padded] = np.random.default_rng(9).integers(1, 100, int(padded.sum()))
    first = collect_activations(model, x, batch_size=16)
    second = collect_activations(model, other, batch_size=16)
    n_real = int(x["padding_mask"].sum())
    for path in (ENCODER.format(0) + "/ffn_intermediate", ENCODER.format(1) + "/attention_output",
                 ENCODER.format(1) + "/attention_query", ENCODER.format(0) + "/ffn_output"):
        assert first[path].n_samples == second[path].n_samples == n_real
        np.testing.assert_allclose(first[path].mean, second[path].mean, atol=1e-5)
        np.testing.assert_allclose(first[path].covariance, second[path].covariance, atol=1e-5)
    # The statistics are those of the real tokens alone: recompute the FFN pre-activations by hand.
    encoder = dict(iter_graph_layers(model))[ENCODER.format(0)]
    captured = []
    dense = encoder._feedforward_intermediate_dense
    original = dense.call
    dense.call = lambda inputs, **kw: captured.append(keras.ops.convert_to_numpy(inputs)) or original(inputs, **kw)
    try:
        model(x, training=False)  # eager: the captured inputs are concrete
    finally:
        del dense.call
    hidden = captured[-1][x["padding_mask"] == 1] @ dense.kernel.numpy() + dense.bias.numpy()
    stats = first[ENCODER.format(0) + "/ffn_intermediate"]
    np.testing.assert_allclose(stats.mean, hidden.mean(0), atol=1e-4)
    np.testing.assert_allclose(stats.covariance, np.cov(hidden.T, bias=True), atol=1e-4)
    # The query projection's (heads, head_dim) outputs are one 16-wide sample per real token.
    query = encoder._self_attention_layer._query_dense
    captured_query = []
    query_call = query.call
    query.call = lambda inputs, **kw: captured_query.append(keras.ops.convert_to_numpy(inputs)) or query_call(inputs, **kw)
    try:
        model(x, training=False)
    finally:
        del query.call
    kernel = query.kernel.numpy().reshape(16, -1)
    q = captured_query[-1][x["padding_mask"] == 1] @ kernel + query.bias.numpy().reshape(-1)
    np.testing.assert_allclose(first[ENCODER.format(0) + "/attention_query"].covariance, np.cov(q.T, bias=True), atol=1e-4)
    # Hooks are gone afterwards: the encoder and its sublayers use their class's call again.
    assert "call" not in vars(encoder) and "call" not in vars(dense)


def test_encoder_flops_count_dense_sublayers_at_every_token_and_the_attention_products():
    model = tiny_bert_classifier()
    teacher_encoder = dict(iter_graph_layers(model))[ENCODER.format(0)]
    # q, k, v, attention output (16x16 each) and the FFN (16x32, 32x16), 2 FLOPs per MAC, at every token;
    # the score and value products cost L x L x (all heads' key dims + value dims), untouched by surgery.
    attention = teacher_encoder._self_attention_layer
    heads_dims = attention._num_heads * (attention._key_dim + (attention._value_dim or attention._key_dim))
    assert heads_dims == 2 * 16
    attention_products = 2 * SEQ_LEN * SEQ_LEN * heads_dims
    assert encoder_flops(teacher_encoder) == SEQ_LEN * 2 * (4 * 16 * 16 + 2 * 16 * 32) + attention_products
    student = factorize_model(model, {
        ENCODER.format(0) + "/ffn_intermediate": LayerFactors(np.eye(32)[:, :4], np.zeros(32)),
        ENCODER.format(0) + "/attention_output": LayerFactors(np.eye(16)[:, :3], np.zeros(16)),
        ENCODER.format(0) + "/attention_value": LayerFactors(np.eye(16)[:, :5], np.zeros(16)),
        ENCODER.format(0) + "/ffn_output": LayerFactors(np.eye(16)[:, :6], np.zeros(16)),
    })
    student_encoder = dict(iter_graph_layers(student))[ENCODER.format(0)]
    factorized = 2 * 16 * 16 + (16 * 5 + 5 * 16) + (16 * 3 + 3 * 16) + (16 * 4 + 4 * 32) + (32 * 6 + 6 * 16)
    assert encoder_flops(student_encoder) == SEQ_LEN * 2 * factorized + attention_products
    assert encoder_flops(model.get_layer("logits")) == 0


def test_unknown_part_is_refused():
    model = tiny_bert_classifier()
    with pytest.raises(KeyError, match="no layer"):
        factorize_model(model, {ENCODER.format(0) + "/feedforward_output": LayerFactors(np.eye(16), np.zeros(16))})


@pytest.mark.slow
def test_compressed_bert_exports_to_tflite_without_flex_ops(tmp_path):
    from rmtkd_tf.export import export_tflite, tflite_predict

    model = tiny_bert_classifier(pooling="cls")
    x = token_batch(32, seed=4)
    statistics = collect_activations(model, x, batch_size=32)
    student = factorize_model(model, all_factors(statistics, rank=3))
    report = export_tflite(student, tmp_path / "student.tflite", verify_inputs=x)
    assert report.flex_ops == []
    assert report.verification["max_abs_err"] < 1e-4 and report.verification["top1_agreement"] == 1.0
    np.testing.assert_allclose(tflite_predict(report.path, x), student.predict(x, verbose=0), atol=1e-4)
    # Each factorized part is two FULLY_CONNECTED ops between constant-shape reshapes: it adds no
    # run-time shape arithmetic (SHAPE/GATHER/REDUCE_PROD/PACK), which the XNNPACK delegate does not take.
    teacher_ops = export_tflite(model, tmp_path / "teacher.tflite").op_histogram
    parts = sum(len(encoder_ranks(layer)) for _, layer in iter_graph_layers(student))
    assert parts == 2 * len(ENCODER_PARTS)
    assert report.op_histogram["FULLY_CONNECTED"] == teacher_ops["FULLY_CONNECTED"] + parts
    for shape_op in ("SHAPE", "GATHER", "REDUCE_PROD", "PACK"):
        assert report.op_histogram.get(shape_op, 0) <= teacher_ops.get(shape_op, 0), shape_op


def test_with_sequence_length_keeps_weights_and_predictions_for_teacher_and_student():
    from rmtkd_tf.transformers import with_sequence_length
    from rmtkd_tf.transformers.bert import model_sequence_length

    model = tiny_bert_classifier()
    x = token_batch(24, seed=5)
    statistics = collect_activations(model, x, batch_size=24)
    student = factorize_model(model, all_factors(statistics, rank=4))
    longer_x = {k: np.pad(v, ((0, 0), (0, 8))) for k, v in x.items()}  # 8 more padding tokens
    for original in (model, student):
        longer = with_sequence_length(original, SEQ_LEN + 8)
        assert model_sequence_length(longer) == SEQ_LEN + 8
        assert longer.count_params() == original.count_params()
        np.testing.assert_allclose(longer.predict(longer_x, verbose=0), original.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="fixed-length"):
        with_sequence_length(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), 8)
