"""What one "unit" of a weight is: the axes of one output unit's fan-in vector.

`MaxNorm` bounds the norm of each unit, `GroupLasso` penalizes it as one
group, and `sparsity` counts the units that are all zero. Which axes form a
unit depends on how the layer lays out its weight:

| layer, variable | kernel shape | axes of one unit |
|---|---|---|
| `Dense`, `ConvND`, `SeparableConvND.pointwise_kernel`, anything else | `(..., out)` | all but the last |
| `DepthwiseConv1D/2D.kernel`, `SeparableConv1D/2D.depthwise_kernel` | `(*spatial, in, multiplier)` | the spatial ones |
| `Conv1D/2D/3DTranspose.kernel` | `(*spatial, out, in)` | all but the second-to-last |
| `EinsumDense.kernel` | letters of `equation` | those absent from the output spec |
| `Embedding.embeddings` | `(vocabulary, dim)` | all but the last (one column) |

A 1-D variable (a bias) has each element as its own unit (no axes).

Pure functions: nothing here changes a layer or a variable.
"""

import keras
from keras import ops

from keras_regkit import _layer_tree
from keras_regkit import _weights

# Public Keras classes; subclasses inherit their layout.
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
# Attributes compared by identity with the variable to learn its role.
_ROLES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def unit_axes(layer, variable):
    """The sorted axes of `variable` that form one unit vector of `layer`.

    These are the axes to reduce over for one output unit's fan-in (the
    `axis` to give `MaxNorm` or `GroupLasso`); every index of the other axes
    is one unit. See the module docstring for the rule of each layer kind.
    The variable's role (`kernel`, `depthwise_kernel`, ...) is found by
    identity with the layer's attributes, else by `variable.name`. If the
    variable belongs to a sub-layer of `layer` (a wrapper such as
    `TimeDistributed` or `Bidirectional`, or a composite layer such as
    `MultiHeadAttention`), the innermost layer holding it decides. Any
    other weight, or a shape that does not fit the layer's layout, gets
    the default: all axes but the last (`[]` for rank 0 and 1).

    Args:
        layer: A `keras.layers.Layer` (a model included).
        variable: A variable of `layer` (anything with a `shape`).

    Returns:
        A sorted list of non-negative ints.

    Example:

    >>> import keras
    >>> from keras_regkit._units import unit_axes
    >>> depthwise = keras.layers.DepthwiseConv2D(3)
    >>> depthwise.build((None, 8, 8, 4))
    >>> tuple(depthwise.kernel.shape)  # (rows, cols, in, multiplier)
    (3, 3, 4, 1)
    >>> unit_axes(depthwise, depthwise.kernel)  # one filter per channel
    [0, 1]
    >>> transposed = keras.layers.Conv2DTranspose(5, 3)
    >>> transposed.build((None, 8, 8, 4))
    >>> tuple(transposed.kernel.shape)  # (rows, cols, out, in)
    (3, 3, 5, 4)
    >>> unit_axes(transposed, transposed.kernel)
    [0, 1, 3]
    >>> query = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3))
    >>> query.build((None, 5, 6))
    >>> unit_axes(query, query.kernel)  # kernel "cde": reduce over c
    [0]
    >>> dense = keras.layers.Dense(3)
    >>> dense.build((None, 6))
    >>> unit_axes(dense, dense.kernel), unit_axes(dense, dense.bias)
    ([0], [])
    """
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`layer` must be a keras.layers.Layer. "
            f"Received: layer={layer!r} of type {type(layer).__name__}"
        )
    shape = getattr(variable, "shape", None)
    if shape is None:
        raise TypeError(
            "`variable` must be a variable of `layer` (with a `shape`). "
            f"Received: variable={variable!r} of type {type(variable).__name__}"
        )
    rank = len(shape)
    # The innermost layer under `layer` (itself included) holding `variable`.
    layer = _layer_tree.variable_owners(layer).get(id(variable), layer)
    role = _weights.weight_name(layer, variable, _ROLES)
    if rank >= 3 and (
        (isinstance(layer, _DEPTHWISE) and role == "kernel")
        or (isinstance(layer, _SEPARABLE) and role == "depthwise_kernel")
    ):
        return list(range(rank - 2))
    if rank >= 2 and isinstance(layer, _TRANSPOSED) and role == "kernel":
        return [a for a in range(rank) if a != rank - 2]
    if isinstance(layer, keras.layers.EinsumDense) and role == "kernel":
        axes = _contracted_axes(getattr(layer, "equation", None), rank)
        if axes is not None:
            return axes
    return list(range(rank - 1))


def reduction_axes(axis, rank):
    """The sorted non-negative axes that `axis` names for a weight of `rank`.

    `axis` is a value checked by `_validation.axis`: `"auto"` (all axes but
    the last), an int or a list of ints (negative ones count from the end).

    Raises:
        ValueError: an axis out of range for `rank`.

    >>> reduction_axes("auto", 4), reduction_axes(-2, 4), reduction_axes([3, 0], 4)
    ([0, 1, 2], [2], [0, 3])
    """
    if axis == "auto":
        return list(range(rank - 1))
    axes = axis if isinstance(axis, list) else [axis]
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(
                f"`axis` is out of range for a weight of rank {rank}. "
                f"Received: axis={axis!r}"
            )
    return sorted(a % rank for a in axes)


def _contracted_axes(equation, rank):
    """Kernel axes whose letter is not in the output spec; `None` if unparsable."""
    if not isinstance(equation, str) or equation.count("->") != 1:
        return None
    inputs, output = equation.replace(" ", "").split("->")
    specs = inputs.split(",")
    if len(specs) != 2:
        return None
    kernel_spec = specs[1]
    if len(kernel_spec) != rank or not kernel_spec.isalpha():
        return None
    return [i for i, letter in enumerate(kernel_spec) if letter not in output]


def squared_norms(w, axes, keepdims=False):
    """`||w_j||^2` of each unit `w_j` spanning `axes` (a list from `reduction_axes`).

    With `axes=[]` each entry is its own unit (`w**2`). The one home of the
    per-unit norm that `MaxNorm`, `GroupLasso`, the group-L1 prox and the
    monitor's saturation share; in `keras.ops`, so it runs inside `tf.function`.

    >>> import numpy as np
    >>> from keras import ops
    >>> ops.convert_to_numpy(squared_norms(np.array([[3.0, 1.0], [4.0, 0.0]]), [0])).tolist()
    [25.0, 1.0]
    """
    squares = ops.square(ops.convert_to_tensor(w))
    if not axes:
        return squares
    return ops.sum(squares, axis=tuple(axes), keepdims=keepdims)
