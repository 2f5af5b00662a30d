"""Tests for the regularizers' configs and their `.keras` round trip (with MaxNorm) in a fresh process."""

import json

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import CorrectedElasticNet
from keras_regkit import ElasticNet
from keras_regkit import ElasticNetCorrection
from keras_regkit import GroupLasso
from keras_regkit import L1
from keras_regkit import L2
from keras_regkit import MaxNorm
from keras_regkit import apply_elastic_net_correction
from tests import helpers
from tests.regularizers.regularizer_problems import random_array as _random


@pytest.mark.parametrize(
    "obj",
    [
        L1(0.25),
        L2(0.125),
        ElasticNet(0.5, 0.25),
        CorrectedElasticNet(0.5, 0.25),
        CorrectedElasticNet(0.5, 0.25, correction_applied=True),
        GroupLasso(0.75),
        GroupLasso(0.75, axis=[0, 1]),
        ElasticNetCorrection(),
    ],
)
def test_config_round_trip(obj):
    restored = helpers.config_round_trip(obj)
    json.dumps(obj.get_config())  # plain JSON values
    if isinstance(obj, keras.regularizers.Regularizer):
        w = _random((3, 2))
        assert float(restored(w)) == float(obj(w))


def test_keras_save_load_in_fresh_process(tmp_path):
    """One subprocess checks every regularizer and MaxNorm after a .keras round trip."""
    keras.utils.set_random_seed(7)
    regularizers = {
        "l1": L1(0.01),
        "l2": L2(0.02),
        "en": ElasticNet.from_mix(0.03, 0.25),
        "cen": CorrectedElasticNet(0.01, 0.2),
        "gl": GroupLasso(0.05, axis=[0, 1]),
    }
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(
        3, 3, name="conv", kernel_regularizer=regularizers["gl"],
        kernel_constraint=MaxNorm(0.5),
    )(inputs)
    h = keras.layers.Flatten()(h)
    for name in ("l1", "l2", "en", "cen"):
        h = keras.layers.Dense(
            4, name=name, kernel_regularizer=regularizers[name],
            kernel_constraint=MaxNorm(1.5, axis=[0]),
        )(h)
    model = keras.Model(inputs, h)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    apply_elastic_net_correction(model)
    x = _random((5, 6, 6, 2), seed=8)
    y = _random((5, 4), seed=9)
    path = tmp_path / "model.keras"
    model.save(path)

    expected_predictions = np.asarray(model(x))
    expected_losses = [float(loss) for loss in model.losses]
    expected_configs = {
        layer.name: [
            keras.saving.serialize_keras_object(layer.kernel_regularizer),
            keras.saving.serialize_keras_object(layer.kernel_constraint),
        ]
        for layer in model.layers
        if hasattr(layer, "kernel")
    }
    model.train_on_batch(x, y)
    expected_weights = [np.asarray(w) for w in model.weights]
    conv_kernel = np.asarray(model.get_layer("conv").kernel)  # projected by MaxNorm
    assert np.all(np.sqrt((conv_kernel**2).sum(axis=(0, 1, 2))) <= 0.5 + 1e-6)

    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = helpers.run_python(
        f"""
        import json, numpy as np, keras
        import keras_regkit
        model = keras.saving.load_model({str(path)!r}, safe_mode=True)
        data = np.load({str(tmp_path / "data.npz")!r})
        result = {{
            "predictions": np.asarray(model(data["x"])).tolist(),
            "losses": [float(loss) for loss in model.losses],
            "configs": {{
                layer.name: [
                    keras.saving.serialize_keras_object(layer.kernel_regularizer),
                    keras.saving.serialize_keras_object(layer.kernel_constraint),
                ]
                for layer in model.layers if hasattr(layer, "kernel")
            }},
            "same_object": all(
                layer.kernel.regularizer is layer.kernel_regularizer
                for layer in model.layers if hasattr(layer, "kernel")
            ),
            "correction": keras_regkit.apply_elastic_net_correction(model),
        }}
        model.train_on_batch(data["x"], data["y"])
        result["weights"] = [np.asarray(w).tolist() for w in model.weights]
        print(json.dumps(result))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(result["predictions"], expected_predictions, rtol=1e-6)
    np.testing.assert_allclose(result["losses"], expected_losses, rtol=1e-6)
    assert result["configs"] == json.loads(json.dumps(expected_configs))
    assert result["configs"]["cen"][0]["config"]["correction_applied"] is True
    assert result["configs"]["conv"][1]["registered_name"] == "keras_regkit>MaxNorm"
    assert result["same_object"] is True
    assert result["correction"] == []
    for got, want in zip(result["weights"], expected_weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "class_name, config",
    [
        ("ElasticNet", {"l1": 0.1, "l2": 0.2}),
        ("CorrectedElasticNet", {"l1": 0.1, "l2": 0.2, "correction_applied": True}),
    ],
)
def test_configs_saved_before_the_elastic_net_module_split_still_load(class_name, config):
    # What `serialize_keras_object` wrote when the classes lived in
    # `keras_regkit.regularizers` (before `_elastic_net.py`).
    old = {"module": "keras_regkit.regularizers", "class_name": class_name,
           "config": config, "registered_name": f"keras_regkit>{class_name}"}
    restored = keras.saving.deserialize_keras_object(old)
    assert type(restored) is getattr(keras_regkit.regularizers, class_name)
    assert restored.get_config() == config
    # And saved configs still name the public module, byte for byte as before.
    assert keras.saving.serialize_keras_object(restored) == old
