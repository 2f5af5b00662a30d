"""Decoupled weight decay around any Keras optimizer, with proximal sparsity.

The update rule is written once, in the docstring of `DecoupledWeightDecay`;
`_decay_update` implements it and `_decay_mask` chooses the variables.
"""

import numbers

import keras
from keras import ops

from keras_regkit import _decay_mask
from keras_regkit import _decay_update
from keras_regkit import _distribute
from keras_regkit import _private_api
from keras_regkit import _validation
from keras_regkit import _wrapping
from keras_regkit._decay_update import normalized_weight_decay

__all__ = ["DecoupledWeightDecay", "normalized_weight_decay"]

DECAY_SCALINGS = ("learning_rate", "schedule", "none")
TOWARDS = ("zero", "initial")


@keras.saving.register_keras_serializable(package="keras_regkit")
class DecoupledWeightDecay(_wrapping.Wrapper):
    r"""Decoupled weight decay (AdamW-style) around any Keras optimizer.

    Wraps an optimizer instance (SGD with or without momentum, Adam, Nadam,
    RMSprop, Adagrad, Lion, ...) the way `keras.optimizers.LossScaleOptimizer`
    does, and shrinks the weights apart from the gradient (Loshchilov &
    Hutter, 2019). What it adds to Keras's own `weight_decay=` argument: the
    scaling of the decay is chosen and documented, the decay strength may be
    a schedule, the variable mask is saved with the model, decay may pull
    toward the initial weights, and proximal L1 / group-L1 steps give exact
    zeros.

    Each training step, with `lr_t` the inner optimizer's learning rate for
    the step and `λ_t = weight_decay`, or `weight_decay(step)` for a
    schedule (at the step count the learning-rate schedule sees: with
    gradient accumulation, every call, not every update):

        decay_scaling="learning_rate":  w <- w - lr_t * λ_t * w
            (PyTorch `AdamW`, Keras `weight_decay`, optax `adamw`)
        decay_scaling="schedule":       w <- w - (lr_t / lr_0) * λ_t * w
            (the paper's Algorithm 2: `eta_t = lr_t / lr_0` is its schedule
            multiplier; `lr_0` is the learning rate at step 0 - a schedule's
            value at step 0, or a float learning rate as it was at build -
            and must be > 0)
        decay_scaling="none":           w <- w - λ_t * w
            (the former TensorFlow Addons `AdamW`/`SGDW` rule)

    and then the inner optimizer's own step on the gradient `g` (computed at
    the weights before the decay). The decay uses those weights and the
    learning rate of the step, as Keras's `weight_decay` does. So with
    `Adam(learning_rate=alpha * eta_t)` and `"schedule"`, the update is
    exactly Algorithm 2, `w_t = w_{t-1} - eta_t * (alpha * m_hat /
    (sqrt(v_hat) + eps) + λ * w_{t-1})` (Keras places `eps` slightly
    differently inside Adam); `"learning_rate"` is the same with the paper's
    `λ` equal to `alpha * weight_decay`.
    With `toward="initial"` each `w` in the decay becomes `w - w_0`, where
    `w_0` is the variable's value when the optimizer was built (L2-SP). The
    `w_0` copies are optimizer variables, so checkpoints and saved models
    keep them.

    After the inner step, on the decayed variables (proximal steps):

        l1 > 0:        w <- sign(w) * max(|w| - lr_t * l1, 0)        (exact zeros)
        group_l1 > 0:  w_j <- w_j * max(0, 1 - lr_t * group_l1 / ||w_j||)

    where `w_j` is one unit of the variable, so whole units/filters become
    exactly zero (`||w_j|| = 0` is safe). The optimizer sees variables, not
    layers, so the unit comes from the variable: the `axis` of its
    `GroupLasso` regularizer or its `MaxNorm` constraint (the regularizer
    first), whichever is not `"auto"`. `regularize`/`constrain` write the
    layer's axes there when they differ from the default: the spatial axes
    of a depthwise kernel, all but the second-to-last of a transposed
    convolution's kernel, the contracted axes of an `EinsumDense` kernel.
    Without such an `axis`, a unit is all axes but the last, `w_j =
    w[..., j]`, output unit `j`'s fan-in (each entry of a 0-D or 1-D
    variable on its own). With both steps, the L1 step comes first
    (together: the proximal operator of the sparse group lasso). The
    thresholds scale with `lr_t` whatever `decay_scaling` is. A variable's
    constraint, if any, is applied again after them.

    Which variables decay (and get the proximal steps): without `include`,
    chosen by role, from the variable's name (the last part of
    `variable.path`) and, as the fallback, its rank. A trainable variable
    decays unless
    - it is a bias: named `bias` or `*_bias` (`dense/bias`, and
      `MultiHeadAttention`'s 2-D `query/bias`, `key/bias`, `value/bias`);
    - it is a normalization parameter: named `gamma`, `beta`, `scale` or
      `offset` (`LayerNormalization`, `BatchNormalization`,
      `GroupNormalization`, `RMSNormalization` and KerasHub's norm layers);
    - it has `ndim <= 1` (any other scalar or vector).
    So kernels (`Dense`, `EinsumDense`, convolutions, attention projections)
    and embeddings (`Embedding`, KerasHub's `ReversibleEmbedding` and
    `PositionEmbedding`) decay. With `include`, exactly the variables whose
    `variable.path` matches one of its glob patterns, whatever their name or
    rank; `exclude` removes matches, with or without `include`. Patterns
    match as `regularize`'s path selectors do: the path or a trailing part
    of it after a `/` (`"dense_2/*"` matches `"sequential/dense_2/kernel"`);
    a leading `*/` may match nothing (`"*/attention/*"` matches
    `"attention/query/kernel"`); and a leading model name may be missing
    from the path (`"seqnet/d1/*"`, from a live Sequential model, matches
    `"d1/kernel"`, its path after `load_model`).
    Patterns that match no variable at build time give a `UserWarning`
    naming them, as does a decayed variable that also carries an L2 penalty
    (`keras.regularizers.L2`/`L1L2`, `keras_regkit.L2`/`ElasticNet`).

    Training set-ups:
    - gradient accumulation (`gradient_accumulation_steps`, here or on the
      inner optimizer): decay and proximal steps run only on the calls that
      update the weights;
    - mixed precision: `model.compile` under `"mixed_float16"` wraps this
      optimizer in a `LossScaleOptimizer`, which skips the whole step, decay
      included, when the gradients are not finite. A `LossScaleOptimizer`
      inside this one works as well (compile with `auto_scale_loss=False`;
      TensorFlow backend only): the decay is skipped with its step;
    - `tf.distribute`: the updates go through the strategy the way Keras's
      own weight decay does, once per step, not once per replica. (Keras's
      gradient accumulation itself fails under `MirroredStrategy`.)
    The inner optimizer's EMA (`use_ema`) averages the weights before the
    proximal step. `learning_rate` and `iterations` are the inner
    optimizer's.

    Args:
        optimizer: The `keras.optimizers.Optimizer` instance to wrap. It must
            not decay the weights itself (`weight_decay` unset: use `Adam`,
            not `AdamW`).
        weight_decay: Non-negative float or
            `keras.optimizers.schedules.LearningRateSchedule`, the decay
            strength `λ`.
        decay_scaling: `"learning_rate"` (default), `"schedule"` or `"none"`,
            see above.
        exclude: Glob pattern or list of patterns on `variable.path` (such as
            `"*/bias"`, `"dense_2/*"`) not to decay. Defaults to `None`.
        include: Pattern or list of patterns; when given, exactly the
            matching variables decay. Defaults to `None` (kernels and
            embeddings, see above).
        l1: Non-negative float, strength of the proximal L1 step.
            Defaults to `0.0`.
        group_l1: Non-negative float, strength of the proximal group-L1 step.
            Defaults to `0.0`.
        toward: `"zero"` (default) or `"initial"` (decay toward the weights
            at build time).
        name: Optional name of the optimizer.
        **kwargs: Base-optimizer arguments (`gradient_accumulation_steps`,
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`)
            are set on the wrapped optimizer, which takes the steps, and are
            saved in its config. Each value is checked here (type and
            range); how they combine, Keras checks as it does when they are
            passed to the wrapped optimizer itself.

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> optimizer = keras_regkit.DecoupledWeightDecay(
    ...     keras.optimizers.SGD(learning_rate=0.5), weight_decay=0.1, l1=0.2)
    >>> kernel = keras.Variable(np.array([[1.0, 0.05]]), name="kernel")
    >>> _ = optimizer.apply_gradients([(np.zeros((1, 2)), kernel)])
    >>> # decay: w * (1 - 0.5 * 0.1); then prox: sign(w) * max(|w| - 0.5 * 0.2, 0)
    >>> [round(float(v), 6) for v in kernel.numpy()[0]]  # [0.95 - 0.1, 0]
    [0.85, 0.0]

    The default mask on a `MultiHeadAttention`: the kernels decay, the
    biases (2-D for query, key and value) do not.

    >>> attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    >>> attention.build((1, 3, 8), (1, 3, 8))
    >>> variables = attention.trainable_variables
    >>> for v in variables:
    ...     _ = v.assign(np.ones(v.shape))
    >>> optimizer = keras_regkit.DecoupledWeightDecay(keras.optimizers.SGD(0.1), 0.5)
    >>> _ = optimizer.apply_gradients([(np.zeros(v.shape), v) for v in variables])
    >>> [(v.path, tuple(v.shape), round(float(v.numpy().flat[0]), 6))  # 1 - 0.1 * 0.5, or 1
    ...  for v in variables if v.path.startswith("mha/query/")]
    [('mha/query/kernel', (8, 2, 4), 0.95), ('mha/query/bias', (2, 4), 1.0)]

    The group-L1 step takes its units from the variable's `GroupLasso`: with
    `axis=1` a unit is a row. The second row's norm, `0.5`, is below the
    threshold `lr_t * group_l1 = 1`, so it becomes exactly zero; the first,
    of norm 5, shrinks by `1 - 1 / 5` (by columns, neither would be zero).

    >>> optimizer = keras_regkit.DecoupledWeightDecay(
    ...     keras.optimizers.SGD(learning_rate=1.0), weight_decay=0.0, group_l1=1.0)
    >>> kernel = keras.Variable(np.array([[3.0, 4.0], [0.3, 0.4]]), name="kernel")
    >>> kernel.regularizer = keras_regkit.GroupLasso(0.0, axis=1)
    >>> _ = optimizer.apply_gradients([(np.zeros((2, 2)), kernel)])
    >>> np.round(kernel.numpy(), 6).tolist()  # row 0: (3, 4) * (1 - 1 / 5)
    [[2.4, 3.2], [0.0, 0.0]]

    Reference: Loshchilov & Hutter (2019), "Decoupled weight decay
    regularization" (Algorithm 2; Appendix B.1 for the normalized decay);
    Li, Grandvalet & Davoine (2018), "Explicit inductive bias for transfer
    learning with convolutional networks" (L2-SP); Parikh & Boyd (2014),
    "Proximal algorithms" (soft thresholds).
    """

    def __init__(
        self,
        optimizer,
        weight_decay,
        *,
        decay_scaling="learning_rate",
        exclude=None,
        include=None,
        l1=0.0,
        group_l1=0.0,
        toward="zero",
        name=None,
        **kwargs,
    ):
        # Validate everything first: a refused call changes nothing.
        _wrapping.check_optimizer(optimizer)
        if not isinstance(weight_decay, keras.optimizers.schedules.LearningRateSchedule):
            weight_decay = _validation.non_negative(weight_decay, "weight_decay")
        decay_scaling = _validation.one_of(decay_scaling, "decay_scaling", DECAY_SCALINGS)
        toward = _validation.one_of(toward, "toward", TOWARDS)
        l1 = _validation.non_negative(l1, "l1")
        group_l1 = _validation.non_negative(group_l1, "group_l1")
        exclude = _validation.patterns(exclude, "exclude")
        if include is not None:
            include = _validation.patterns(include, "include")
            if not include:
                raise ValueError(
                    "`include` must hold at least one pattern; use `include=None` "
                    "for the default (kernels and embeddings; not biases, "
                    "normalization parameters or other 0-D/1-D variables). "
                    f"Received: include={include!r}"
                )
        forwarded = _wrapping.check_forwarded(kwargs, _wrapping.chain(optimizer)[-1])

        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.weight_decay = weight_decay
        self.decay_scaling = decay_scaling
        self.exclude = exclude
        self.include = include
        self.l1 = l1
        self.group_l1 = group_l1
        self.toward = toward
        stepping = _wrapping.chain(optimizer)[-1]
        for key, value in forwarded.items():
            setattr(stepping, key, value)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Not used here: pass `exclude=` patterns, which are saved with the model."""
        raise ValueError(
            "`DecoupledWeightDecay` selects the variables to decay with its "
            "`exclude=`/`include=` glob patterns on `variable.path` (saved in "
            "its config), not with `exclude_from_weight_decay()`. "
            f"Received: var_list={var_list!r}, var_names={var_names!r}"
        )

    # --- build and apply ------------------------------------------------------------

    def build(self, var_list):
        # Eagerly, even when the first `apply` is being traced: the references
        # and `lr_0` are read from current values, and an assignment traced
        # into a `tf.function` on its variable-creating first call never runs.
        with _distribute.outside_functions():
            self._build(list(var_list))

    def _build(self, var_list):
        mask = _decay_mask.decay_mask(var_list, self.include, self.exclude)
        initial_learning_rate = None
        if self.decay_scaling == "schedule":
            initial_learning_rate = _wrapping.initial_learning_rate(self.inner_optimizer)
        _decay_mask.warn_about_mask(
            var_list,
            mask,
            include=self.include,
            exclude=self.exclude,
            active=self._decays or self._thresholds,
            optimizer_name=f"DecoupledWeightDecay '{self.name}'",
        )
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._decay_mask = tuple(mask)
        if initial_learning_rate is not None:
            self._initial_lr = self.add_variable(
                shape=(), dtype="float32", name="initial_learning_rate"
            )
            self._initial_lr.assign(ops.copy(initial_learning_rate))
        toward_initial = self.toward == "initial" and self._decays
        self._decay_references = _decay_update.decay_references(
            self, var_list, [toward_initial and selected for selected in mask]
        )

    @property
    def _decays(self):
        return isinstance(
            self.weight_decay, keras.optimizers.schedules.LearningRateSchedule
        ) or self.weight_decay > 0

    @property
    def _thresholds(self):
        return self.l1 > 0 or self.group_l1 > 0

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if not grads:
            return
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer "
                    "must already be built. Call `optimizer.build(variables)` first."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        if trainable_variables is None:
            variables = _private_api.built_variables(self)
        else:
            variables = list(trainable_variables)
            _private_api.check_variables_are_known(self, variables)
        selected = [
            v
            for g, v in zip(grads, variables)
            if g is not None and self._decay_mask[_private_api.variable_index(self, v)]
        ]
        # Everything below is read before the inner step changes `iterations`.
        gate = _wrapping.update_gate(self.inner_optimizer, grads) if selected else None
        learning_rate = ops.cast(self.learning_rate, "float32") if selected else None
        # The update rule (see `_decay_update`): decay, inner step, proximal steps.
        if selected and self._decays:
            coefficient = self._coefficient(learning_rate)
            if gate is not None:
                coefficient = coefficient * gate
            references = [
                self._decay_references[_private_api.variable_index(self, v)] for v in selected
            ]
            _decay_update.apply_decay(self, selected, references, coefficient)
        self.inner_optimizer.apply(grads, trainable_variables)
        if selected and self._thresholds:
            scale = learning_rate if gate is None else learning_rate * gate
            _decay_update.apply_proximal(self, selected, self.l1, self.group_l1, scale)

    def _coefficient(self, learning_rate):
        """`c` of the decay step `w <- w - c * (w - w_ref)` at `learning_rate`."""
        strength = self.weight_decay
        if not isinstance(strength, numbers.Real):
            strength = strength(_wrapping.step_count(self.inner_optimizer))
        return _decay_update.decay_coefficient(
            self.decay_scaling, strength, learning_rate,
            self._initial_lr if self.decay_scaling == "schedule" else None,
        )

    def decay_coefficient(self):
        """The `c` of the next step's decay `w <- w - c * (w - w_ref)`, as a float.

        `0.0` when nothing decays. Read by `keras_regkit.RegularizationMonitor`.
        """
        if not self._decays or not self.built:
            return 0.0
        learning_rate = ops.cast(self.learning_rate, "float32")
        return float(ops.convert_to_numpy(self._coefficient(learning_rate)))

    def decays(self, variable):
        """Whether `variable` (one the optimizer was built with) is in the decay mask."""
        if not self.built:
            return False
        try:
            index = _private_api.variable_index(self, variable)
        except (KeyError, ValueError):
            return False
        return bool(self._decay_mask[index])

    def decay_reference(self, variable):
        """What `variable` decays toward: `None` for zero, else its `toward="initial"` copy."""
        if not self.decays(variable):
            return None
        return self._decay_references[_private_api.variable_index(self, variable)]

    # --- serialization --------------------------------------------------------------

    def get_config(self):
        weight_decay = self.weight_decay
        if isinstance(weight_decay, keras.optimizers.schedules.LearningRateSchedule):
            weight_decay = keras.saving.serialize_keras_object(weight_decay)
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "weight_decay": weight_decay,
            "decay_scaling": self.decay_scaling,
            "exclude": list(self.exclude),
            "include": None if self.include is None else list(self.include),
            "l1": self.l1,
            "group_l1": self.group_l1,
            "toward": self.toward,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        if isinstance(config.get("weight_decay"), dict):
            config["weight_decay"] = keras.saving.deserialize_keras_object(
                config["weight_decay"], custom_objects=custom_objects
            )
        return cls(optimizer, **config)
