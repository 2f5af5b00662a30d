"""The elastic net: naive (L1 + L2) and corrected (Zou & Hastie 2005).

`ElasticNet` and `CorrectedElasticNet` are penalties; the correction that
turns the naive solution into Zou & Hastie's estimator is a step after
training (`apply_elastic_net_correction`, or the `ElasticNetCorrection`
callback). Their public home is `keras_regkit.regularizers` (and the
package itself).
"""

import warnings

import keras
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _validation


@keras.saving.register_keras_serializable(package="keras_regkit")
class ElasticNet(keras.regularizers.Regularizer):
    """Naive elastic net: L1 and L2 together (sparse, but stable under correlation).

        penalty = l1 * sum(|w|) + l2 * sum(w ** 2)

    scikit-learn writes the same penalty as
    `alpha * l1_ratio * ||w||_1 + 0.5 * alpha * (1 - l1_ratio) * ||w||^2`;
    `ElasticNet.from_mix(alpha, l1_ratio)` builds it from those two numbers
    (`l1 = alpha * l1_ratio`, `l2 = 0.5 * alpha * (1 - l1_ratio)`). Note that
    scikit-learn also halves its squared-error term (see
    `CorrectedElasticNet` for the exact mapping to a Keras `"mse"` loss).

    Args:
        l1: Non-negative float, the L1 coefficient. Defaults to `0.01`.
        l2: Non-negative float, the L2 coefficient. Defaults to `0.01`.

    Example:

    >>> import numpy as np, keras_regkit
    >>> reg = keras_regkit.ElasticNet(l1=0.1, l2=0.5)
    >>> float(reg(np.array([3.0, -4.0])))  # 0.1 * 7 + 0.5 * 25
    13.2
    >>> mixed = keras_regkit.ElasticNet.from_mix(alpha=0.2, l1_ratio=0.25)
    >>> mixed.l1, mixed.l2
    (0.05, 0.075)

    Reference: Zou & Hastie (2005), "Regularization and variable selection
    via the elastic net", JRSS B 67(2).
    """

    def __init__(self, l1=0.01, l2=0.01):
        self.l1 = _validation.non_negative(l1, "l1")
        self.l2 = _validation.non_negative(l2, "l2")

    @classmethod
    def from_mix(cls, alpha, l1_ratio=0.5):
        """Builds the penalty from scikit-learn's `alpha` and `l1_ratio`."""
        alpha = _validation.non_negative(alpha, "alpha")
        l1_ratio = _validation.fraction(l1_ratio, "l1_ratio")
        return cls(l1=alpha * l1_ratio, l2=0.5 * alpha * (1.0 - l1_ratio))

    def __call__(self, x):
        return ops.cast(self.l1, x.dtype) * ops.sum(ops.absolute(x)) + ops.cast(
            self.l2, x.dtype
        ) * ops.sum(ops.square(x))

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


@keras.saving.register_keras_serializable(package="keras_regkit")
class CorrectedElasticNet(ElasticNet):
    """Zou & Hastie's elastic net: the naive penalty, then weights scaled by `(1 + l2)`.

    The naive elastic net shrinks twice (once by the L2 term, once by the
    L1 term) and so biases the weights toward zero. Zou & Hastie's estimator
    undoes the L2 shrinkage by rescaling the naive solution:

        train with  l1 * sum(|w|) + l2 * sum(w ** 2),  then  w <- (1 + l2) * w

    Training is identical to `ElasticNet`; the rescaling is done by
    `apply_elastic_net_correction(model)` or the `ElasticNetCorrection`
    callback at the end of `fit`. `correction_applied` records that it was
    done, is saved in the config, and makes the rescaling happen once only,
    also after a `.keras` save/load.

    Convention for `l2` (= Zou & Hastie's lambda_2): the data term is the
    mean over the `n` examples of the squared error, as Keras's `"mse"`
    (`1/n sum (y - y_hat)^2`, no 1/2), and the inputs are standardized to
    zero mean and unit variance. Dividing `X` and `y` by `sqrt(n)` turns
    that loss into the paper's `||y - X b||^2` with unit-norm columns, so
    `l2` is exactly their lambda_2 and the factor is `1 + l2`. Under another
    loss scaling the factor changes (e.g. a summed loss needs `1 + l2 / n`).

    scikit-learn's `ElasticNet(alpha, l1_ratio)` minimizes
    `1/(2n) ||y - Xw||^2 + alpha * l1_ratio * ||w||_1
    + 0.5 * alpha * (1 - l1_ratio) * ||w||^2`, which is half of the Keras
    objective with `CorrectedElasticNet.from_mix(2 * alpha, l1_ratio)`
    (`l1 = 2 * alpha * l1_ratio`, `l2 = alpha * (1 - l1_ratio)`). That model
    trained with `loss="mse"` reaches scikit-learn's (naive) `coef_`, and the
    correction multiplies it by `1 + alpha * (1 - l1_ratio)`, Zou & Hastie's
    factor in scikit-learn's scaling.

    Args:
        l1: Non-negative float, the L1 coefficient. Defaults to `0.01`.
        l2: Non-negative float, the L2 coefficient (lambda_2). Defaults to
            `0.01`.
        correction_applied: Bool, whether the weights carrying this
            regularizer were already rescaled. Set by
            `apply_elastic_net_correction`; leave it `False` when creating one.

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> reg = keras_regkit.CorrectedElasticNet(l1=0.1, l2=0.5)
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, use_bias=False, kernel_initializer="ones", kernel_regularizer=reg,
    ...     name="dense")], name="model")
    >>> keras_regkit.apply_elastic_net_correction(model)
    ['model/dense/kernel']
    >>> model.layers[0].kernel.numpy().ravel().tolist()  # 1 * (1 + 0.5)
    [1.5, 1.5]
    >>> reg.correction_applied
    True
    >>> keras_regkit.apply_elastic_net_correction(model)  # once only
    []

    Reference: Zou & Hastie (2005), "Regularization and variable selection
    via the elastic net", JRSS B 67(2), section 3.
    """

    def __init__(self, l1=0.01, l2=0.01, correction_applied=False):
        super().__init__(l1=l1, l2=l2)
        _validation.boolean(correction_applied, "correction_applied")
        self.correction_applied = correction_applied

    def get_config(self):
        config = super().get_config()
        config["correction_applied"] = self.correction_applied
        return config


