"""Tests of keras_regkit.SharpnessAwareMinimization against NumPy references written here."""

import keras
import numpy as np
import pytest

import keras_regkit
from tests.helpers import config_round_trip
from tests.helpers import load_in_fresh_process

SAM = keras_regkit.SharpnessAwareMinimization
LR = 0.1


# ---------------------------------------------------------------- the NumPy reference


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 2))


def _initial_params(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.7, size=(3, 4)), rng.normal(scale=0.1, size=4),
            rng.normal(scale=0.7, size=(4, 2)), rng.normal(scale=0.1, size=2)]


def _mlp(params=None, *, l2=0.0, activity=0.0, constraint=None):
    """Dense(4, tanh) -> Dense(2), the network the reference differentiates."""
    def penalty():
        return keras_regkit.L2(l2) if l2 else None

    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, activation="tanh", kernel_regularizer=penalty(),
                           kernel_constraint=constraint, name="hidden"),
        keras.layers.Dense(2, kernel_regularizer=penalty(),
                           activity_regularizer=keras_regkit.L2(activity) if activity else None,
                           kernel_constraint=constraint, name="out"),
    ])
    model.set_weights(_initial_params() if params is None else params)
    return model


def _loss_and_grads(params, x, y, l2=0.0, activity=0.0, sample_weight=None):
    """Mean squared error of the MLP, by hand, plus `l2 * sum W^2` on both kernels
    and Keras's activity penalty on the output, `activity * sum(out^2) / batch`.

    With `sample_weight`, Keras's "sum_over_batch_size": sum_i w_i mse_i / batch.
    """
    w1, b1, w2, b2 = params
    weight = np.ones(len(x)) if sample_weight is None else sample_weight
    hidden = np.tanh(x @ w1 + b1)
    out = hidden @ w2 + b2
    loss = (np.sum(weight * np.mean((out - y) ** 2, axis=1)) / len(x)
            + l2 * (np.sum(w1 ** 2) + np.sum(w2 ** 2))
            + activity * np.sum(out ** 2) / len(x))
    d_out = 2.0 * (out - y) * weight[:, None] / out.size + 2.0 * activity * out / len(x)
    d_pre = (d_out @ w2.T) * (1.0 - hidden ** 2)
    grads = [x.T @ d_pre + 2 * l2 * w1, d_pre.sum(0), hidden.T @ d_out + 2 * l2 * w2,
             d_out.sum(0)]
    return loss, grads


def _sam_gradient(params, x, y, *, rho, adaptive=False, eta=0.01, l2=0.0, activity=0.0,
                  splits=1, sample_weight=None):
    """Foret et al. / Kwon et al.: the gradient at w + eps, averaged over sub-batches."""
    total = [np.zeros_like(p) for p in params]
    for part in np.split(np.arange(len(x)), splits):
        weight = None if sample_weight is None else sample_weight[part]
        _, g = _loss_and_grads(params, x[part], y[part], l2, activity, weight)
        t = [np.abs(p) + eta if adaptive else np.ones_like(p) for p in params]
        norm = np.sqrt(sum(np.sum((ti * gi) ** 2) for ti, gi in zip(t, g)))
        eps = [rho * ti ** 2 * gi / (norm + 1e-12) for ti, gi in zip(t, g)]
        _, g_sam = _loss_and_grads([p + e for p, e in zip(params, eps)], x[part], y[part],
                                   l2, activity, weight)
        total = [a + b / splits for a, b in zip(total, g_sam)]
    return total


class _NumpySGD:
    def __init__(self, lr):
        self.lr = lr

    def step(self, params, grads):
        return [p - self.lr * g for p, g in zip(params, grads)]


