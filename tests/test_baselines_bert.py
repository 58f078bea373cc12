"""The comparison baselines (rmtkd_tf.baselines) on the parts of keras-hub transformer encoders (tiny BERT)."""

import numpy as np
import pytest

import keras
import keras_hub

from rmtkd_tf.baselines import (
    MagnitudePruning,
    encoder_parameter_count,
    factorized_parameter_count,
    factorized_ranks,
    prunable_kernels,
    pruned_parameter_count,
    scaled_width_model,
    svd_factors,
    uniform_rank_plan,
    width_for_parameter_count,
)
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.model_walk import dense_matrix_shape, iter_graph_layers
from rmtkd_tf.surgery import factorize_model
from rmtkd_tf.transformers import ENCODER_PARTS, bert_classifier, encoder_parts

SEQ_LEN = 12
HIDDEN, INTERMEDIATE, HEADS, LAYERS, VOCAB = 16, 32, 2, 2, 60
ENCODER = "bert_backbone/transformer_layer_{}"
PARTS = [ENCODER.format(i) + "/" + part for i in range(LAYERS) for part in ENCODER_PARTS]


def tiny_bert(pooling="mean", seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE, max_sequence_length=2 * SEQ_LEN, name="bert_backbone",
    )
    return bert_classifier(backbone, num_classes=3, sequence_length=SEQ_LEN, pooling=pooling, dropout=0.0)


def token_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, SEQ_LEN + 1, n)
    mask = (np.arange(SEQ_LEN)[None, :] < lengths[:, None]).astype("int32")
    ids = rng.integers(5, VOCAB, (n, SEQ_LEN)).astype("int32") * mask
    return {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def model():
    return tiny_bert()


def test_svd_factors_at_full_rank_reproduce_the_model(model):
    layers = {p: l for p, l in iter_graph_layers(model)}
    full = {}
    for i in range(LAYERS):
        for part, sub in encoder_parts(layers[ENCODER.format(i)]).items():
            full[f"{ENCODER.format(i)}/{part}"] = dense_matrix_shape(sub)[1]
    assert sorted(full) == sorted(PARTS)
    assert full[ENCODER.format(0) + "/attention_query"] == HIDDEN  # (hidden, heads, head_dim) -> heads*head_dim
    student = factorize_model(model, svd_factors(model, full))
    assert factorized_ranks(student) == full
    x = token_batch(8)
    np.testing.assert_allclose(student.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    # Truncated: the counted parameters are those of the built student.
    ranks = {path: 3 for path in PARTS}
    smaller = factorize_model(model, svd_factors(model, ranks))
    assert factorized_ranks(smaller) == ranks
    assert factorized_parameter_count(model, ranks) == smaller.count_params()
    with pytest.raises(RMTKDError, match="already factorized"):
        svd_factors(smaller, ranks)
    with pytest.raises(RMTKDError, match=r"rank of .*attention_value.* must be an integer in \[1, 16\]"):
        svd_factors(model, {ENCODER.format(0) + "/attention_value": 17})


def test_uniform_plan_hits_the_parameter_target(model):
    teacher = model.count_params()
    target = teacher - 1500
    ratio, ranks = uniform_rank_plan(model, target)
    assert set(ranks) <= set(PARTS) and ranks  # encoder parts only: the head is left out
    planned = factorized_parameter_count(model, ranks)
    assert planned <= target
    # The largest such ratio: one more unit of ratio granularity would exceed the target.
    assert factorized_parameter_count(model, uniform_rank_plan(model, planned)[1]) == planned
    student = factorize_model(model, svd_factors(model, ranks))
    assert student.count_params() == planned
    assert 0 < ratio < 1


def test_magnitude_pruning_masks_the_encoder_kernels(model):
    student = keras.models.clone_model(model)
    student.set_weights(model.get_weights())
    kernels = prunable_kernels(student)
    assert list(kernels) == PARTS
    assert tuple(kernels[ENCODER.format(0) + "/attention_query"].shape) == (HIDDEN, HEADS, HIDDEN // HEADS)
    assert tuple(kernels[ENCODER.format(0) + "/attention_output"].shape) == (HEADS, HIDDEN // HEADS, HIDDEN)
    total = sum(int(np.prod(k.shape)) for k in kernels.values())
    keep = total // 4
    pruning = MagnitudePruning(kernels, keep)
    pruning.prune(keep)
    nonzero = sum(int(np.count_nonzero(keras.ops.convert_to_numpy(k))) for k in kernels.values())
    assert nonzero == keep
    assert pruned_parameter_count(student, kernels) == model.count_params() - (total - keep)
    # The zeros are in the model's encoders: it runs, and the encoder count sees them.
    x = token_batch(4)
    assert student.predict(x, verbose=0).shape == (4, 3)
    assert encoder_parameter_count(student, pruned_kernels=kernels) == encoder_parameter_count(model) - (total - keep)


def test_encoder_parameter_count(model):
    layers = dict(iter_graph_layers(model))
    expected = sum(layers[ENCODER.format(i)].count_params() for i in range(LAYERS))
    assert encoder_parameter_count(model) == expected
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert encoder_parameter_count(dense) is None


def test_narrow_student_has_the_target_encoder_count_and_runs(model):
    half = scaled_width_model(model, 0.5)
    layers = dict(iter_graph_layers(half))
    encoder = layers[ENCODER.format(0)]
    assert encoder.num_heads == HEADS and encoder.intermediate_dim == INTERMEDIATE // 2
    assert dense_matrix_shape(encoder_parts(encoder)["ffn_output"]) == (INTERMEDIATE // 2, HIDDEN // 2)
    assert layers["bert_backbone/token_embedding"].input_dim == VOCAB  # same vocabulary
    assert [t.shape for t in half.inputs] == [t.shape for t in model.inputs]  # same sequence length
    assert half.output.shape == model.output.shape

    target = encoder_parameter_count(model) // 3
    width, student = width_for_parameter_count(model, target, count=encoder_parameter_count)
    assert 0 < width < 1
    count = encoder_parameter_count(student)
    assert count <= target
    # The widest such student: a hair wider crosses the target.
    assert encoder_parameter_count(scaled_width_model(model, width + 1e-5)) > target
    assert student.predict(token_batch(4), verbose=0).shape == (4, 3)
    with pytest.raises(RMTKDError, match="factorized"):
        scaled_width_model(factorize_model(model, svd_factors(model, {PARTS[0]: 2})), 0.5)
