"""`CompressionConfig.rank_rule` accepts a name, a dict or a `RankRule`, resolved by `rank_rules.get`."""

import json

import numpy as np

import keras

from rmtkd_tf.compress import CompressionConfig, CompressionData, compress


def _tiny_task(seed=0, n=240):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="logits")])
    data = CompressionData(x_train=x[:160], y_train=y[:160], x_calibration=x[:80],
                           x_validation=x[160:], y_validation=y[160:])
    return model, data


def test_energy_rule_by_name_runs_with_its_own_defaults(tmp_path):
    # The default rule_params of the MP rule ({"tau": 0.5}) used to reach the energy rule:
    # "rank rule 'energy' got unknown parameter(s) tau".
    model, data = _tiny_task()
    config = CompressionConfig(rank_rule="energy", schedule="iterative", epochs_per_step=0, max_steps=1,
                               max_drop=100.0, calibration_samples=80, batch_size=32)
    compress(model, data, config, tmp_path / "run", log=lambda message: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    rules = [decision["rule"] for step in history["steps"] for decision in step["decisions"] if decision.get("rule")]
    assert rules and all(rule["rule"] == "energy" and rule["params"] == {"fraction": 0.95} for rule in rules)
