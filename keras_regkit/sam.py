"""Sharpness-aware minimization (SAM, ASAM) as a model wrapper for `fit`."""

import keras

from keras_regkit import _layer_tree
from keras_regkit import _sam_steps
from keras_regkit import _validation


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
        _layer_tree.check_model(model)
        rho = _validation.positive(rho, "rho")
        _validation.boolean(adaptive, "adaptive")
        eta = _validation.non_negative(eta, "eta")
        num_batch_splits = _validation.optional_positive_int(num_batch_splits, "num_batch_splits")
        step = _sam_steps.for_backend(keras.backend.backend())
        super().__init__(**kwargs)
        self.model = model
        self.rho = rho
        self.adaptive = bool(adaptive)
        self.eta = eta
        self.num_batch_splits = num_batch_splits
        # The backend's step, chosen once (`_sam_steps`).
        self._step = step
        # Nothing of its own to build: built when the network is.
        self.built = model.built

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def train_step(self, *args):
        """One SAM step: `train_step(data)` on TensorFlow, `(state, data)` on JAX."""
        return self._step(self, *args)

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
