"""The backend-free pieces of `SharpnessAwareMinimization`'s step.

Plain functions of tensors, written in `keras.ops`; the update rule they
implement is stated once, in `keras_regkit.SharpnessAwareMinimization`'s
docstring. The per-backend steps (`_sam_steps`) call them.
"""

import keras
from keras import ops

from keras_regkit import _distribute

# Added to the gradient norm, as in Foret et al.'s and Kwon et al.'s code.
NORM_EPSILON = 1e-12


def perturbations(grads, weights, rho, adaptive, eta):
    """`eps` for each variable (`None` where the gradient is `None`).

    SAM's `rho * g / ||g||`, or with `adaptive` ASAM's
    `rho * T^2 g / ||T g||`, `T = |w| + eta`; all zeros when the norm is not
    finite.
    """
    present = [
        (ops.convert_to_tensor(g), w) for g, w in zip(grads, weights) if g is not None
    ]
    if adaptive:
        scales = [ops.add(ops.abs(w), ops.cast(eta, w.dtype)) for _, w in present]
        directions = [ops.multiply(s, g) for s, (g, _) in zip(scales, present)]
    else:
        scales = [None] * len(present)
        directions = [g for g, _ in present]
    squares = [ops.sum(ops.square(ops.cast(d, "float32"))) for d in directions]
    norm = ops.sqrt(ops.sum(ops.stack(squares))) if squares else ops.zeros(())
    finite = ops.isfinite(norm)
    scale = ops.where(finite, rho / (norm + NORM_EPSILON), 0.0)
    result = []
    for s, d in zip(scales, directions):
        e = ops.multiply(d if s is None else ops.multiply(s, d), ops.cast(scale, d.dtype))
        result.append(ops.where(finite, e, ops.zeros_like(e)))
    it = iter(result)
    return [None if g is None else next(it) for g in grads]


def first_tensor(x):
    """The first tensor of the input structure `x` (it gives the batch size)."""
    return next(t for t in keras.tree.flatten(x) if t is not None)


def divides_message(num_batch_splits):
    return f"`num_batch_splits={num_batch_splits}` must divide the batch size. Received: batch size"


def batch_splits(x, y, sample_weight, num_batch_splits, check_unknown_batch=None):
    """The `(x, y, sample_weight)` sub-batches (one when not splitting).

    A batch size known now that `num_batch_splits` does not divide raises a
    `ValueError`; an unknown one (a TensorFlow graph) is handed to
    `check_unknown_batch(first_tensor, num_batch_splits)` to check when run.
    """
    if num_batch_splits is None:
        return [(x, y, sample_weight)]
    m = num_batch_splits
    first = first_tensor(x)
    batch = first.shape[0]
    if batch is not None:
        if batch % m:
            raise ValueError(f"{divides_message(m)} {batch}")
    elif check_unknown_batch is not None:
        check_unknown_batch(first, m)

    def split(structure):
        if structure is None:
            return [None] * m
        pieces = [ops.split(t, m, axis=0) for t in keras.tree.flatten(structure)]
        return [
            keras.tree.pack_sequence_as(structure, [p[i] for p in pieces])
            for i in range(m)
        ]

    return list(zip(split(x), split(y), split(sample_weight)))


def add_gradients(summed, grads):
    """`summed + grads` per variable, a `None` standing for zero (`summed` may be `None`)."""
    if summed is None:
        return grads
    return [
        a if b is None else (b if a is None else ops.add(a, b))
        for a, b in zip(summed, grads)
    ]


def mean_gradients(summed, count):
    """`summed / count` per variable (`None` stays `None`); unchanged for one batch."""
    if count == 1:
        return summed
    return [None if g is None else ops.divide(g, float(count)) for g in summed]


def record_loss(model, losses, x):
    """Updates `model`'s `loss` metric with the mean first-pass loss."""
    tracker = next((m for m in model.metrics if m.name == "loss"), None)
    if tracker is None:
        return
    loss = ops.divide(ops.sum(ops.stack(losses)), float(len(losses)))
    loss = _distribute.unscaled_replica_loss(loss)
    tracker.update_state(loss, sample_weight=ops.shape(first_tensor(x))[0])


def concat(predictions):
    """The sub-batches' predictions joined along the batch axis."""
    if len(predictions) == 1:
        return predictions[0]
    return keras.tree.map_structure(
        lambda *parts: ops.concatenate(parts, axis=0), *predictions
    )
