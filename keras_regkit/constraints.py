"""Weight constraints: exact max-norm projection."""

import keras
from keras import ops

from keras_regkit import _units
from keras_regkit import _validation


@keras.saving.register_keras_serializable(package="keras_regkit")
class MaxNorm(keras.constraints.Constraint):
    """Max-norm constraint: exact projection of each unit's fan-in onto a ball.

    After each optimizer step, every unit's incoming weight vector `w` is
    projected onto `||w||_2 <= max_value` (Srivastava et al., 2014):

        w <- w * (max_value / ||w||)   if ||w|| > max_value,   else w unchanged

    Weights already inside the ball are returned bit-identical. Keras's own
    `keras.constraints.MaxNorm` instead multiplies every vector by
    `min(||w||, c) / (||w|| + epsilon)`, which shrinks weights inside the ball
    slightly at every step, and its default `axis=0` only reduces over the
    first axis: for a `Conv2D` kernel `(rows, cols, in, out)` that bounds
    each `(col, in, out)` slice separately rather than each filter.

    `axis="auto"` reduces over all axes but the last, which is the fan-in
    of one output unit for `Dense` and `Conv1D/2D/3D` kernels (channels
    last or first: Keras stores kernels with the output channels last), a
    `SeparableConv*D` pointwise kernel, and (one column, i.e. one embedding
    dimension over the vocabulary) an `Embedding` matrix. For a 1-D
    variable it bounds each element (`|w| <= max_value`).

    Other layers lay their kernels out differently: a transposed
    convolution `(..., out, in)` keeps output channels in the second-to-last
    axis, a depthwise kernel `(..., in, multiplier)` has one filter per
    (channel, multiplier) pair, an `EinsumDense` kernel's output axes follow
    its `equation`. Attached with `keras_regkit.constrain(model, ...)`, an
    `axis="auto"` constraint gets the right unit for such layers
    automatically (the variable's constraint is a copy with that explicit
    `axis`). A bare `MaxNorm()` passed to a layer constructor
    (`kernel_constraint=...`) does not see the layer and keeps the rule
    above: pass `axis` explicitly there (`[0, 1, 3]` for a
    `Conv2DTranspose`, `[0, 1]` for a `DepthwiseConv2D`).

    Args:
        max_value: Positive float, the radius `c` of the ball. Defaults to
            `3.0`.
        axis: `"auto"` (default), an int, or a list of ints: the axes that
            form one vector (reduced over). Negative values count from the
            end. An axis out of range for the weight raises `ValueError`
            when applied.

    Example:

    >>> import numpy as np, keras_regkit
    >>> constraint = keras_regkit.MaxNorm(max_value=2.0)
    >>> w = np.array([[3.0, 0.6], [4.0, 0.8]])  # column norms 5 and 1
    >>> np.asarray(constraint(w)).tolist()  # first scaled to norm 2, second kept
    [[1.2, 0.6], [1.6, 0.8]]

    Reference: Srivastava et al. (2014), "Dropout: a simple way to prevent
    neural networks from overfitting", JMLR 15, section 5.1.
    """

    def __init__(self, max_value=3.0, axis="auto"):
        self.max_value = _validation.positive(max_value, "max_value")
        self.axis = _validation.axis(axis)

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        axes = _units.reduction_axes(self.axis, len(w.shape))
        norms = ops.sqrt(_units.squared_norms(w, axes, keepdims=True))
        max_value = ops.cast(self.max_value, w.dtype)
        # `maximum` keeps the unused branch finite at norm 0.
        scaled = w * (max_value / ops.maximum(norms, max_value))
        return ops.where(norms > max_value, scaled, w)

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}
