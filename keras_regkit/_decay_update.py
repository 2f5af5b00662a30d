"""The update rule of `DecoupledWeightDecay`, in `keras.ops`.

The rule itself (the three `decay_scaling`s, the proximal steps, their order,
the unit of the group step) is documented once, in the docstring of
`keras_regkit.optimizers.DecoupledWeightDecay`; this module is its code. One
training step, for the variables in the decay mask (`_decay_mask`):

1. the decay, at the weights before the step: `decay_coefficient` gives its
   coefficient, `decay_references` the weights it pulls toward
   (`toward="initial"`), `apply_decay` runs it;
2. the wrapped optimizer's own step on the gradient (not here: `inner.apply`);
3. the proximal L1 and group-L1 steps, then the variable's constraint again:
   `apply_proximal` (the group step's unit comes from `unit_axes_of`).

`apply_decay` and `apply_proximal` run once per training step, also under
`tf.distribute` (`_distribute.update_variables`). A step that does not update
the weights (gradient accumulation, a skipped non-finite step) has a `gate`
of 0 and so changes nothing.
"""

import math

from keras import ops

from keras_regkit import _distribute
from keras_regkit import _units
from keras_regkit import _validation
from keras_regkit.constraints import MaxNorm
from keras_regkit.regularizers import GroupLasso


def decay_coefficient(decay_scaling, strength, learning_rate, initial_learning_rate=None):
    """`c` of the decay step `w <- w - c * (w - w_ref)`, a float32 tensor.

        decay_scaling="learning_rate":  c = lr_t * decay_t
        decay_scaling="schedule":       c = (lr_t / lr_0) * decay_t
        decay_scaling="none":           c = decay_t

    `strength` is `decay_t` (the decay strength at this step), `learning_rate`
    is `lr_t` (float32), `initial_learning_rate` is `lr_0`.
    """
    strength = ops.cast(strength, "float32")
    if decay_scaling == "learning_rate":
        return learning_rate * strength
    if decay_scaling == "schedule":
        return learning_rate / initial_learning_rate * strength
    return strength


def decay_references(optimizer, variables, mask):
    """`w_ref` per variable: a copy of its current value where `mask` is true
    (`toward="initial"`: `w_0`, an optimizer variable, saved with it), else
    `None` (toward zero)."""
    references = []
    for variable, selected in zip(variables, mask):
        reference = None
        if selected:
            reference = optimizer.add_variable_from_reference(
                variable, name="decay_reference"
            )
            # A copy: on JAX, assigning the array itself would share
            # (and donate twice) one buffer.
            reference.assign(ops.copy(variable))
        references.append(reference)
    return references


def apply_decay(optimizer, variables, references, coefficient):
    """Step 1 on each variable, toward its reference (`None`: toward zero)."""
    updates = [
        (variable, decay_update(reference))
        for variable, reference in zip(variables, references)
    ]
    _distribute.update_variables(optimizer, updates, (coefficient,))


def apply_proximal(optimizer, variables, l1, group_l1, learning_rate):
    """Step 3 on each variable: thresholds `learning_rate * l1` and `* group_l1`."""
    scalars = []
    if l1 > 0:
        scalars.append(learning_rate * l1)
    if group_l1 > 0:
        scalars.append(learning_rate * group_l1)
    updates = [
        (v, proximal_update(
            l1 > 0, group_l1 > 0, getattr(v, "constraint", None), unit_axes_of(v),
        ))
        for v in variables
    ]
    _distribute.update_variables(optimizer, updates, tuple(scalars))


# --- on one variable (each assigns to `variable`) --------------------------------------


def decay(variable, coefficient, reference=None):
    """`w <- w - c * w`, or `w <- w - c * (w - w0)` toward a reference `w0`."""
    coefficient = ops.cast(coefficient, variable.dtype)
    value = ops.convert_to_tensor(variable)
    if reference is None:
        delta = ops.multiply(value, coefficient)
    else:
        delta = ops.multiply(ops.subtract(value, reference), coefficient)
    variable.assign(ops.subtract(value, delta))


def soft_threshold(value, threshold):
    """`sign(w) * max(|w| - t, 0)`, computed as `w - clip(w, -t, t)`.

    The two are the same number in floating point (both subtract `t` from the
    magnitude), and the second gives an exact `0.0` wherever `|w| <= t`.
    """
    return ops.subtract(value, ops.clip(value, -threshold, threshold))


