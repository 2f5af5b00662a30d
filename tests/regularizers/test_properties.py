"""Property-based tests (hypothesis) for the math of penalties, max-norm and proximal steps.

Each property is stated independently of the implementation: non-negativity,
homogeneity of the right degree, convexity, the projection's defining
properties, and the closed form of the soft-threshold operators, all checked
with NumPy written here.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_regkit
from keras_regkit import L1, L2, CorrectedElasticNet, ElasticNet, GroupLasso, MaxNorm

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine (CI)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Values either exactly zero or of magnitude in [1e-3, 1e3]: no subnormals, no
# overflow, so float64 rounding stays ~1e-15 relative and the checks can be tight.
_MAGNITUDES = st.one_of(st.just(0.0), st.floats(1e-3, 1e3))
_SIGNED = st.builds(lambda m, s: m * s, _MAGNITUDES, st.sampled_from([-1.0, 1.0]))
_SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)
_COEF = st.one_of(st.just(0.0), st.floats(1e-4, 10.0))
_SCALE = st.one_of(st.just(0.0), st.builds(lambda m, s: m * s, st.floats(1e-3, 1e3),
                                            st.sampled_from([-1.0, 1.0])))


# The penalties compute in the weights' dtype: float64 on TensorFlow, float32
# on JAX unless `jax_enable_x64` is set. The tolerances follow.
_FLOAT64 = keras.ops.convert_to_numpy(keras.ops.ones((1,), "float64")).dtype == np.float64
RTOL = 1e-12 if _FLOAT64 else 1e-5


def _weights64(shape=_SHAPES):
    return hnp.arrays(np.float64, shape, elements=_SIGNED)


@st.composite
def _pairs64(draw):
    shape = draw(_SHAPES)
    return draw(_weights64(shape)), draw(_weights64(shape))


def _value(regularizer, w):
    return float(keras.ops.convert_to_numpy(regularizer(w)))


# --- NumPy references -------------------------------------------------------------


def _np_group_norms(w):
    """||W[..., j]||_2 for each output unit j (each element of a 1-D array)."""
    if w.ndim == 1:
        return np.abs(w)
    return np.sqrt(np.sum(w.reshape(-1, w.shape[-1]) ** 2, axis=0))


PENALTIES = {
    # name: (constructor from one coefficient, NumPy penalty, homogeneity degree)
    "L1": (lambda c: L1(c), lambda c, w: c * np.sum(np.abs(w)), 1),
    "L2": (lambda c: L2(c), lambda c, w: c * np.sum(w**2), 2),
    "GroupLasso": (lambda c: GroupLasso(c), lambda c, w: c * np.sum(_np_group_norms(w)), 1),
    "ElasticNet": (
        lambda c: ElasticNet(c, 0.5 * c),
        lambda c, w: c * np.sum(np.abs(w)) + 0.5 * c * np.sum(w**2),
        None,
    ),
    "CorrectedElasticNet": (
        lambda c: CorrectedElasticNet(0.5 * c, c),
        lambda c, w: 0.5 * c * np.sum(np.abs(w)) + c * np.sum(w**2),
        None,
    ),
}
HOMOGENEOUS = [name for name, (_, _, degree) in PENALTIES.items() if degree]


@SETTINGS
@given(name=st.sampled_from(sorted(PENALTIES)), coef=_COEF, w=_weights64())
def test_penalty_is_non_negative_and_matches_numpy(name, coef, w):
    make, reference, _ = PENALTIES[name]
    value = _value(make(coef), w)
    assert value >= 0.0
    # rtol 1e-6, not 1e-12: the coefficients go through float32 on the way to the
    # weights' dtype (`ops.cast(python_float, "float64")`), even for float64 weights.
    np.testing.assert_allclose(value, reference(coef, w), rtol=max(RTOL, 1e-6), atol=1e-300)
    if coef > 0 and np.any(w != 0):
        assert value > 0.0  # positive definite on non-zero weights
    assert _value(make(coef), np.zeros_like(w)) == 0.0


@SETTINGS
@given(name=st.sampled_from(HOMOGENEOUS), coef=_COEF, w=_weights64(), t=_SCALE)
def test_penalty_is_homogeneous_of_its_degree(name, coef, w, t):
    """penalty(t * w) == |t|**k * penalty(w): k = 1 for L1 and GroupLasso, 2 for L2."""
    make, _, degree = PENALTIES[name]
    regularizer = make(coef)
    np.testing.assert_allclose(
        _value(regularizer, t * w),
        abs(t) ** degree * _value(regularizer, w),
        rtol=RTOL,
        atol=1e-300,
    )


@SETTINGS
@given(name=st.sampled_from(sorted(PENALTIES)), coef=_COEF, pair=_pairs64(),
       mix=st.floats(0.0, 1.0))
def test_penalty_is_convex(name, coef, pair, mix):
    a, b = pair
    regularizer = PENALTIES[name][0](coef)
    lhs = _value(regularizer, mix * a + (1 - mix) * b)
    rhs = mix * _value(regularizer, a) + (1 - mix) * _value(regularizer, b)
    assert lhs <= rhs * (1 + RTOL) + 1e-300


@SETTINGS
@given(l1=_COEF, l2=_COEF, w=_weights64())
def test_elastic_net_is_the_sum_of_its_parts(l1, l2, w):
    total = _value(ElasticNet(l1, l2), w)
    np.testing.assert_allclose(total, _value(L1(l1), w) + _value(L2(l2), w), rtol=RTOL)
    assert _value(CorrectedElasticNet(l1, l2), w) == total  # same training penalty


# --- MaxNorm ------------------------------------------------------------------------


_LOW32 = float(np.float32(1e-3))  # bounds must be exact float32 values
_ELEMENTS32 = st.one_of(
    st.just(0.0), st.floats(_LOW32, 1e3, width=32), st.floats(-1e3, -_LOW32, width=32)
)


@st.composite
def _maxnorm_cases(draw):
    """(weights float32, max_value, axis argument, reduced axes for NumPy)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    rank = len(shape)
    w = draw(hnp.arrays(np.float32, shape, elements=_ELEMENTS32))
    max_value = draw(st.floats(0.05, 50.0))
    if draw(st.booleans()):
        return w, max_value, "auto", tuple(range(rank - 1))
    axes = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
    # Give some axes as negative indices: the same axes counted from the end.
    given_axes = [a - rank if draw(st.booleans()) else a for a in axes]
    argument = given_axes[0] if len(given_axes) == 1 and draw(st.booleans()) else given_axes
    return w, max_value, argument, tuple(sorted(axes))


