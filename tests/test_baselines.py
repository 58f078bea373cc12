"""Baselines RMT-KD is compared with: data-free SVD, uniform rank, narrow dense student, magnitude pruning."""

import keras
import numpy as np
import pytest

from rmtkd_tf.baselines import (
    MagnitudePruning,
    factorized_parameter_count,
    factorized_ranks,
    fine_tune,
    magnitude_masks,
    prunable_kernels,
    pruned_parameter_count,
    scaled_width_model,
    svd_factors,
    uniform_rank_plan,
    width_for_parameter_count,
)
from rmtkd_tf.compression import CompressionData
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.surgery import factorize_model


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(12, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(24, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, outputs)
    # Non-trivial biases and BN statistics, so "the bias is kept" is a real check.
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.random.default_rng(1).normal(size=layer.bias.shape).astype("float32"))
    return model


def images(n=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype("float32")


def test_svd_at_full_rank_reproduces_the_model():
    model = small_cnn()
    ranks = {"conv1": 12, "conv2": 16, "fc1": 24}
    student = factorize_model(model, svd_factors(model, ranks))
    x = images()
    np.testing.assert_allclose(student.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)


def test_svd_factors_give_the_truncated_svd_and_keep_the_bias():
    model = small_cnn()
    student = factorize_model(model, svd_factors(model, {"fc1": 5, "conv2": 3}))
    for path, rank in (("fc1", 5), ("conv2", 3)):
        kernel = keras.ops.convert_to_numpy(model.get_layer(path).kernel).astype(np.float64)
        d = kernel.shape[-1]
        left, values, right = np.linalg.svd(kernel.reshape(-1, d), full_matrices=False)
        best = (left[:, :rank] * values[:rank]) @ right[:rank]
        layer = student.get_layer(path)
        down = keras.ops.convert_to_numpy(layer.down_kernel).reshape(-1, rank)
        up = keras.ops.convert_to_numpy(layer.up_kernel).reshape(rank, d)
        np.testing.assert_allclose(down @ up, best, atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.bias),
                                   keras.ops.convert_to_numpy(model.get_layer(path).bias), atol=1e-6)
    assert factorized_ranks(student) == {"fc1": 5, "conv2": 3}
    assert student.count_params() == factorized_parameter_count(model, {"fc1": 5, "conv2": 3})


def test_svd_factors_reject_bad_ranks_and_factorized_layers():
    model = small_cnn()
    with pytest.raises(RMTKDError, match=r"rank of 'fc1' must be an integer in \[1, 24\]"):
        svd_factors(model, {"fc1": 0})
    with pytest.raises(RMTKDError, match=r"rank of 'fc1'"):
        svd_factors(model, {"fc1": 25})
    with pytest.raises(RMTKDError, match="no layer at paths"):
        svd_factors(model, {"nope": 2})
    student = factorize_model(model, svd_factors(model, {"fc1": 4}))
    with pytest.raises(RMTKDError, match="already factorized"):
        svd_factors(student, {"fc1": 2})


def test_uniform_rank_plan_is_the_largest_ratio_within_the_budget():
    model = small_cnn()
    target = int(0.5 * model.count_params())
    ratio, ranks = uniform_rank_plan(model, target)
    assert factorized_parameter_count(model, ranks) <= target
    assert "logits" not in ranks  # the head is left alone, as RMT-KD does by default
    for path, rank in ranks.items():
        units = model.get_layer(path).units if path.startswith("fc") else model.get_layer(path).filters
        assert rank == max(1, int(np.ceil(ratio * units - 1e-9)))
    # Any larger ratio that changes a rank goes over the budget.
    _, bigger = uniform_rank_plan(model, factorized_parameter_count(model, ranks) + 10_000)
    assert bigger != ranks
    assert factorized_parameter_count(model, bigger) > target
    with pytest.raises(RMTKDError, match="rank 1 in every layer"):
        uniform_rank_plan(model, 100)


def test_uniform_rank_plan_keeps_everything_when_the_budget_allows():
    model = small_cnn()
    ratio, ranks = uniform_rank_plan(model, model.count_params())
    assert ratio == 1.0 and ranks == {}