class _NumpyAdam:
    """Keras's Adam: bias corrections folded into the step size, eps outside the sqrt."""

    def __init__(self, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
        self.t, self.m, self.v = 0, None, None

    def step(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        # Keras takes the powers beta ** t of the betas rounded to float32 (its
        # scalars are float32 tensors): 1 - 0.999 ** t then moves by 1e-5.
        beta_1_power = float(np.float32(self.beta_1)) ** self.t
        beta_2_power = float(np.float32(self.beta_2)) ** self.t
        alpha = self.lr * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        new = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self.m[i] = self.beta_1 * self.m[i] + (1 - self.beta_1) * g
            self.v[i] = self.beta_2 * self.v[i] + (1 - self.beta_2) * g ** 2
            new.append(p - alpha * self.m[i] / (np.sqrt(self.v[i]) + self.epsilon))
        return new


def _optimizers(name):
    if name == "sgd":
        return keras.optimizers.SGD(LR), _NumpySGD(LR)
    return keras.optimizers.Adam(LR), _NumpyAdam(LR)


def _assert_weights(model, params, atol=1e-6):
    for got, expected in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


# ---------------------------------------------------------------- SAM / ASAM steps


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("adaptive, rho", [(False, 0.05), (True, 0.5)])
def test_steps_match_numpy(optimizer, adaptive, rho):
    x, y = _data()
    net = _mlp()
    model = SAM(net, rho=rho, adaptive=adaptive)
    keras_optimizer, reference = _optimizers(optimizer)
    model.compile(optimizer=keras_optimizer, loss="mse")
    params = _initial_params()
    for _ in range(3):
        # Keras before 3.15 keeps the loss mean across `train_on_batch` calls.
        model.reset_metrics()
        logs = model.train_on_batch(x, y, return_dict=True)
        loss_at_w, _ = _loss_and_grads(params, x, y)
        # the logged loss is the first pass's, at the unperturbed weights
        np.testing.assert_allclose(logs["loss"], loss_at_w, rtol=1e-5)
        params = reference.step(params, _sam_gradient(params, x, y, rho=rho, adaptive=adaptive))
        _assert_weights(net, params)
    # and SAM moved differently from a plain step
    plain = _NumpySGD(LR).step(_initial_params(), _loss_and_grads(_initial_params(), x, y)[1])
    assert not np.allclose(plain[0], _NumpySGD(LR).step(
        _initial_params(), _sam_gradient(_initial_params(), x, y, rho=rho,
                                         adaptive=adaptive))[0], atol=1e-4)


@pytest.mark.parametrize("adaptive", [False, True])
def test_m_sharpness_matches_numpy(adaptive):
    x, y = _data()
    net = _mlp()
    model = SAM(net, rho=0.1, adaptive=adaptive, num_batch_splits=4)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    params = _initial_params()
    for _ in range(2):
        params = _NumpySGD(LR).step(
            params, _sam_gradient(params, x, y, rho=0.1, adaptive=adaptive, splits=4))
    _assert_weights(net, params)
    # one eps per sub-batch is not one eps for the batch
    whole = _NumpySGD(LR).step(_initial_params(), _sam_gradient(
        _initial_params(), x, y, rho=0.1, adaptive=adaptive))
    assert not np.allclose(whole[0], _NumpySGD(LR).step(_initial_params(), _sam_gradient(
        _initial_params(), x, y, rho=0.1, adaptive=adaptive, splits=4))[0], atol=1e-5)


def test_sample_weights_are_split_with_the_batch():
    x, y = _data()
    weight = np.linspace(0.0, 2.0, len(x))
    net = _mlp()
    model = SAM(net, rho=0.2, num_batch_splits=2)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.train_on_batch(x, y, sample_weight=weight)
    params = _NumpySGD(LR).step(_initial_params(), _sam_gradient(
        _initial_params(), x, y, rho=0.2, splits=2, sample_weight=weight))
    _assert_weights(net, params)


@pytest.mark.parametrize("l2, activity", [(0.05, 0.0), (0.0, 0.2)])
def test_penalties_in_both_passes(l2, activity):
    # weight penalty (keras_regkit.L2 on the kernels) and activity penalty (add_loss)
    x, y = _data()
    net = _mlp(l2=l2, activity=activity)
    model = SAM(net, rho=0.2, num_batch_splits=2)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    params = _initial_params()
    for _ in range(2):
        model.reset_metrics()  # as Keras 3.15's train_on_batch does itself
        logs = model.train_on_batch(x, y, return_dict=True)
        np.testing.assert_allclose(logs["loss"], _loss_and_grads(params, x, y, l2, activity)[0],
                                   rtol=1e-5)
        params = _NumpySGD(LR).step(params, _sam_gradient(
            params, x, y, rho=0.2, l2=l2, activity=activity, splits=2))
        _assert_weights(net, params)


def test_decoupled_weight_decay_at_unperturbed_weights():
    x, y = _data()
    net = _mlp()
    model = SAM(net, rho=0.5)
    model.compile(
        optimizer=keras_regkit.DecoupledWeightDecay(keras.optimizers.SGD(LR), weight_decay=0.5),
        loss="mse",
    )
    params = _initial_params()
    for _ in range(2):
        model.train_on_batch(x, y)
        grads = _sam_gradient(params, x, y, rho=0.5)
        # decay (kernels only) at w, then SGD on the gradient taken at w + eps
        params = [p - LR * 0.5 * p * (p.ndim > 1) - LR * g for p, g in zip(params, grads)]
        _assert_weights(net, params)


def test_max_norm_applied_after_the_real_step_only():
    x, y = _data()
    params = _initial_params()
    max_value = 0.6 * min(np.linalg.norm(params[0], axis=0).min(),
                          np.linalg.norm(params[2], axis=0).min())
    # the initial weights are left outside the ball: a projection of w before the
    # step, or of w + eps, would show
    net = _mlp(params, constraint=keras_regkit.MaxNorm(max_value))
    model = SAM(net, rho=0.5)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.train_on_batch(x, y)
    stepped = _NumpySGD(LR).step(params, _sam_gradient(params, x, y, rho=0.5))
    for i in (0, 2):
        norms = np.linalg.norm(stepped[i], axis=0)
        stepped[i] = stepped[i] * np.where(norms > max_value, max_value / norms, 1.0)
    _assert_weights(net, stepped)


# ---------------------------------------------------------------- non-trainable state


def _bn_net(seed=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, name="hidden"),
        keras.layers.BatchNormalization(momentum=0.5, name="bn"),
        keras.layers.Dropout(0.5, seed=7, name="drop"),
        keras.layers.Dense(2, name="out"),
    ])