def _np_norms(w, axes):
    w = np.asarray(w, np.float64)
    return np.sqrt(np.sum(w**2, axis=axes, keepdims=True)) if axes else np.abs(w)


def _project(constraint, w):
    return np.asarray(keras.ops.convert_to_numpy(constraint(w)))


@SETTINGS
@given(case=_maxnorm_cases())
def test_max_norm_is_a_projection_onto_the_ball(case):
    w, max_value, axis, axes = case
    constraint = MaxNorm(max_value, axis=axis)
    projected = _project(constraint, w)
    assert projected.shape == w.shape and projected.dtype == np.float32
    before, after = _np_norms(w, axes), _np_norms(projected, axes)
    # Within the ball, and no unit's norm ever grows.
    assert np.all(after <= max_value * (1 + 1e-6))
    assert np.all(after <= before * (1 + 1e-6))
    # Closed form: w * min(1, c / ||w||), i.e. the direction is kept.
    scale = np.minimum(1.0, max_value / np.where(before > 0, before, 1.0))
    np.testing.assert_allclose(projected, w * scale, rtol=2e-6, atol=1e-30)
    # Units inside the ball come back bit-for-bit.
    inside = np.broadcast_to(before <= max_value * (1 - 1e-5), w.shape)
    np.testing.assert_array_equal(projected[inside], w[inside])
    # Idempotent (up to the float32 rounding of the first projection's norm).
    np.testing.assert_allclose(_project(constraint, projected), projected, rtol=2e-6, atol=0)


