"""Weight constraints: exact max-norm projection."""

import numbers

import keras
from keras import ops

from keras_regkit import _validation


def _axis(value):
    """`"auto"`, an int, or a non-empty list of distinct ints (tuples -> lists)."""
    if isinstance(value, str):
        return _validation.one_of(value, "axis", ("auto",))
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        items = list(value)
        if items and all(
            isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in items
        ):
            items = [int(a) for a in items]
            if len(set(items)) == len(items):
                return items
            raise ValueError(
                f"`axis` must not repeat an axis. Received: axis={value!r}"
            )
    raise TypeError(
        '`axis` must be "auto", an int, or a non-empty list of ints. '
        f"Received: axis={value!r} of type {type(value).__name__}"
    )


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
    last or first: Keras stores kernels with the output channels last). For
    a 1-D variable it bounds each element (`|w| <= max_value`). Transposed
    convolutions keep output channels in the second-to-last axis: pass
    `axis` explicitly there.

    Args:
        max_value: Positive float, the radius `c` of the ball. Defaults to
            `3.0`.
        axis: `"auto"` (default), an int, or a list of ints: the axes that
            form one vector. Negative values count from the end. An axis out
            of range for the weight raises `ValueError` when applied.

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
        self.axis = _axis(axis)

    def _axes(self, rank):
        if self.axis == "auto":
            return list(range(rank - 1))
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        for a in axes:
            if not -rank <= a < rank:
                raise ValueError(
                    f"`axis` is out of range for a weight of rank {rank}. "
                    f"Received: axis={self.axis!r}"
                )
        return [a % rank for a in axes]

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        axes = self._axes(len(w.shape))
        squares = ops.square(w)
        if axes:
            squares = ops.sum(squares, axis=axes, keepdims=True)
        norms = ops.sqrt(squares)
        max_value = ops.cast(self.max_value, w.dtype)
        # `maximum` keeps the unused branch finite at norm 0.
        scaled = w * (max_value / ops.maximum(norms, max_value))
        return ops.where(norms > max_value, scaled, w)

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}