def _corrected_variables(model):
    """`(variable, regularizer)` pairs of `model`, each variable once."""
    pairs, seen = [], set()
    for variable in model.weights:  # includes nested models' and frozen weights
        regularizer = getattr(variable, "regularizer", None)
        if isinstance(regularizer, CorrectedElasticNet) and id(variable) not in seen:
            seen.add(id(variable))
            pairs.append((variable, regularizer))
    return pairs


def _rescale(pairs, apply):
    """Scales each variable by `(1 + l2)` (or its inverse) and flips the flags."""
    for variable, regularizer in pairs:
        factor = 1.0 + regularizer.l2
        if not apply:
            factor = 1.0 / factor
        variable.assign(ops.multiply(variable, ops.cast(factor, variable.dtype)))
    for regularizer in {id(r): r for _, r in pairs}.values():
        regularizer.correction_applied = apply
    return [variable.path for variable, _ in pairs]


def apply_elastic_net_correction(model):
    """Rescales the weights regularized by `CorrectedElasticNet` by `(1 + l2)`, once.

    Finds every variable of `model` (nested models included, frozen ones
    too) whose `variable.regularizer` is a `CorrectedElasticNet` with
    `correction_applied=False`, multiplies it by `1 + l2`, and then sets
    `correction_applied=True` on those regularizers. A second call, also
    after a `.keras` save/load (the flag is in the layer's config), finds
    nothing to do. A variable shared by several layers is rescaled once.

    Args:
        model: A built `keras.Model`.

    Returns:
        The paths (`variable.path`) of the variables rescaled, in
        `model.weights` order; `[]` if none needed it.

    Example: see `CorrectedElasticNet`.
    """
    _layer_tree.check_model(model)
    pairs = _corrected_variables(model)
    if not pairs:
        warnings.warn(
            f"`apply_elastic_net_correction`: model {model.name!r} has no "
            "variable regularized by `CorrectedElasticNet`; nothing to do.",
            stacklevel=2,
        )
        return []
    return _rescale([(v, r) for v, r in pairs if not r.correction_applied], True)


@keras.saving.register_keras_serializable(package="keras_regkit")
class ElasticNetCorrection(keras.callbacks.Callback):
    """Callback that applies Zou & Hastie's `(1 + l2)` rescaling when `fit` ends.

    At the end of training it calls `apply_elastic_net_correction(model)`.
    At the start of training it undoes an earlier correction (divides by
    `1 + l2` and clears `correction_applied`), so a second `fit`, or
    fine-tuning a saved corrected model, continues from the naive weights
    the penalty was trained for and is corrected again at its end. Without
    this callback, further training of corrected weights is left as is.

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_regularizer=keras_regkit.CorrectedElasticNet(0.01, 0.1))])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0,
    ...                     callbacks=[keras_regkit.ElasticNetCorrection()])
    >>> model.layers[0].kernel_regularizer.correction_applied
    True

    Reference: Zou & Hastie (2005), section 3.
    """

    def on_train_begin(self, logs=None):
        pairs = _corrected_variables(self.model)
        _rescale([(v, r) for v, r in pairs if r.correction_applied], False)

    def on_train_end(self, logs=None):
        apply_elastic_net_correction(self.model)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Their public home is `keras_regkit.regularizers`: saved configs name that
# module, as they did before these classes moved here.
for _public in (ElasticNet, CorrectedElasticNet, ElasticNetCorrection,
                apply_elastic_net_correction):
    _public.__module__ = "keras_regkit.regularizers"
del _public
