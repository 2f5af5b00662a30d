"""Globs on `variable.path`: the one matching rule of every path selector.

The path selectors of `regularize`/`constrain` (a selector string holding a
`/`) and the `include`/`exclude` of `DecoupledWeightDecay` match variable
paths by `path_matches`.
"""

import fnmatch


def is_path_pattern(selector):
    """Whether `selector` is a glob on `variable.path` (a string holding a `/`)."""
    return isinstance(selector, str) and "/" in selector


def path_matches(path, pattern):
    """Whether the variable path `path` matches the glob `pattern`.

    The one rule for every glob on `variable.path`: the path selectors of
    `regularize`/`constrain` and the `include`/`exclude` of
    `DecoupledWeightDecay`. Keras names a variable `model/layer/kernel` while
    a Sequential model is live but `layer/kernel` after `load_model`, so
    leading scopes may be missing on either side. `fnmatch` rules (`*` also
    matches `/`); a pattern matches when

    - it matches the whole path or a trailing part of it after a `/`:
      `"dense_2/kernel"` matches `"sequential/dense_2/kernel"`;
    - it starts with `"*/"`, and what follows matches as above (the `*/` may
      match nothing): `"*/attention/*"` matches `"attention/query/kernel"`;
    - it starts with literal scopes (a model's name) that the path lacks: with
      them dropped, the rest matches the whole path and still starts with a
      literal layer name and has a variable part. `"seqnet/d1/*"` matches
      `"d1/kernel"`; `"attention/*/kernel"` never shrinks to `"*/kernel"`, nor
      `"seqnet/kernel"` to `"kernel"`.

    >>> path_matches("transformer_layer_0/self_attention_layer/query/kernel",
    ...              "*/self_attention_layer/*/kernel")
    True
    >>> path_matches("transformer_layer_0/feedforward_output_dense/kernel",
    ...              "*/self_attention_layer/*/kernel")
    False
    >>> path_matches("attention/query/kernel", "*/attention/*")
    True
    >>> path_matches("d1/kernel", "seqnet/d1/*")
    True
    >>> path_matches("head/kernel", "*/attention/*/kernel")
    False
    >>> path_matches("transformer_layer_1/self_attention_layer/query/kernel",
    ...              "transformer_layer_0/self_attention_layer/*")
    False
    """
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    forms = [pattern] + ([pattern[2:]] if pattern.startswith("*/") else [])
    if any(fnmatch.fnmatchcase(tail, form) for form in forms for tail in tails):
        return True
    return any(fnmatch.fnmatchcase(path, form) for form in _without_leading_scopes(pattern))


def _is_literal(part):
    return not any(ch in part for ch in "*?[")


def _without_leading_scopes(pattern):
    """`pattern` without 1, 2, ... leading literal scopes (see `path_matches`)."""
    parts = pattern.split("/")
    forms = []
    for i in range(1, len(parts) - 1):  # keep at least `layer/variable`
        if not (_is_literal(parts[i - 1]) and _is_literal(parts[i])):
            break
        forms.append("/".join(parts[i:]))
    return forms