def _state(model):
    return [np.asarray(v) for v in model.non_trainable_variables]


@pytest.mark.parametrize("splits", [None, 2])
def test_non_trainable_state_advances_as_one_plain_forward_pass(splits):
    x, y = _data()
    net, plain = _bn_net(), _bn_net()
    plain.set_weights(net.get_weights())
    kernel, bias = net.get_layer("hidden").get_weights()
    assert len(_state(net)) == 3  # moving mean, moving variance, dropout seed state
    model = SAM(net, rho=0.5, num_batch_splits=splits)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.train_on_batch(x, y)
    for part in np.split(x, splits or 1):  # one training-mode call per (sub-)batch
        plain(part, training=True)
    for got, expected in zip(_state(net), _state(plain)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # by hand: moving_mean <- 0.5 * moving_mean + 0.5 * batch mean, from 0
    expected = np.zeros(4)
    for part in np.split(x, splits or 1):
        expected = 0.5 * expected + 0.5 * np.mean(part @ kernel + bias, axis=0)
    np.testing.assert_allclose(np.asarray(net.get_layer("bn").moving_mean), expected,
                               atol=1e-6)


def test_second_pass_reuses_the_first_pass_dropout_masks():
    # With a tiny rho, SAM's gradient is the plain gradient only if both passes
    # draw the same dropout mask.
    x, y = _data()
    net, plain = _bn_net(), _bn_net()
    plain.set_weights(net.get_weights())
    model = SAM(net, rho=1e-7)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    plain.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    for _ in range(2):
        model.train_on_batch(x, y)
        plain.train_on_batch(x, y)
    for got, expected in zip(net.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- Keras workflows


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class TwoLayerNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, activation="tanh")
        self.out = keras.layers.Dense(2)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_compile_fit_evaluate_predict(kind):
    x, y = _data(16)
    if kind == "sequential":
        net = _mlp()
    elif kind == "functional":
        inputs = keras.Input((3,))
        net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))
    else:
        net = TwoLayerNet()
        net(x[:1])
    model = SAM(net)
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "mae"}
    loss, mae = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), net.predict(x, verbose=0))
    np.testing.assert_allclose(mae, np.mean(np.abs(net.predict(x, verbose=0) - y)), rtol=1e-5)
    assert len(model.trainable_variables) == len(net.trainable_variables) == 4


def test_config_round_trip():
    model = SAM(_mlp(), rho=0.3, adaptive=True, eta=0.02, num_batch_splits=2, name="sam")
    config = model.get_config()
    assert {k: config[k] for k in ("rho", "adaptive", "eta", "num_batch_splits")} == {
        "rho": 0.3, "adaptive": True, "eta": 0.02, "num_batch_splits": 2}
    restored = config_round_trip(model)
    assert restored.name == "sam" and isinstance(restored.model, keras.Sequential)