def test_scaled_width_model_narrows_hidden_layers_and_starts_from_scratch():
    model = small_cnn()
    student = scaled_width_model(model, 0.5, seed=3)
    assert student.get_layer("conv1").filters == 6
    assert student.get_layer("conv2").filters == 8
    assert student.get_layer("fc1").units == 12
    assert student.get_layer("logits").units == 4
    assert student.predict(images(), verbose=0).shape == (32, 4)
    assert not np.allclose(keras.ops.convert_to_numpy(student.get_layer("logits").kernel)[:12],
                           keras.ops.convert_to_numpy(model.get_layer("logits").kernel)[:12])
    with pytest.raises(RMTKDError, match="width must be > 0"):
        scaled_width_model(model, 0)


def test_width_for_parameter_count_is_the_widest_within_the_budget():
    model = small_cnn()
    target = model.count_params() // 3
    width, student = width_for_parameter_count(model, target)
    assert student.count_params() <= target
    assert scaled_width_model(model, width * 1.15).count_params() > target


def test_magnitude_masks_keep_the_largest_weights_globally():
    rng = np.random.default_rng(0)
    kernels = {"a": rng.normal(size=(4, 5)), "b": 10 * rng.normal(size=(3, 3))}
    masks = magnitude_masks(kernels, keep=7)
    assert sum(int(m.sum()) for m in masks.values()) == 7
    kept = np.concatenate([np.abs(kernels[p])[masks[p] > 0] for p in kernels])
    dropped = np.concatenate([np.abs(kernels[p])[masks[p] == 0] for p in kernels])
    assert kept.min() >= dropped.max()
    assert masks["b"].sum() >= masks["a"].sum()  # global: the larger layer's weights win
    with pytest.raises(RMTKDError, match=r"keep must be an integer in \[0, 29\]"):
        magnitude_masks(kernels, keep=30)


def task_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = (x[:, :4, :, 0].mean(axis=(1, 2)) > 0).astype("int64") + 2 * (x[:, 4:, :, 1].mean(axis=(1, 2)) > 0)
    return CompressionData(x_train=x, y_train=y, x_calibration=x[:32], x_validation=x[:32], y_validation=y[:32])


def test_magnitude_pruning_during_fine_tuning_ends_with_exactly_keep_weights():
    teacher = small_cnn()
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    kernels = prunable_kernels(student)
    assert set(kernels) == {"conv1", "conv2", "fc1"}
    total = sum(int(np.prod(k.shape)) for k in kernels.values())
    keep = total // 4
    pruning = MagnitudePruning(kernels, keep, ramp_epochs=2)
    assert pruning.keep_at_epoch(0) > pruning.keep_at_epoch(1) == keep
    fine_tune(student, teacher, task_data(), epochs=3, batch_size=32, callbacks=[pruning])
    nonzero = sum(int(np.count_nonzero(keras.ops.convert_to_numpy(k))) for k in kernels.values())
    assert nonzero == keep
    assert pruned_parameter_count(student, kernels) == teacher.count_params() - (total - keep)
    # The pruned weights are the ones the masks say, and training changed the kept ones.
    for path, kernel in kernels.items():
        values = keras.ops.convert_to_numpy(kernel)
        assert np.all(values[pruning.masks_[path] == 0] == 0)
    assert not np.allclose(keras.ops.convert_to_numpy(kernels["fc1"]),
                           keras.ops.convert_to_numpy(teacher.get_layer("fc1").kernel)
                           * pruning.masks_["fc1"])


def test_magnitude_pruning_rejects_bad_settings():
    kernels = prunable_kernels(small_cnn())
    with pytest.raises(RMTKDError, match="ramp_epochs must be a positive integer"):
        MagnitudePruning(kernels, 10, ramp_epochs=0)
    with pytest.raises(RMTKDError, match="keep must be an integer"):
        MagnitudePruning(kernels, -1)
    with pytest.raises(RMTKDError, match="no kernels"):
        MagnitudePruning({}, 1)


def test_fine_tune_trains_the_student_and_leaves_the_teacher_trainable():
    teacher = small_cnn()
    student = factorize_model(teacher, svd_factors(teacher, {"fc1": 4}))
    before = [w.copy() for w in student.get_weights()]
    logs = fine_tune(student, teacher, task_data(), epochs=1, batch_size=32, learning_rate=1e-3)
    assert {"loss", "ce", "kl", "accuracy"} <= set(logs)
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))
    assert all(layer.trainable for layer in teacher.layers)
    assert fine_tune(student, teacher, task_data(), epochs=0) == {}
