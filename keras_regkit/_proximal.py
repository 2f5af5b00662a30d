"""The per-variable pieces of `DecoupledWeightDecay`.

Kept apart from the optimizer class: which variables decay (the mask and its
warnings), the update rules themselves (decay, soft threshold, block soft
threshold, all in `keras.ops`), and one helper that runs a per-variable update
once per training step under `tf.distribute` - the path Keras takes for its
own `weight_decay` - or directly on other backends.
"""

import contextlib
import fnmatch
import warnings

import keras
from keras import ops

from keras_regkit import _units
from keras_regkit.constraints import MaxNorm
from keras_regkit.regularizers import GroupLasso


# --- which variables decay -------------------------------------------------------------


def variable_path(variable):
    """`variable.path` (Keras variables), else its name (raw backend variables)."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) else str(getattr(variable, "name", variable))


def _matches(path, patterns):
    """Does a pattern match `path`, ignoring leading scopes on either side?

    Keras names a variable `model/layer/kernel` while a Sequential model is
    live but `layer/kernel` after `load_model`, so both forms must select the
    same variables before and after a save. A pattern therefore matches the
    path or any trailing part of it after a `/` (`"dense_2/*"` matches
    `"sequential/dense_2/kernel"`), and a pattern's leading literal scopes may
    be dropped (`"seqnet/d1/*"` matches `"d1/kernel"`) as long as what remains
    still has a layer and a variable part, one of them literal (never a bare
    `"*"` or `"kernel"`). `fnmatch`'s `*` also
    matches `/`.
    """
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(tail, form)
        for pattern in patterns
        for form in _pattern_forms(pattern)
        for tail in tails
    )


def _pattern_forms(pattern):
    """`pattern` and its forms without leading literal scopes (see `_matches`)."""
    forms = [pattern]
    parts = pattern.split("/")
    for i in range(1, len(parts) - 1):  # keep at least `layer/variable`
        if any(ch in parts[i - 1] for ch in "*?["):
            break  # only literal scopes (model names) are dropped
        rest = parts[i:]
        if not any(not any(ch in part for ch in "*?[") for part in rest):
            break  # keep a literal name in what remains
        forms.append("/".join(rest))
    return forms


# The last part of `variable.path` for normalization parameters: `gamma`/`beta`
# of Keras's LayerNormalization, BatchNormalization and GroupNormalization,
# `scale` of its RMSNormalization and of KerasHub's RMS/layer norms, `offset`
# (TensorFlow's name for the shift).
NORMALIZATION_NAMES = ("gamma", "beta", "scale", "offset")


def variable_name(variable):
    """The last part of the variable's path, without a `:0` suffix, lower-cased."""
    return variable_path(variable).rsplit("/", 1)[-1].split(":", 1)[0].lower()


def decays_by_default(variable):
    """Whether the default mask (no `include`) selects `variable`.

    By its role, read from its name (the last part of `variable.path`), with
    its rank as the fallback: never a bias (named `bias` or `*_bias`, such as
    `MultiHeadAttention`'s 2-D `query/bias` or `output_bias`), never a
    normalization parameter (`gamma`, `beta`, `scale`, `offset`), never a
    variable with `ndim <= 1` (any other scalar or vector); every other
    variable, so kernels and embeddings, decays.
    """
    name = variable_name(variable)
    if name == "bias" or name.endswith("_bias") or name in NORMALIZATION_NAMES:
        return False
    return len(variable.shape) >= 2


def decay_mask(variables, include, exclude):
    """Returns one bool per variable: does it decay (and get the proximal step)?

    Without `include`, the variables `decays_by_default` selects (kernels and
    embeddings; not biases, normalization parameters or other 0-D/1-D
    variables). With `include`, exactly the variables whose path matches one
    of its glob patterns. A match of `exclude` always wins. Variables Keras
    overwrites with their gradient (float8 scaling factors) never decay.
    """
    mask = []
    for variable in variables:
        path = variable_path(variable)
        if include is None:
            selected = decays_by_default(variable)
        else:
            selected = _matches(path, include)
        if _matches(path, exclude) or getattr(variable, "overwrite_with_gradient", False):
            selected = False
        mask.append(selected)
    return mask


