"""`CompressionConfig.rank_rule` accepts a name, a dict or a `RankRule`, resolved by `rank_rules.get`."""

import json

import numpy as np
import pytest

import keras

from rmtkd_tf.compression import CompressionConfig, CompressionData
from rmtkd_tf.compression import run as compress
from rmtkd_tf.errors import RMTKDError


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


def test_name_dict_and_instance_give_the_same_recorded_config():
    from rmtkd_tf.spectral.rank_rules import EnergyRule

    expected = {"class_name": "EnergyRule", "config": {"fraction": 0.9}}
    for rank_rule, rule_params in [("energy", {"fraction": 0.9}), ({"name": "energy", "fraction": 0.9}, None),
                                   (expected, None), (EnergyRule(0.9), None), ("EnergyRule", {"fraction": 0.9})]:
        config = CompressionConfig(rank_rule=rank_rule, rule_params=rule_params)
        assert config.rank_rule == expected and config.rule_params is None
    default = CompressionConfig()
    assert default.rank_rule == {"class_name": "MarchenkoPasturRule", "config": {"tau": 0.5, "fit": True}}


def test_recorded_config_rebuilds_the_same_config_and_replace_switches_rules():
    import dataclasses

    config = CompressionConfig(rank_rule="fixed-rank", rule_params={"rank": 3})
    recorded = json.loads(json.dumps(dataclasses.asdict(config)))  # what state.json holds
    assert CompressionConfig(**recorded) == config
    # A new rule by name does not inherit the old rule's parameters (the bug's other face).
    assert dataclasses.replace(config, rank_rule="energy").rank_rule["config"] == {"fraction": 0.95}
    assert dataclasses.replace(config, rule_params={"rank": 5}).rank_rule["config"] == {"rank": 5}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"rank_rule": "svd"}, "unknown rank rule 'svd'"),
     ({"rank_rule": "energy", "rule_params": {"fraction": 2}}, "fraction must be in (0, 1]"),
     ({"rank_rule": "fixed-rank", "rule_params": {"rank": 2.5}}, "rank must be a positive integer")],
)
def test_bad_rank_rules_fail_at_config_time_in_one_line(kwargs, message):
    with pytest.raises(RMTKDError) as info:
        CompressionConfig(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("field, value", [("max_attempts", 2.5), ("distillation_epochs", 1.5), ("batch_size", True),
                                          ("max_steps", 0), ("seed", -1), ("final_epochs", -1)])
def test_integer_settings_are_integers(field, value):
    # Like Keras' Dense(units=2.5): refused in one line, not truncated.
    with pytest.raises(RMTKDError, match=field):
        CompressionConfig(**{field: value})
