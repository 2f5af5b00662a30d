"""The orthogonality penalty, for kernels of any rank (public home: `keras_regkit.regularizers`)."""

import math

import keras
from keras import ops

from keras_regkit import _validation

MODES = ("auto", "columns", "rows")


@keras.saving.register_keras_serializable(package="keras_regkit")
class Orthogonal(keras.regularizers.Regularizer):
    r"""Soft orthogonality penalty on a kernel of any rank (Dense, ConvND, EinsumDense).

    Keras's `OrthogonalRegularizer` refuses kernels of rank other than 2. Here
    the kernel is first reshaped to a matrix `W` of shape `(fan_in, units)`:
    all axes but the last are the fan-in (`kh * kw * c_in` for a `Conv2D`),
    the last axis the output units. Then

        penalty = factor * ||W^T W - I||_F^2          (mode="columns")
        penalty = factor * ||W W^T - I||_F^2          (mode="rows")

    `"columns"` asks the units' fan-in vectors to be orthonormal. A layer with
    more units than fan-in cannot have that (`W^T W` has rank at most
    `fan_in`, so it is never `I`): `"rows"` asks for orthonormal rows instead,
    and `"auto"` (the default) takes whichever Gram matrix is the smaller
    (`"columns"` when `units <= fan_in`). With `off_diagonal=True` only the
    off-diagonal entries count (BigGAN's variant, Brock et al. 2019): the
    units may have any norm, only their directions are pushed apart.

    The gradient of the penalty is `4 * factor * W (W^T W - I)` (columns) or
    `4 * factor * (W W^T - I) W` (rows), finite everywhere (zero kernels
    included).

    Args:
        factor: Non-negative float. Defaults to `0.01`.
        mode: `"auto"`, `"columns"` or `"rows"` (see above). Defaults to
            `"auto"`.
        off_diagonal: Whether to penalize only the off-diagonal entries of the
            Gram matrix. Defaults to `False`.

    Example:

    >>> import numpy as np, keras_regkit
    >>> reg = keras_regkit.Orthogonal(factor=0.1)
    >>> w = np.array([[1.0, 0.0], [0.0, 2.0]])  # W^T W = diag(1, 4)
    >>> float(reg(w))  # 0.1 * (1 - 1)^2 + 0.1 * (4 - 1)^2
    0.9
    >>> # A Conv2D kernel: W is 18 x 4, W^T W is 18 everywhere.
    >>> round(float(reg(np.ones((3, 3, 2, 4)))), 4)  # 0.1 * (4 * 17**2 + 12 * 18**2)
    504.4

    Reference: Brock et al. (2017), "Neural photo editing with introspective
    adversarial networks"; Bansal et al. (2018), "Can we gain more from
    orthogonality regularizations in training deep CNNs?"; Brock et al.
    (2019), "Large scale GAN training for high fidelity natural image
    synthesis" (the off-diagonal variant).
    """

    def __init__(self, factor=0.01, mode="auto", off_diagonal=False):
        self.factor = _validation.non_negative(factor, "factor")
        self.mode = _validation.one_of(mode, "mode", MODES)
        self.off_diagonal = _validation.boolean(off_diagonal, "off_diagonal")

    def __call__(self, x):
        shape = tuple(x.shape)
        if len(shape) < 2:
            raise ValueError(
                "`Orthogonal` needs a kernel of rank >= 2 (fan-in axes, then the "
                f"units). Received: a variable of shape {shape}")
        fan_in = math.prod(shape[:-1])
        units = shape[-1]
        matrix = ops.reshape(x, (fan_in, units))
        columns = self.mode == "columns" or (self.mode == "auto" and units <= fan_in)
        if columns:
            gram = ops.matmul(ops.transpose(matrix), matrix)
        else:
            gram = ops.matmul(matrix, ops.transpose(matrix))
        identity = ops.eye(ops.shape(gram)[0], dtype=gram.dtype)
        if self.off_diagonal:
            difference = gram * (1 - identity)
        else:
            difference = gram - identity
        return ops.cast(self.factor, x.dtype) * ops.sum(ops.square(difference))

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode, "off_diagonal": self.off_diagonal}
