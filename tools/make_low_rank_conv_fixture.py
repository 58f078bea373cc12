"""Writes tests/data/layers/low_rank_convs.keras + .npz: a model of the three low-rank convolutions.

The fixture pins the saved format of `LowRankConv1D`, `LowRankConv2D` and
`LowRankSeparableConv2D` (registered names, config keys, weight order):
tests/test_layers_saved_format.py loads it with the current code and checks
the outputs it recorded. It was written at commit 21bff69 (before the layers
shared `LowRankConvBase`); rerun only to add a new fixture, never to refresh
this one.

    PYTHONPATH=$PWD python -m tools.make_low_rank_conv_fixture tests/data/layers
"""

import os
import sys

import numpy as np


def build_model():
    import keras

    from rmtkd_tf.layers import LowRankConv1D, LowRankConv2D, LowRankSeparableConv2D

    keras.utils.set_random_seed(0)
    seq = keras.Input((8, 3), name="seq")
    img = keras.Input((6, 6, 3), name="img")
    a = LowRankConv1D(4, 2, 3, padding="causal", dilation_rate=2, activation="relu", name="c1")(seq)
    a = LowRankConv1D(3, 2, 2, strides=2, use_bias=False, kernel_initializer="he_normal", name="c1_nobias")(a)
    b = LowRankConv2D(5, 2, (3, 2), padding="same", activation="tanh", bias_initializer="ones", name="c2")(img)
    b = LowRankConv2D(4, 3, 2, strides=2, use_bias=False, name="c2_nobias")(b)
    b = LowRankSeparableConv2D(4, 2, 2, depth_multiplier=2, activation="relu", name="sep")(b)
    b = LowRankSeparableConv2D(3, 2, 1, use_bias=False, depthwise_initializer="he_uniform", name="sep_nobias")(b)
    out = keras.layers.Concatenate()([keras.layers.Flatten()(a), keras.layers.Flatten()(b)])
    model = keras.Model([seq, img], out)
    for layer in model.layers:  # non-zero biases, so a misplaced bias shows in the outputs
        for weight in layer.weights:
            if weight.name == "bias":
                weight.assign(np.linspace(-0.5, 0.5, weight.shape[0]).astype("float32"))
    return model


def main(folder):
    model = build_model()
    rng = np.random.default_rng(0)
    inputs = {"seq": rng.normal(size=(2, 8, 3)).astype("float32"), "img": rng.normal(size=(2, 6, 6, 3)).astype("float32")}
    outputs = np.asarray(model.predict(inputs, verbose=0))
    model.save(os.path.join(folder, "low_rank_convs.keras"))
    np.savez(os.path.join(folder, "low_rank_convs.npz"), outputs=outputs, **inputs)
    print(outputs.shape)


if __name__ == "__main__":
    main(sys.argv[1])
