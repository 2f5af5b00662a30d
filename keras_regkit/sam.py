"""Sharpness-aware minimization (SAM, ASAM) as a model wrapper for `fit`."""

import keras
from keras import ops

from keras_regkit import _distribute
from keras_regkit import _selectors
from keras_regkit import _validation

BACKENDS = ("tensorflow", "jax")
# Added to the gradient norm, as in Foret et al.'s and Kwon et al.'s code.
NORM_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="keras_regkit")
class SharpnessAwareMinimization(keras.Model):
    r"""Trains any Keras model with sharpness-aware minimization (SAM or ASAM).

    SAM seeks weights whose whole neighbourhood has a low loss (flat minima),
    which generalize better than sharp ones (Foret et al., 2021). Wrap a built
    Sequential, functional or subclassed model, then `compile`, `fit`,
    `evaluate`, `predict`, `save` and `keras.saving.load_model` as usual; only
    `train_step` changes. Each training step, with `g = grad L(w)` the gradient
    of the compiled loss (regularization penalties included) on the batch:

        SAM  (adaptive=False):  eps = rho * g / ||g||
        ASAM (adaptive=True):   eps = rho * T^2 g / ||T g||,  T = |w| + eta
                                (elementwise; Kwon et al., 2021)
        g_sam = grad L(w + eps)          (the second forward/backward pass)
        w <- optimizer.apply(g_sam) at w (the perturbation is never applied
                                          to the variables)

    `||.||` is the 2-norm over all trainable variables together, plus `1e-12`.
    So the optimizer (SGD, Adam, `keras_regkit.DecoupledWeightDecay`, ...)
    steps from the unperturbed weights: decoupled weight decay acts on `w`,
    and constraints (`keras_regkit.MaxNorm`) are applied after the real step
    only, as they are by `optimizer.apply`. The penalties of the package's
    regularizers are part of the loss in both passes, each time at the weights
    of that pass.

    `num_batch_splits=m` gives m-sharpness: the batch is cut into `m` equal
    sub-batches; each gets its own `eps` from its own gradient and its own
    second pass, and the `m` gradients `g_sam` are averaged (tf.keras 2's
    `SharpnessAwareMinimization` summed them). The batch size must be a
    multiple of `m` (with a partial last batch in `fit`, use a dataset whose
    size is a multiple of the batch, or `drop_remainder=True`). Otherwise the
    step raises before it updates anything: a `ValueError` when the batch
    size is known at tracing, a `tf.errors.InvalidArgumentError` with the
    same message when TensorFlow learns it only at run time. (On JAX, Keras's
    `fit` detaches the variables from the model during an epoch and does not
    reattach them after an error in the step, whatever the error.)

    State: the first pass is an ordinary training call, so batch-norm moving
    statistics, random-generator states (dropout) and metrics advance once,
    exactly as in a plain step (with splits: once per sub-batch, as `m`
    plain calls on the sub-batches would). The second pass starts from the
    same non-trainable state as the first, so it draws the same dropout masks
    and random numbers, and all its state changes are discarded. The logged
    `loss` is the first pass's (at `w`), averaged over the sub-batches.

    Distribution, mixed precision, backends:
    - `tf.distribute` (`MirroredStrategy`, ...): with `num_batch_splits=None`
      the first-pass gradients are summed across replicas before `eps` is
      taken, so `N` replicas step exactly as one device on the global batch.
      With `num_batch_splits=m`, each replica splits its own part of the batch
      and keeps its `eps` local: `N` replicas equal one device with
      `num_batch_splits=N * m` (m-sharpness as in Foret et al.'s TPU code).
    - mixed precision: both passes scale the loss with the optimizer's loss
      scale (`LossScaleOptimizer`); `eps` does not depend on the scale, and is
      zero when the first gradient is not finite (the `LossScaleOptimizer`
      then skips the step as usual).
    - backends: TensorFlow and JAX. PyTorch is refused at construction with
      a `ValueError` (its trainer has no stateless step to build on).

    Departures from the papers: `T = |w| + eta` for every variable, biases
    included (Kwon et al.'s code uses `T = 1` for biases); the second pass
    reuses the first pass's dropout masks (their code redraws them).

    Cost: two forward and backward passes per step, about twice a plain step
    (see `benchmarks/sam_step_time.py`).

    Args:
        model: The `keras.Model` to train. An unbuilt one is built on the
            first batch's shapes, as `fit` builds models.
        rho: Positive float, the radius of the neighbourhood. Defaults to
            `0.05` (Foret et al.; ASAM's paper uses larger values, such as
            `0.5` to `2.0`).
        adaptive: Whether to use ASAM's scale-invariant perturbation.
            Defaults to `False`.
        eta: Non-negative float, ASAM's `eta` in `T = |w| + eta` (used only
            with `adaptive=True`). Defaults to `0.01`, the paper's value.
        num_batch_splits: `None` (one `eps` per batch) or a positive int `m`
            (m-sharpness). Defaults to `None`.
        **kwargs: `name` and `trainable`, as for `keras.Model`.

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, use_bias=False, kernel_initializer="ones")])
    >>> model = keras_regkit.SharpnessAwareMinimization(net, rho=0.5)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> x, y = np.array([[1.0, 0.0]]), np.array([[0.0]])
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    >>> # loss w0^2: g = (2, 0), eps = 0.5 * g / 2 = (0.5, 0), g_sam = (3, 0)
    >>> [round(float(v), 6) for v in net.get_weights()[0].ravel()]  # 1 - 0.1 * 3
    [0.7, 1.0]

    Reference: Foret et al., "Sharpness-Aware Minimization for Efficiently
    Improving Generalization", ICLR 2021; Kwon et al., "ASAM: Adaptive
    Sharpness-Aware Minimization for Scale-Invariant Learning of Deep Neural
    Networks", ICML 2021.
    """

    def __init__(
        self,
        model,
        rho=0.05,
        adaptive=False,
        eta=0.01,
        num_batch_splits=None,
        **kwargs,
    ):
        _selectors.check_model(model)
        rho = _validation.positive(rho, "rho")
        _validation.boolean(adaptive, "adaptive")
        eta = _validation.non_negative(eta, "eta")
        num_batch_splits = _validation.optional_positive_int(num_batch_splits, "num_batch_splits")
        backend = keras.backend.backend()
        if backend not in BACKENDS:
            raise ValueError(
                "`SharpnessAwareMinimization` needs the TensorFlow or JAX backend "
                "(set KERAS_BACKEND). "
                f"Received: keras.backend.backend()={backend!r}"
            )
        super().__init__(**kwargs)
        self.model = model
        self.rho = rho
        self.adaptive = bool(adaptive)
        self.eta = eta
        self.num_batch_splits = num_batch_splits
        # Nothing of its own to build: built when the network is.
        self.built = model.built

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # ------------------------------------------------------------------ the step

    def train_step(self, *args):
        """One SAM step: `train_step(data)` on TensorFlow, `(state, data)` on JAX."""
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tf_train_step(*args)

    def _perturbations(self, grads, weights):
        """`eps` for each variable (`None` where the gradient is `None`)."""
        present = [
            (ops.convert_to_tensor(g), w) for g, w in zip(grads, weights) if g is not None
        ]
        if self.adaptive:
            scales = [ops.add(ops.abs(w), ops.cast(self.eta, w.dtype)) for _, w in present]
            directions = [ops.multiply(s, g) for s, (g, _) in zip(scales, present)]
        else:
            scales = [None] * len(present)
            directions = [g for g, _ in present]
        squares = [ops.sum(ops.square(ops.cast(d, "float32"))) for d in directions]
        norm = ops.sqrt(ops.sum(ops.stack(squares))) if squares else ops.zeros(())
        finite = ops.isfinite(norm)
        scale = ops.where(finite, self.rho / (norm + NORM_EPSILON), 0.0)
        perturbations = []
        for s, d in zip(scales, directions):
            e = ops.multiply(d if s is None else ops.multiply(s, d), ops.cast(scale, d.dtype))
            perturbations.append(ops.where(finite, e, ops.zeros_like(e)))
        it = iter(perturbations)
        return [None if g is None else next(it) for g in grads]

    def _batch_splits(self, x, y, sample_weight):
        """The `(x, y, sample_weight)` sub-batches (one when not splitting)."""
        if self.num_batch_splits is None:
            return [(x, y, sample_weight)]
        m = self.num_batch_splits
        first = next(t for t in keras.tree.flatten(x) if t is not None)
        batch = first.shape[0]
        if batch is not None:
            if batch % m:
                raise ValueError(
                    f"`num_batch_splits={m}` must divide the batch size. "
                    f"Received: batch size {batch}"
                )
        else:  # TensorFlow graph with an unknown batch size: checked when run
            import tensorflow as tf

            tf.debugging.Assert(
                tf.equal(tf.math.floormod(tf.shape(first)[0], m), 0),
                [f"`num_batch_splits={m}` must divide the batch size. Received: batch size",
                 tf.shape(first)[0]],
            )

        def split(structure):
            if structure is None:
                return [None] * m
            pieces = [ops.split(t, m, axis=0) for t in keras.tree.flatten(structure)]
            return [
                keras.tree.pack_sequence_as(structure, [p[i] for p in pieces])
                for i in range(m)
            ]

        return list(zip(split(x), split(y), split(sample_weight)))

    def _loss_metric(self):
        for metric in self.metrics:
            if metric.name == "loss":
                return metric
        return None

    def _record_loss(self, losses, x):
        """Updates the `loss` metric with the mean first-pass loss."""
        tracker = self._loss_metric()
        if tracker is None:
            return
        loss = ops.divide(ops.sum(ops.stack(losses)), float(len(losses)))
        loss = _distribute.unscaled_replica_loss(loss)
        first = next(t for t in keras.tree.flatten(x) if t is not None)
        tracker.update_state(loss, sample_weight=ops.shape(first)[0])

    @staticmethod
    def _concat(predictions):
        if len(predictions) == 1:
            return predictions[0]
        return keras.tree.map_structure(
            lambda *parts: ops.concatenate(parts, axis=0), *predictions
        )

    def _build_network(self, x):
        """Builds the network on symbolic inputs shaped as `x` (batch size unknown).

        As `fit` does on JAX or under a `tf.distribute` strategy; TensorFlow's
        plain `fit` waits for the step's first call, too late for the variables
        and state read before it. `ValueError`, before any update, if it fails.
        """
        network = self.model
        if network.built and all(layer.built for layer in _selectors.iter_layers(network)):
            self.built = True
            return

        def spec(tensor):
            if tensor is None:
                return None
            shape = (None,) + tuple(tensor.shape)[1:]
            return keras.KerasTensor(shape, keras.backend.standardize_dtype(tensor.dtype))

        inputs = keras.tree.map_structure(spec, x)
        was_built = network.built
        try:
            network(inputs, training=False)
        except Exception as error:
            network.built = was_built  # Keras marks it built after a failed attempt
            shapes = keras.tree.map_structure(lambda t: None if t is None else t.shape, inputs)
            raise ValueError(
                "`model` is not built, and could not be built on symbolic inputs "
                f"shaped as the first batch, {shapes} ({type(error).__name__} above). "
                "Build it before training: start a Sequential model with `keras.Input`, "
                "or call the model on a batch (`model(x[:1])`). "
                f"Received: model={network!r}"
            ) from error
        self.built = True

    def _tf_train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._build_network(x)
        variables = self.trainable_variables
        replica_context = tf.distribute.get_replica_context()
        all_reduce = (
            self.num_batch_splits is None
            and replica_context is not None
            and replica_context.num_replicas_in_sync > 1
        )
        summed, predictions, losses = None, [], []
        for xs, ys, ws in self._batch_splits(x, y, sample_weight):
            # Snapshots (on TensorFlow, converting a variable does not copy it).
            state = [ops.copy(v) for v in self.non_trainable_variables]
            with tf.GradientTape() as tape:
                y_pred = self(xs, training=True)
                loss = self.compute_loss(
                    x=xs, y=ys, y_pred=y_pred, sample_weight=ws, training=True
                )
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            predictions.append(y_pred)
            losses.append(loss)
            if all_reduce:
                present = [g for g in grads if g is not None]
                reduced = iter(replica_context.all_reduce(tf.distribute.ReduceOp.SUM, present))
                grads = [None if g is None else next(reduced) for g in grads]
            weights = [ops.copy(v) for v in variables]
            perturbations = self._perturbations(grads, weights)
            perturbed = [
                w if e is None else ops.add(w, e) for w, e in zip(weights, perturbations)
            ]
            mapping = list(zip(variables, perturbed))
            mapping += list(zip(self.non_trainable_variables, state))
            with tf.GradientTape() as tape:
                tape.watch(perturbed)
                with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                    y_pred_sam = self(xs, training=True)
                    loss_sam = self.compute_loss(
                        x=xs, y=ys, y_pred=y_pred_sam, sample_weight=ws, training=True
                    )
                    scaled_sam = self.optimizer.scale_loss(loss_sam)
            grads = tape.gradient(scaled_sam, perturbed)
            summed = grads if summed is None else [
                a if b is None else (b if a is None else ops.add(a, b))
                for a, b in zip(summed, grads)
            ]
        if len(losses) > 1:
            summed = [None if g is None else ops.divide(g, float(len(losses)))
                      for g in summed]
        self.optimizer.apply(summed, variables)
        self._record_loss(losses, x)
        return self.compute_metrics(x, y, self._concat(predictions), sample_weight)

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_values, metric_values = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        stateful = (
            list(self.non_trainable_variables) + list(self.metrics_variables)
        )
        num_non_trainable = len(self.non_trainable_variables)

        def loss_fn(trainable_values, stateful_values, xs, ys, ws):
            mapping = list(zip(self.trainable_variables, trainable_values))
            mapping += list(zip(stateful, stateful_values))
            mapping += list(zip(self.optimizer.variables, optimizer_values))
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                y_pred = self(xs, training=True)
                loss = self.compute_loss(
                    x=xs, y=ys, y_pred=y_pred, sample_weight=ws, training=True
                )
                scaled = self.optimizer.scale_loss(loss)
            updated = []
            for variable, old in zip(stateful, stateful_values):
                new = scope.get_current_value(variable)
                updated.append(old if new is None else new)
            return scaled, (loss, y_pred, updated)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        current = list(non_trainable) + list(metric_values)
        summed, predictions, losses = None, [], []
        for xs, ys, ws in self._batch_splits(x, y, sample_weight):
            (_, (loss, y_pred, updated)), grads = grad_fn(trainable, current, xs, ys, ws)
            perturbations = self._perturbations(grads, trainable)
            perturbed = [ops.add(w, e) for w, e in zip(trainable, perturbations)]
            # The second pass starts from the first pass's state; its updates are dropped.
            _, grads = grad_fn(perturbed, current, xs, ys, ws)
            current = updated
            predictions.append(y_pred)
            losses.append(loss)
            summed = grads if summed is None else [ops.add(a, b) for a, b in zip(summed, grads)]
        if len(losses) > 1:
            summed = [ops.divide(g, float(len(losses))) for g in summed]
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, summed, trainable
        )
        non_trainable = current[:num_non_trainable]
        metric_values = current[num_non_trainable:]
        mapping = list(zip(self.metrics_variables, metric_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self._record_loss(losses, x)
            logs = self.compute_metrics(x, y, self._concat(predictions), sample_weight)
        metric_values = [
            old if scope.get_current_value(v) is None else scope.get_current_value(v)
            for v, old in zip(self.metrics_variables, metric_values)
        ]
        return logs, (trainable, non_trainable, optimizer_values, metric_values)

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": _plain(keras.saving.serialize_keras_object(self.model)),
            "rho": self.rho,
            "adaptive": self.adaptive,
            "eta": self.eta,
            "num_batch_splits": self.num_batch_splits,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)


def _plain(value):
    """Tuples as lists, as JSON gives them back, so the config round-trips exactly."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