def test_save_load_in_fresh_process_continues_the_run(tmp_path):
    x, y = _data()
    net = _mlp()
    model = SAM(net, rho=0.3, adaptive=True, num_batch_splits=2)
    model.compile(optimizer=keras.optimizers.Adam(LR), loss="mse")
    for _ in range(2):
        model.train_on_batch(x, y)
    path = tmp_path / "sam.keras"
    model.save(path)
    loaded = load_in_fresh_process(path, x, train_targets=y)
    np.testing.assert_allclose(loaded["predictions"], model.predict(x, verbose=0), atol=1e-7)
    model.train_on_batch(x, y)  # the uninterrupted run's third step
    for got, expected in zip(loaded["weights_after_step"], model.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("splits_mirrored, splits_single, adaptive", [
    (None, None, False), (None, None, True), (1, 2, False),
])
def test_mirrored_two_replicas_equal_one_device(splits_mirrored, splits_single, adaptive):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert strategy.num_replicas_in_sync == 2
    x, y = _data(16)
    data = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y.astype("float32")))
    data = data.batch(8)

    def build(splits):
        model = SAM(_mlp(l2=0.01), rho=0.3, adaptive=adaptive, num_batch_splits=splits)
        model.compile(optimizer=keras.optimizers.Adam(LR), loss="mse")
        return model

    single = build(splits_single)
    with strategy.scope():
        mirrored = build(splits_mirrored)
    losses = [model.fit(data, epochs=2, shuffle=False, verbose=0).history["loss"]
              for model in (single, mirrored)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # and against the reference
    params, adam = _initial_params(), _NumpyAdam(LR)
    for _ in range(2):
        for batch in (slice(0, 8), slice(8, 16)):
            params = adam.step(params, _sam_gradient(
                params, x[batch], y[batch], rho=0.3, adaptive=adaptive, l2=0.01,
                splits=splits_single or 1))
    _assert_weights(single.model, params, atol=2e-6)


def test_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = _data()
    net = _mlp()
    model = SAM(net, rho=0.2)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert net.get_layer("hidden").compute_dtype == "float16"
    model.train_on_batch(x, y)
    params = _NumpySGD(LR).step(_initial_params(), _sam_gradient(_initial_params(), x, y,
                                                                 rho=0.2))
    _assert_weights(net, params, atol=3e-3)  # float16 forward and backward passes


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rho": 0}, ValueError, r"`rho` must be > 0. Received: rho=0.0"),
    ({"rho": -0.1}, ValueError, r"Received: rho=-0.1"),
    ({"rho": float("nan")}, ValueError, r"`rho` must be a finite number. Received: rho=nan"),
    ({"rho": float("inf")}, ValueError, r"Received: rho=inf"),
    ({"rho": "0.05"}, TypeError, r"Received: rho='0.05'"),
    ({"adaptive": "yes"}, TypeError, r"Received: adaptive='yes'"),
    ({"eta": -1.0}, ValueError, r"Received: eta=-1.0"),
    ({"num_batch_splits": 0}, ValueError, r"Received: num_batch_splits=0"),
    ({"num_batch_splits": 2.0}, TypeError, r"Received: num_batch_splits=2.0"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SAM(_mlp(), **kwargs)


@pytest.mark.parametrize("model", [None, keras.layers.Dense(2)])
def test_refuses_a_non_model(model):
    with pytest.raises(TypeError, match=r"`model` must be a `keras.Model`.*Received: model="):
        SAM(model)


def test_refuses_an_unsupported_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match=r"Received: keras.backend.backend\(\)='torch'"):
        SAM(_mlp())


@pytest.mark.parametrize("entry", ["train_on_batch", "fit"])
def test_batch_not_divisible_by_num_batch_splits_changes_nothing(entry):
    errors = (ValueError,)  # when the batch size is known at tracing
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        errors += (tf.errors.InvalidArgumentError,)  # `fit`: checked when run
    elif entry == "fit":
        pytest.skip("JAX's fit detaches the variables during an epoch and does not "
                    "reattach them after an error in the step")
    x, y = _data(6)
    net = _mlp()
    model = SAM(net, num_batch_splits=4)
    model.compile(optimizer=keras.optimizers.Adam(LR), loss="mse")
    with pytest.raises(errors, match=r"`num_batch_splits=4` must divide the batch size"):
        if entry == "fit":
            model.fit(x, y, batch_size=6, epochs=1, verbose=0)
        else:
            model.train_on_batch(x, y)
    _assert_weights(net, [np.float32(p) for p in _initial_params()], atol=0)
    assert int(model.optimizer.iterations) == 0
