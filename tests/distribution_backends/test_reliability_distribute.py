"""Scale-out: tf.distribute strategies give the weights of a single device.

`MirroredStrategy` over 2 logical CPU devices (set up by conftest, trained
with `model.fit`) and `MultiWorkerMirroredStrategy` with 2 worker processes on
127.0.0.1 (TensorFlow's custom-training-loop recipe, see `_custom_loop_train`)
give the weights of a single device after 8 steps, for an L2 penalty, an
elastic net, MaxNorm, decoupled decay and proximal L1.
"""

import json

import keras
import numpy as np
import pytest

from keras_regkit import (
    L2,
    DecoupledWeightDecay,
    ElasticNet,
    MaxNorm,
)
from tests import helpers
from tests.rules_saving.reliability_problems import seeded as _seeded

Dense = keras.layers.Dense


# --- 3. scale-out: MirroredStrategy and MultiWorkerMirroredStrategy -----------------

SCALEOUT_CASES = ("l2", "elastic_net", "max_norm", "decoupled_decay", "proximal_l1")
SCALEOUT_EPOCHS, SCALEOUT_BATCH = 2, 16  # 64 examples: 8 steps of global batch 16


def _scaleout_data():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 4)).astype("float32")
    return x, y


def _scaleout_model(case):
    """Built inside the strategy's scope by the caller."""
    keras.utils.set_random_seed(3)
    regularizer = {"l2": L2(1e-2), "elastic_net": ElasticNet(1e-2, 1e-2)}.get(case)
    constraint = MaxNorm(0.5) if case == "max_norm" else None
    model = keras.Sequential(
        [
            keras.Input((8,)),
            Dense(16, activation="tanh", name="h", kernel_initializer=_seeded(1),
                  kernel_regularizer=regularizer, kernel_constraint=constraint),
            Dense(4, name="out", kernel_initializer=_seeded(2),
                  kernel_regularizer=regularizer, kernel_constraint=constraint),
        ],
        name=f"scale_{case}",
    )
    if case == "decoupled_decay":
        optimizer = DecoupledWeightDecay(keras.optimizers.Adam(1e-2), weight_decay=0.1)
    elif case == "proximal_l1":
        optimizer = DecoupledWeightDecay(keras.optimizers.SGD(0.1), weight_decay=0.0,
                                         l1=0.05)
    else:
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _scaleout_train(model, x, y):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(SCALEOUT_BATCH)
    options = tf.data.Options()
    # Each global batch of 16 is split across the replicas: same examples per step.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    model.fit(dataset.with_options(options), epochs=SCALEOUT_EPOCHS, shuffle=False,
              verbose=0)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == SCALEOUT_EPOCHS * 64 // SCALEOUT_BATCH
    return [np.asarray(w) for w in model.weights]


def _single_device_weights():
    x, y = _scaleout_data()
    results = {}
    for case in SCALEOUT_CASES:
        keras.utils.clear_session()
        initial = [np.asarray(w) for w in _scaleout_model(case).weights]
        keras.utils.clear_session()
        results[case] = _scaleout_train(_scaleout_model(case), x, y)
        # Training moved the weights (the comparison below is not vacuous).
        assert max(np.max(np.abs(a - b)) for a, b in zip(results[case], initial)) > 1e-2
    if "proximal_l1" in results:
        kernels = [w for w in results["proximal_l1"] if w.ndim == 2]
        assert sum(int(np.sum(w == 0)) for w in kernels) > 0  # exact zeros were made
    if "max_norm" in results:
        assert np.max(np.linalg.norm(results["max_norm"][0], axis=0)) <= 0.5 + 1e-6
    return results


@pytest.fixture(scope="module")
def single_device_weights():
    return _single_device_weights()


def _assert_same_weights(got, want, label):
    assert len(got) == len(want), label
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=f"{label} weight {i}")


@pytest.mark.tensorflow_only
def test_mirrored_strategy_matches_one_device(single_device_weights):
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "conftest should split the CPU into 2 logical devices"
    strategy = tf.distribute.MirroredStrategy(
        devices[:2], cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert strategy.num_replicas_in_sync == 2
    x, y = _scaleout_data()
    for case in SCALEOUT_CASES:
        keras.utils.clear_session()
        with strategy.scope():
            model = _scaleout_model(case)
        _assert_same_weights(
            _scaleout_train(model, x, y), single_device_weights[case], f"mirrored/{case}"
        )


def _custom_loop_train(strategy, model, x, y):
    """`SCALEOUT_EPOCHS` epochs with TensorFlow's custom-training-loop recipe.

    Used for `MultiWorkerMirroredStrategy` because Keras 3.15's `fit` fails
    there before the first step (`Trainer._maybe_symbolic_build` calls
    `strategy.reduce` on the nested `(x, y)` batch; the metric logs are then
    reduced with `axis=0` on scalars): keras-team/keras#20585,
    tensorflow/tensorflow#72388. The recipe is the one of
    https://www.tensorflow.org/tutorials/distribute/multi_worker_with_ctl:
    per-replica loss averaged over the *global* batch, regularization losses
    divided by the number of replicas, and the Keras optimizer's own
    `apply_gradients`, which all-reduces the gradients and then runs the
    update, the decoupled decay/proximal step and the constraints.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(SCALEOUT_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = strategy.experimental_distribute_dataset(dataset.with_options(options))
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    def replica_step(inputs, targets):
        with tf.GradientTape() as tape:
            predictions = model(inputs, training=True)
            per_example = tf.reduce_mean(tf.square(targets - predictions), axis=-1)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=SCALEOUT_BATCH
            )
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def distributed_step(batch):
        strategy.run(replica_step, args=batch)

    for _ in range(SCALEOUT_EPOCHS):
        for batch in dataset:
            distributed_step(batch)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == SCALEOUT_EPOCHS * 64 // SCALEOUT_BATCH
    return [np.asarray(w) for w in model.weights]


def _mwms_worker_main(out_path):
    """Entry point of one worker process (TF_CONFIG is set by the test)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=120
        )
    )
    assert strategy.num_replicas_in_sync == 2
    x, y = _scaleout_data()
    arrays = {}
    for case in SCALEOUT_CASES:
        with strategy.scope():
            model = _scaleout_model(case)
        for i, w in enumerate(_custom_loop_train(strategy, model, x, y)):
            arrays[f"{case}/{i}"] = w
    np.savez(out_path, **arrays)


@pytest.mark.tensorflow_only
def test_multi_worker_mirrored_strategy_matches_one_device(tmp_path, single_device_weights):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in helpers.free_ports(2)]}
    outs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    code = "import sys; from tests.distribution_backends import test_reliability_distribute as t; t._mwms_worker_main(sys.argv[1])"
    results = helpers.run_together(code, [
        ([str(out)], helpers.child_env(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index, out in enumerate(outs)], timeout=300)
    failures = [f"worker {index} failed ({code}):\n{stderr[-3000:]}"
                for index, (code, _, stderr) in enumerate(results) if code != 0]
    assert not failures, "\n\n".join(failures)
    for index, out in enumerate(outs):
        arrays = dict(np.load(out))
        for case in SCALEOUT_CASES:
            got = [arrays[f"{case}/{i}"] for i in range(len(single_device_weights[case]))]
            _assert_same_weights(got, single_device_weights[case], f"worker{index}/{case}")
