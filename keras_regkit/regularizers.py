"""Weight penalties: L1, L2, elastic net (naive and Zou-Hastie corrected), group lasso,
orthogonality.

Every class is a `keras.regularizers.Regularizer`, so it goes wherever Keras
takes one (`kernel_regularizer=...`), serializes under `keras_regkit>`, and
adds `penalty(W)` to the training loss through `model.losses`.
"""

import keras
from keras import ops

from keras_regkit import _units
from keras_regkit import _validation
from keras_regkit._deprecation import renamed_keyword
from keras_regkit._elastic_net import CorrectedElasticNet
from keras_regkit._elastic_net import ElasticNet
from keras_regkit._elastic_net import ElasticNetCorrection
from keras_regkit._elastic_net import apply_elastic_net_correction
from keras_regkit._orthogonal import Orthogonal

__all__ = [
    "CorrectedElasticNet",
    "ElasticNet",
    "ElasticNetCorrection",
    "GroupLasso",
    "L1",
    "L2",
    "Orthogonal",
    "apply_elastic_net_correction",
]


@keras.saving.register_keras_serializable(package="keras_regkit")
class L1(keras.regularizers.Regularizer):
    """L1 penalty (lasso): pushes individual weights to exactly zero.

    The same penalty as `keras.regularizers.L1`, so the two are
    interchangeable; this one validates its argument and keeps it a plain
    float in `get_config`:

        penalty = l1 * sum(|w|)

    The gradient is `l1 * sign(w)`, which is `0` at `w == 0`.

    Args:
        l1: Non-negative float, the penalty coefficient. Defaults to `0.01`.

    Example:

    >>> import numpy as np, keras_regkit
    >>> reg = keras_regkit.L1(l1=0.1)
    >>> float(reg(np.array([[1.0, -2.0], [0.0, 3.0]])))  # 0.1 * (1 + 2 + 0 + 3)
    0.6

    Reference: Tibshirani (1996), "Regression shrinkage and selection via
    the lasso".
    """

    def __init__(self, l1=0.01):
        self.l1 = _validation.non_negative(l1, "l1")

    def __call__(self, x):
        return ops.cast(self.l1, x.dtype) * ops.sum(ops.absolute(x))

    def get_config(self):
        return {"l1": self.l1}


@keras.saving.register_keras_serializable(package="keras_regkit")
class L2(keras.regularizers.Regularizer):
    """L2 penalty (ridge, "weight decay" in the loss): shrinks all weights.

    The same penalty as `keras.regularizers.L2` (no factor 1/2), so the two
    are interchangeable:

        penalty = l2 * sum(w ** 2),    gradient = 2 * l2 * w

    Textbooks write the cost as `J = 1/m sum_i L_i + λ/(2m) ||W||_F^2`; the
    matching coefficient is `L2.from_textbook(λ, m)`, i.e.
    `l2 = λ / (2 * m)` (with the loss averaged over the `m` examples, as
    Keras does).

    Relation to weight decay: with plain SGD (no momentum) at learning rate
    `lr`, training on `loss + l2 * sum(w**2)` steps
    `w <- w - lr * (g + 2 * l2 * w)`. Keras's optimizers with
    `weight_decay=wd` first apply `w <- w - lr * wd * w` and then the
    gradient step `w <- w - lr * g`, with `g` computed before either. The two
    give the same trajectory when `weight_decay = 2 * l2`. With momentum or
    adaptive optimizers (Adam) the two differ: the penalty's gradient goes
    through the moment estimates, decoupled decay does not (Loshchilov &
    Hutter, 2019).

    Args:
        l2: Non-negative float, the penalty coefficient. Defaults to `0.01`.

    Example:

    >>> import numpy as np, keras_regkit
    >>> reg = keras_regkit.L2(l2=0.1)
    >>> float(reg(np.array([[1.0, -2.0], [0.0, 3.0]])))  # 0.1 * (1 + 4 + 0 + 9)
    1.4
    >>> keras_regkit.L2.from_textbook(strength=5.0, num_examples=50000).l2
    5e-05

    Reference: Krogh & Hertz (1992), "A simple weight decay can improve
    generalization"; Loshchilov & Hutter (2019), "Decoupled weight decay
    regularization".
    """

    def __init__(self, l2=0.01):
        self.l2 = _validation.non_negative(l2, "l2")

    @classmethod
    @renamed_keyword("lam", "strength", reason="the textbook's λ")
    def from_textbook(cls, strength, num_examples):
        """Returns `L2(l2=strength / (2 * num_examples))`, the textbook `λ/(2m)`.

        Args:
            strength: The textbook's regularization parameter `λ` (>= 0). Its
                old name `lam=` still works, with a `DeprecationWarning`.
            num_examples: The number of training examples `m` the loss is
                averaged over.
        """
        strength = _validation.non_negative(strength, "strength")
        num_examples = _validation.positive_int(num_examples, "num_examples")
        return cls(l2=strength / (2 * num_examples))

    def __call__(self, x):
        return ops.cast(self.l2, x.dtype) * ops.sum(ops.square(x))

    def get_config(self):
        return {"l2": self.l2}


