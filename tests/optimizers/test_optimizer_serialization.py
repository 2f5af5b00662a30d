"""Saving `DecoupledWeightDecay`: its config, `.keras` files, resuming a fit.

An interrupted run that is saved and loaded (in a fresh process, or through
`BackupAndRestore`) must continue exactly like an uninterrupted one, and
configs written by earlier versions must still load.
"""

import json

import keras
import numpy as np
import pytest

from keras_regkit import DecoupledWeightDecay
from tests.helpers import config_round_trip
from tests.helpers import run_python
from tests.optimizers.optimizer_problems import X as _X
from tests.optimizers.optimizer_problems import Y as _Y
from tests.optimizers.optimizer_problems import attention_model as _attention_model
from tests.optimizers.optimizer_problems import decayed_paths as _decayed_paths
from tests.optimizers.optimizer_problems import fit as _fit
from tests.optimizers.optimizer_problems import full_featured as _full_featured
from tests.optimizers.optimizer_problems import max_difference as _max_difference
from tests.optimizers.optimizer_problems import mlp as _mlp
from tests.optimizers.optimizer_problems import schedules


def _save_load_optimizers():
    return {
        "full": _full_featured(),
        "patterns": DecoupledWeightDecay(
            keras.optimizers.SGD(0.1, momentum=0.9),
            0.05,
            include=["hidden/*", "out/kernel"],
            exclude="*/bias",
            group_l1=0.02,
            gradient_accumulation_steps=2,
        ),
    }


def test_save_load_in_a_fresh_process_continues_like_an_uninterrupted_run(tmp_path):
    names = list(_save_load_optimizers())
    uninterrupted = {n: _fit(_save_load_optimizers()[n], epochs=4)[0] for n in names}
    for name in names:
        model = _mlp()
        _fit(_save_load_optimizers()[name], model=model, epochs=2)
        model.save(tmp_path / f"{name}.keras")
    np.savez(tmp_path / "data.npz", x=_X, y=_Y)
    run_python(
        f"""
        import json, numpy as np, keras
        import keras_regkit
        path = {str(tmp_path)!r}
        data = np.load(path + "/data.npz")
        out, configs = {{}}, {{}}
        for name in {names!r}:
            model = keras.saving.load_model(f"{{path}}/{{name}}.keras", safe_mode=True)
            assert type(model.optimizer).__name__ == "DecoupledWeightDecay"
            configs[name] = model.optimizer.get_config()
            model.fit(data["x"], data["y"], batch_size=8, epochs=2, shuffle=False, verbose=0)
            for i, w in enumerate(model.weights):
                out[f"{{name}}_{{i}}"] = np.asarray(w)
        np.savez(path + "/resumed.npz", **out)
        with open(path + "/configs.json", "w") as f:
            json.dump(configs, f)
        """
    )
    resumed = np.load(tmp_path / "resumed.npz")
    configs = json.loads((tmp_path / "configs.json").read_text())
    for name in names:
        got = [resumed[f"{name}_{i}"] for i in range(len(uninterrupted[name]))]
        assert _max_difference(got, uninterrupted[name]) < 1e-6, name
    assert configs["patterns"]["include"] == ["hidden/*", "out/kernel"]
    assert configs["patterns"]["exclude"] == ["*/bias"]
    assert configs["patterns"]["optimizer"]["config"]["gradient_accumulation_steps"] == 2
    assert configs["full"]["weight_decay"]["class_name"] == "ExponentialDecay"
    assert configs["full"]["toward"] == "initial"


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_to_the_same_weights(tmp_path):
    expected, _ = _fit(_full_featured(), epochs=4)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    model = _mlp()
    model.compile(_full_featured(), "mse")
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(_X, _Y, batch_size=8, epochs=4, shuffle=False, verbose=0,
                  callbacks=[backup, _Interrupt()])
    model = _mlp(seed=99)  # a restarted job: other initial weights, restored
    model.compile(_full_featured(), "mse")
    model.fit(_X, _Y, batch_size=8, epochs=4, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))])
    assert _max_difference([np.array(w) for w in model.weights], expected) < 1e-6



def test_config_round_trip_keeps_every_argument():
    optimizer = DecoupledWeightDecay(
        keras.optimizers.Adam(schedules.CosineDecay(1e-3, 100)),
        weight_decay=schedules.PiecewiseConstantDecay([10], [1e-2, 1e-3]),
        decay_scaling="none",
        exclude="*/bias",
        include=("dense*", "conv*"),
        l1=1e-4,
        group_l1=1e-3,
        toward="initial",
        name="dwd",
        gradient_accumulation_steps=4,
    )
    config = optimizer.get_config()
    json.dumps(config)
    assert config["include"] == ["dense*", "conv*"] and config["exclude"] == ["*/bias"]
    restored = config_round_trip(optimizer)
    assert isinstance(restored.inner_optimizer, keras.optimizers.Adam)
    assert restored.inner_optimizer.gradient_accumulation_steps == 4
    assert isinstance(restored.weight_decay, schedules.PiecewiseConstantDecay)
    assert restored.optimizer is restored.inner_optimizer
    plain = config_round_trip(DecoupledWeightDecay(keras.optimizers.SGD(0.1), 1e-4))
    assert plain.include is None and plain.weight_decay == 1e-4