@SETTINGS
@given(case=_maxnorm_cases(), shrink=st.floats(0.0, 0.999))
def test_max_norm_leaves_weights_inside_the_ball_bit_identical(case, shrink):
    w, max_value, axis, axes = case
    largest = float(np.max(_np_norms(w, axes)))
    if largest > 0:
        w = (w * np.float32(shrink * max_value / largest)).astype(np.float32)
    projected = _project(MaxNorm(max_value, axis=axis), w)
    assert projected.tobytes() == w.tobytes()


# --- proximal operators of the decoupled-decay optimizer -----------------------------


_PROX_ELEMENTS = st.one_of(
    st.just(0.0), st.floats(-10.0, 10.0, width=32, allow_subnormal=False)
)


@st.composite
def _prox_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4))
    w = draw(hnp.arrays(np.float32, shape, elements=_PROX_ELEMENTS))
    learning_rate = draw(st.floats(1e-3, 1.0))
    strength = draw(st.floats(1e-3, 10.0))
    return w, learning_rate, strength


def _one_prox_step(w, learning_rate, **kwargs):
    """One `DecoupledWeightDecay(SGD)` step with zero gradients and no decay."""
    variable = keras.Variable(w, name="kernel")
    optimizer = keras_regkit.DecoupledWeightDecay(
        keras.optimizers.SGD(learning_rate=learning_rate), weight_decay=0.0, **kwargs
    )
    optimizer.apply_gradients([(np.zeros_like(w), variable)])
    return np.asarray(keras.ops.convert_to_numpy(variable))


# A unit so small that its squared norm underflows float32 (found by hypothesis).
_TINY_UNIT = (np.array([[6.057411e-21]], np.float32), 1.0, 0.5)


@SETTINGS
@given(case=_prox_cases())
@example(case=_TINY_UNIT)
def test_proximal_l1_is_the_soft_threshold(case):
    """w <- sign(w) * max(|w| - lr * l1, 0), with exact zeros below the threshold."""
    w, learning_rate, l1 = case
    got = _one_prox_step(w, learning_rate, l1=l1)
    threshold = learning_rate * l1
    w64 = w.astype(np.float64)
    expected = np.sign(w64) * np.maximum(np.abs(w64) - threshold, 0.0)
    tolerance = 1e-6 * max(threshold, float(np.max(np.abs(w64))))
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
    below = np.abs(w64) < threshold * (1 - 1e-5)
    assert np.all(got[below] == 0.0)  # exact zeros, not tiny values
    above = np.abs(w64) > threshold * (1 + 1e-5)
    assert np.all(np.sign(got[above]) == np.sign(w[above]))
    assert np.all(np.abs(got) <= np.abs(w))  # never moves away from zero


@SETTINGS
@given(case=_prox_cases())
@example(case=_TINY_UNIT)
def test_proximal_group_l1_is_the_block_soft_threshold(case):
    """W[..., j] <- W[..., j] * max(0, 1 - lr * group_l1 / ||W[..., j]||)."""
    w, learning_rate, group_l1 = case
    got = _one_prox_step(w, learning_rate, group_l1=group_l1)
    threshold = learning_rate * group_l1
    w64 = w.astype(np.float64)
    norms = _np_group_norms(w64)
    scale = np.maximum(0.0, 1.0 - threshold / np.where(norms > 0, norms, 1.0))
    expected = w64 * scale  # broadcast over the last axis
    tolerance = 1e-6 * max(threshold, float(np.max(np.abs(w64))))
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
    dead = norms < threshold * (1 - 1e-5)
    assert np.all(got[..., dead] == 0.0)  # whole units exactly zero
    got_norms = _np_group_norms(got.astype(np.float64))
    assert np.all(got_norms <= norms * (1 + 1e-6))


@pytest.mark.parametrize("w", [np.zeros((3, 2), "float32"), np.full((2, 2), 0.5, "float32")])
def test_proximal_steps_at_and_below_threshold_give_exact_zero(w):
    """Plain examples by hand: lr * l1 = 0.1 * 5 = 0.5 >= |w| gives exact 0."""
    for kwargs in ({"l1": 5.0}, {"group_l1": 10.0}):
        got = _one_prox_step(w, 0.1, **kwargs)
        assert np.all(got == 0.0) and np.all(np.isfinite(got))