@keras.saving.register_keras_serializable(package="keras_regkit")
class GroupLasso(keras.regularizers.Regularizer):
    """Group-lasso penalty that drives whole units to exactly zero.

    Each group is one output unit's fan-in vector `W_j`: the slice of `W`
    over the axes `axis` at one index `j` of the other axes,

        penalty = factor * sum_j ||W_j||_2

    With `axis="auto"` (default) a group is all axes but the last, so one
    column of a `Dense` kernel or one filter of a `ConvND` kernel
    (`W_j = W[..., j]`). Transposed-convolution, depthwise and `EinsumDense`
    kernels lay their units out differently: `keras_regkit.regularize(model,
    ...)` gives an `axis="auto"` penalty the right axes for such layers (a
    copy with an explicit `axis`); in a layer constructor, pass `axis`
    yourself (`[0, 1, 3]` for a `Conv2DTranspose` kernel, `[0, 1]` for a
    `DepthwiseConv2D` one).

    A 1-D variable (a bias) with `axis="auto"` has each element as its own
    group, so the penalty is `factor * sum(|w|)`; a scalar gives
    `factor * |w|`. The gradient `factor * W_j / ||W_j||` is finite
    everywhere: at an all-zero group it is `0` (a subgradient), computed
    without adding an epsilon, so the value stays exact.

    Args:
        factor: Non-negative float. Defaults to `0.01`.
        axis: `"auto"` (default), an int, or a list of ints: the axes that
            form one group (reduced over), as in `MaxNorm`. Negative values
            count from the end. An axis out of range for the weight raises
            `ValueError` when applied.

    Example:

    >>> import numpy as np, keras_regkit
    >>> reg = keras_regkit.GroupLasso(factor=0.1)
    >>> float(reg(np.array([[3.0, 0.0], [4.0, 0.0]])))  # 0.1 * (5 + 0)
    0.5
    >>> rows = keras_regkit.GroupLasso(factor=0.1, axis=1)
    >>> float(rows(np.array([[3.0, 4.0], [0.0, 0.0]])))  # 0.1 * (5 + 0)
    0.5

    Reference: Yuan & Lin (2006), "Model selection and estimation in
    regression with grouped variables"; Scardapane et al. (2017), "Group
    sparse regularization for deep neural networks".
    """

    def __init__(self, factor=0.01, axis="auto"):
        self.factor = _validation.non_negative(factor, "factor")
        self.axis = _validation.axis(axis)

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        axes = _units.reduction_axes(self.axis, len(x.shape))
        squares = _units.squared_norms(x, axes)
        # Double `where`: sqrt is only evaluated (and differentiated) where
        # the group is non-zero, so an all-zero group has gradient 0, not NaN.
        nonzero = squares > 0
        safe = ops.where(nonzero, squares, ops.ones_like(squares))
        norms = ops.where(nonzero, ops.sqrt(safe), ops.zeros_like(squares))
        return ops.cast(self.factor, x.dtype) * ops.sum(norms)

    def get_config(self):
        return {"factor": self.factor, "axis": self.axis}