def test_a_config_saved_before_the_role_based_mask_still_loads():
    # `get_config()` of the version whose default mask was `ndim >= 2`.
    saved = {
        "module": None,
        "class_name": "DecoupledWeightDecay",
        "registered_name": "keras_regkit>DecoupledWeightDecay",
        "config": {
            "name": "decoupled_weight_decay",
            "optimizer": keras.saving.serialize_keras_object(keras.optimizers.SGD(0.1)),
            "weight_decay": 0.5,
            "decay_scaling": "learning_rate",
            "exclude": [],
            "include": None,
            "l1": 0.0,
            "group_l1": 0.0,
            "toward": "zero",
        },
    }
    optimizer = keras.saving.deserialize_keras_object(json.loads(json.dumps(saved)))
    assert isinstance(optimizer, DecoupledWeightDecay)
    config = optimizer.get_config()
    for key, value in saved["config"].items():
        if key != "optimizer":
            assert config[key] == value, key
    # It gets the role-based default mask: kernels and embeddings only.
    assert _decayed_paths(_attention_model().trainable_variables, optimizer) == [
        "embed/embeddings", "attention/query/kernel", "attention/key/kernel",
        "attention/value/kernel", "attention/attention_output/kernel", "head/kernel"]


# `serialize_keras_object` of an optimizer with every argument set, written by the
# version before the optimizer's modules were split (keras_regkit at 7b07b07,
# Keras 3.15.1): the base-optimizer arguments given to the wrapper are in the
# wrapped optimizer's config.
_SAVED_BEFORE_THE_SPLIT = {
        "module": "keras_regkit.optimizers",
        "class_name": "DecoupledWeightDecay",
        "config": {
            "name": "wd",
            "optimizer": {
                "module": "keras.optimizers",
                "class_name": "Adam",
                "config": {
                    "name": "adam",
                    "learning_rate": {
                        "module": "keras.optimizers.schedules",
                        "class_name": "CosineDecay",
                        "config": {
                            "initial_learning_rate": 0.05,
                            "decay_steps": 100,
                            "alpha": 0.0,
                            "name": "CosineDecay",
                            "warmup_target": None,
                            "warmup_steps": 0
                        },
                        "registered_name": None
                    },
                    "weight_decay": None,
                    "clipnorm": 1.0,
                    "global_clipnorm": None,
                    "clipvalue": None,
                    "use_ema": True,
                    "ema_momentum": 0.9,
                    "ema_overwrite_frequency": None,
                    "loss_scale_factor": None,
                    "gradient_accumulation_steps": 3,
                    "beta_1": 0.9,
                    "beta_2": 0.999,
                    "epsilon": 1e-07,
                    "amsgrad": False
                },
                "registered_name": None
            },
            "weight_decay": {
                "module": "keras.optimizers.schedules",
                "class_name": "ExponentialDecay",
                "config": {
                    "initial_learning_rate": 0.001,
                    "decay_steps": 10,
                    "decay_rate": 0.5,
                    "staircase": False,
                    "name": "ExponentialDecay"
                },
                "registered_name": None
            },
            "decay_scaling": "schedule",
            "exclude": [
                "*/bias"
            ],
            "include": [
                "dense*/kernel",
                "emb/*"
            ],
            "l1": 0.0001,
            "group_l1": 0.0002,
            "toward": "initial"
        },
        "registered_name": "keras_regkit>DecoupledWeightDecay"
    }


def test_a_config_saved_before_the_module_split_still_loads():
    optimizer = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(_SAVED_BEFORE_THE_SPLIT)))  # Keras edits the dict it loads
    assert isinstance(optimizer, DecoupledWeightDecay)
    assert optimizer.get_config() == _SAVED_BEFORE_THE_SPLIT["config"]
    inner = optimizer.inner_optimizer
    assert isinstance(inner, keras.optimizers.Adam)
    assert (inner.gradient_accumulation_steps, inner.use_ema, inner.clipnorm) == (3, True, 1.0)
    assert isinstance(optimizer.weight_decay, schedules.ExponentialDecay)
    # It builds and steps: `include` selects the kernel, whose `w_0` is kept.
    layer = keras.layers.Dense(2, name="dense_1")
    layer.build((None, 2))
    kernel = layer.kernel
    with pytest.warns(UserWarning, match=r"include='emb/\*', exclude='\*/bias'"):
        optimizer.apply([np.zeros((2, 2), "float32")], [kernel])
    assert optimizer.decays(kernel) and optimizer.decay_reference(kernel) is not None
