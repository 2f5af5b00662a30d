"""Which variables `DecoupledWeightDecay` decays (and gives the proximal steps).

By default by their role, read from the variable's name, with its rank as the
fallback; or by `include`/`exclude` glob patterns on `variable.path`. Also the
warnings about a selection that is probably not what the user meant: patterns
that match nothing, nothing selected, and variables regularized twice.
"""

import warnings

from keras_regkit import _path_globs


def variable_path(variable):
    """`variable.path` (Keras variables), else its name (raw backend variables)."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) else str(getattr(variable, "name", variable))


def _matches(path, patterns):
    """Whether one of the glob `patterns` matches `path` (`_path_globs.path_matches`)."""
    return any(_path_globs.path_matches(path, pattern) for pattern in patterns)


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