def warn_about_mask(variables, mask, *, include, exclude, active, optimizer_name):
    """Warns about patterns that match nothing, an empty mask, and double L2."""
    paths = [variable_path(v) for v in variables]
    unmatched = [
        f"{kind}={pattern!r}"
        for kind, patterns in (("include", include or []), ("exclude", exclude))
        for pattern in patterns
        if not any(_matches(path, [pattern]) for path in paths)
    ]
    if unmatched:
        warnings.warn(
            f"{optimizer_name}: these patterns match no trainable variable: "
            f"{', '.join(unmatched)}. Patterns are globs matched against "
            f"`variable.path`; the variables are: {paths}",
            UserWarning,
            stacklevel=3,
        )
    if active and not any(mask):
        warnings.warn(
            f"{optimizer_name}: no variable is selected for weight decay or the "
            f"proximal step, so it does nothing. Variables: {paths}",
            UserWarning,
            stacklevel=3,
        )
    doubled = [
        path
        for path, variable, selected in zip(paths, variables, mask)
        if selected and has_l2_penalty(getattr(variable, "regularizer", None))
    ]
    if active and doubled:
        warnings.warn(
            f"{optimizer_name}: these variables also carry an L2 penalty "
            f"(`regularizer` with l2 > 0), so they are regularized twice: "
            f"{doubled}. Drop the regularizer or exclude them from decay.",
            UserWarning,
            stacklevel=3,
        )


def has_l2_penalty(regularizer):
    """True for `keras.regularizers.L2`/`L1L2` and `keras_regkit.L2`/`ElasticNet`
    (anything exposing a positive `l2` coefficient)."""
    l2 = getattr(regularizer, "l2", None)
    try:
        return l2 is not None and float(l2) > 0
    except (TypeError, ValueError):
        return False


# --- the update rules (each assigns to `variable`) -------------------------------------


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
    if not axes:
        norm = ops.absolute(value)
    else:
        norm = ops.sqrt(ops.sum(ops.square(value), axis=tuple(axes), keepdims=True))
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


# --- running the updates once per step -------------------------------------------------


def outside_functions():
    """`tf.init_scope()` on TensorFlow (leave any `tf.function` being traced)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    return contextlib.nullcontext()


def update_variables(optimizer, updates, scalars):
    """Runs `fn(variable, *scalars)` for each `(variable, fn)` in `updates`.

    On the TensorFlow backend this is the path Keras takes for its own
    `weight_decay` (`TFOptimizer._apply_weight_decay`): in a replica context it
    merges into the cross-replica context and updates every mirrored copy with
    `strategy.extended.update`, so the update happens once per step, not once
    per replica. The scalars (learning rate, decay strength, gates) are the
    same on every replica; the first replica's values are used, as
    `keras.optimizers.LossScaleOptimizer` does for its finite check.
    """
    if not updates:
        return
    scalars = tuple(ops.convert_to_tensor(s, "float32") for s in scalars)
    if keras.backend.backend() != "tensorflow":
        for variable, fn in updates:
            fn(variable, *scalars)
        return

    import tensorflow as tf

    def merged(distribution, scalars):
        scalars = tuple(distribution.experimental_local_results(s)[0] for s in scalars)
        for variable, fn in updates:
            if isinstance(variable, keras.Variable):
                variable = variable.value  # the tf.Variable (or mirrored one)
            distribution.extended.update(variable, fn, args=scalars, group=False)

    strategy = getattr(optimizer, "_distribution_strategy", None) or tf.distribute.get_strategy()
    tf.__internal__.distribute.interim.maybe_merge_call(merged, strategy, scalars)