def group_soft_threshold(value, threshold, axes=None):
    """`w_j * max(0, 1 - t / ||w_j||)` for each unit vector `w_j`.

    A unit spans `axes` (default: all but the last, `w_j = w[..., j]`). A unit
    with `||w_j|| <= t` becomes exactly zero; `||w_j|| = 0` is safe. For a
    0-D or 1-D variable (or `axes=[]`) each entry is its own group.
    """
    if axes is None:
        axes = list(range(len(value.shape) - 1))
    if axes:
        norm = ops.sqrt(_units.squared_norms(value, axes, keepdims=True))
    else:  # each entry its own group; `abs` does not underflow as `sqrt(w**2)` can
        norm = ops.absolute(value)
    # `norm <= t` gives exactly 0, also when `||w_j||^2` underflows to 0 for a
    # tiny non-zero `w_j`; `t = 0` (a step that does not update) leaves `w`.
    above = norm > threshold
    safe_norm = ops.where(above, norm, ops.ones_like(norm))
    scale = ops.where(above, ops.subtract(1.0, ops.divide(threshold, safe_norm)), 0.0)
    scale = ops.where(threshold > 0, scale, ops.ones_like(scale))
    return ops.multiply(value, scale)


def unit_axes_of(variable):
    """The unit of `variable` for the group prox: the explicit `axis` of its
    `GroupLasso` regularizer or `MaxNorm` constraint (`regularize`/`constrain`
    set it from the layer, see `keras_regkit._units`), else `None` (all axes
    but the last). The optimizer sees variables, not layers.
    """
    rank = len(variable.shape)
    for rule in (getattr(variable, "regularizer", None), getattr(variable, "constraint", None)):
        axis = getattr(rule, "axis", "auto")
        if isinstance(rule, (GroupLasso, MaxNorm)) and axis != "auto" and rank >= 1:
            return _units.reduction_axes(axis, rank)
    return None


def proximal(variable, l1_threshold, group_threshold, constraint=None, group_axes=None):
    """Applies the soft thresholds that are not `None`, then `constraint`."""
    value = ops.convert_to_tensor(variable)
    if l1_threshold is not None:
        value = soft_threshold(value, ops.cast(l1_threshold, value.dtype))
    if group_threshold is not None:
        value = group_soft_threshold(
            value, ops.cast(group_threshold, value.dtype), group_axes)
    if constraint is not None:
        value = constraint(value)
    variable.assign(value)


def decay_update(reference=None):
    """`fn(variable, coefficient)` for `update_variables`: the decay step."""

    def fn(variable, coefficient):
        decay(variable, coefficient, reference)

    return fn


def proximal_update(use_l1, use_group, constraint=None, group_axes=None):
    """`fn(variable, *thresholds)` for `update_variables`: the proximal step.

    `thresholds` holds the L1 threshold if `use_l1`, then the group one if
    `use_group`.
    """

    def fn(variable, *thresholds):
        thresholds = list(thresholds)
        l1_threshold = thresholds.pop(0) if use_l1 else None
        group_threshold = thresholds.pop(0) if use_group else None
        proximal(variable, l1_threshold, group_threshold, constraint, group_axes)

    return fn


def normalized_weight_decay(lambda_norm, batch_size, num_examples, epochs):
    """The decay strength for a run, from the paper's normalized weight decay.

    Loshchilov & Hutter (2019, Appendix B.1) make the best decay independent
    of the training length by fixing `lambda_norm` and setting

        weight_decay = lambda_norm * sqrt(batch_size / (num_examples * epochs))

    Args:
        lambda_norm: Non-negative float, the normalized decay.
        batch_size: Int >= 1, examples per step (`b`).
        num_examples: Int >= 1, training examples per epoch (`B`).
        epochs: Positive number of epochs (`T`).

    Returns:
        The float `weight_decay`.

    Example:

    >>> import keras_regkit
    >>> keras_regkit.normalized_weight_decay(0.05, 128, 50000, 200)  # 0.05*sqrt(128/1e7)
    0.000178885...

    Reference: Loshchilov & Hutter (2019), "Decoupled weight decay
    regularization", Appendix B.1.
    """
    lambda_norm = _validation.non_negative(lambda_norm, "lambda_norm")
    batch_size = _validation.positive_int(batch_size, "batch_size")
    num_examples = _validation.positive_int(num_examples, "num_examples")
    epochs = _validation.positive(epochs, "epochs")
    return lambda_norm * math.sqrt(batch_size / (num_examples * epochs))
