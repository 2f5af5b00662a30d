"""Every bad input across the public API is refused with a clear message.

One table: each row is a call, the error type it must raise, and a regex the
message must match. The regex names the argument and the value received
(`Received: l1=-1`), so a user can tell what to fix without reading code.
That a refused call leaves its model or optimizer exactly as it was:
`test_refusals_change_nothing.py`.
"""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import (
    L1,
    L2,
    CorrectedElasticNet,
    DecoupledWeightDecay,
    ElasticNet,
    GroupLasso,
    MaxNorm,
)

Dense = keras.layers.Dense
NAN = float("nan")
INF = float("inf")


def _models():
    """A small Sequential model and a subclassed one (no layer graph)."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            Dense(3, name="dense_a"),
            Dense(3, name="dense_b"),
            Dense(2, name="logits"),
        ],
        name="net",
    )

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.hidden = Dense(3, name="hidden")
            self.out = Dense(1, name="out")

        def call(self, x):
            return self.out(self.hidden(x))

    sub = Subclassed()
    sub(np.zeros((1, 4), "float32"))
    return {"seq": model, "sub": sub}


class _NotScalar(keras.regularizers.Regularizer):
    """A broken regularizer: returns a tensor, not a scalar."""

    def __call__(self, x):
        return x


def _sgd():
    return keras.optimizers.SGD(learning_rate=0.1)


# Each row: (callable of the models dict, error type, message regex).
# `re.escape` is not used on purpose: the patterns stay readable.
CASES = [
    # --- regularizers -----------------------------------------------------------
    pytest.param(
        lambda m: L2.from_textbook(strength=1.0, num_examples=0), ValueError,
        r"`num_examples`.*Received: num_examples=0", id="L2.from_textbook-m-zero",
    ),
    pytest.param(
        lambda m: L2.from_textbook(strength=1.0, num_examples=-5), ValueError,
        r"`num_examples`.*Received: num_examples=-5", id="L2.from_textbook-m-negative",
    ),
    pytest.param(
        lambda m: L2.from_textbook(strength=1.0, num_examples=2.5), TypeError,
        r"`num_examples`.*Received: num_examples=2.5", id="L2.from_textbook-m-float",
    ),
    pytest.param(
        lambda m: L2.from_textbook(1.0, True), TypeError,
        r"`num_examples`.*Received: num_examples=True", id="L2.from_textbook-m-bool",
    ),
    pytest.param(
        lambda m: L2.from_textbook(1.0, None), TypeError,
        r"`num_examples`.*Received: num_examples=None", id="L2.from_textbook-m-none",
    ),
    pytest.param(
        lambda m: ElasticNet.from_mix(alpha=1.0, l1_ratio=1.5), ValueError,
        r"`l1_ratio` must be in the interval \[0, 1\]. Received: l1_ratio=1.5",
        id="ElasticNet.from_mix-ratio-above-1",
    ),
    pytest.param(
        lambda m: ElasticNet.from_mix(alpha=0.1, l1_ratio=-0.1), ValueError,
        r"`l1_ratio`.*Received: l1_ratio=-0.1", id="ElasticNet.from_mix-ratio-negative",
    ),
    pytest.param(
        lambda m: ElasticNet.from_mix(alpha=0.1, l1_ratio=NAN), ValueError,
        r"`l1_ratio`.*Received: l1_ratio=nan", id="ElasticNet.from_mix-ratio-nan",
    ),
    pytest.param(
        lambda m: ElasticNet.from_mix(alpha=0.1, l1_ratio=False), TypeError,
        r"`l1_ratio`.*Received: l1_ratio=False", id="ElasticNet.from_mix-ratio-bool",
    ),
    pytest.param(
        lambda m: CorrectedElasticNet.from_mix(alpha=0.1, l1_ratio=None), TypeError,
        r"`l1_ratio`.*Received: l1_ratio=None", id="CorrectedElasticNet.from_mix-ratio-none",
    ),
    pytest.param(
        lambda m: CorrectedElasticNet(correction_applied="yes"), TypeError,
        r"`correction_applied`.*Received: correction_applied='yes'",
        id="CorrectedElasticNet-flag-str",
    ),
    pytest.param(
        lambda m: keras_regkit.apply_elastic_net_correction("net"), TypeError,
        r"`model`.*Received: model='net'", id="apply_elastic_net_correction-not-model",
    ),
    # --- constraint ---------------------------------------------------------------
    pytest.param(
        lambda m: MaxNorm(axis="rows"), ValueError,
        r"`axis`.*Received: axis='rows'", id="MaxNorm-axis-unknown-str",
    ),
    pytest.param(
        lambda m: MaxNorm(axis=1.5), TypeError,
        r"`axis`.*Received: axis=1.5", id="MaxNorm-axis-float",
    ),
    pytest.param(
        lambda m: MaxNorm(axis=[0, 0]), ValueError,
        r"`axis`.*Received: axis=\[0, 0\]", id="MaxNorm-axis-repeated",
    ),
    pytest.param(
        lambda m: MaxNorm(2.0, axis=2)(np.ones((3, 2), "float32")), ValueError,
        r"`axis`.*rank 2.*Received: axis=2", id="MaxNorm-axis-out-of-rank",
    ),
    # --- rules ------------------------------------------------------------------------
    pytest.param(
        lambda m: keras_regkit.regularize("net", {"dense_a": L2()}), TypeError,
        r"`model`.*Received: model='net'", id="regularize-not-model",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {"conv*": L2()}), ValueError,
        r"(?s)'conv\*'.*`rules`.*matches no layer.*dense_a", id="regularize-no-match",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {"dense_a": "l2"}), TypeError,
        r"'dense_a'.*Regularizer.*Received: 'l2'", id="regularize-value-str",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {}), ValueError,
        r"`rules`.*Received: rules=\{\}", id="regularize-empty-rules",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], [L2()]), TypeError,
        r"`rules`.*pairs.*Received", id="regularize-rules-not-pairs",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {42: L2()}), TypeError,
        r"`selector`.*Received: selector=42", id="regularize-selector-int",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {"dense_a": L2()}, target="gamma"),
        ValueError, r"'dense_a'.*no 'gamma' weight.*Received: target='gamma'",
        id="regularize-missing-weight",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {"dense_a": L2()}, target=3),
        TypeError, r"`target`.*Received: target=3", id="regularize-target-int",
    ),
    pytest.param(
        lambda m: keras_regkit.regularize(m["seq"], {"dense_a": _NotScalar()}),
        ValueError, r"'dense_a'.*must return a scalar", id="regularize-non-scalar",
    ),
    pytest.param(
        lambda m: keras_regkit.constrain(m["seq"], {Dense: MaxNorm(1.0, axis=5)}),
        ValueError, r"'dense_a'.*Received: axis=5", id="constrain-axis-out-of-rank",
    ),
    pytest.param(
        lambda m: keras_regkit.constrain(m["seq"], {Dense: L2()}), TypeError,
        r"Dense.*Constraint.*Received: <.*L2", id="constrain-regularizer-given",
    ),
    pytest.param(
        lambda m: keras_regkit.summary(m["seq"], print_fn="stdout"), TypeError,
        r"`print_fn`.*Received: print_fn='stdout'", id="summary-print_fn-str",
    ),
    pytest.param(
        lambda m: keras_regkit.sparsity([1, 2]), TypeError,
        r"`model`.*Received: model=\[1, 2\]", id="sparsity-not-model",
    ),
    # --- optimizer wrapper ------------------------------------------------------------
    pytest.param(
        lambda m: DecoupledWeightDecay(Dense(2), weight_decay=1e-4), TypeError,
        r"`optimizer`.*Received: optimizer=.*Dense", id="DWD-optimizer-is-layer",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(None, weight_decay=1e-4), TypeError,
        r"`optimizer`.*Received: optimizer=None", id="DWD-optimizer-None",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), weight_decay=-1e-4), ValueError,
        r"`weight_decay`.*Received: weight_decay=-0.0001", id="DWD-decay-negative",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), weight_decay=NAN), ValueError,
        r"`weight_decay`.*Received: weight_decay=nan", id="DWD-decay-nan",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), weight_decay="0.1"), TypeError,
        r"`weight_decay`.*Received: weight_decay='0.1'", id="DWD-decay-str",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), 1e-4, decay_scaling="cosine"), ValueError,
        r"`decay_scaling`.*Received: decay_scaling='cosine'", id="DWD-unknown-scaling",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), 1e-4, toward="ones"), ValueError,
        r"`toward`.*Received: toward='ones'", id="DWD-unknown-toward",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), 1e-4, l1=-0.1), ValueError,
        r"`l1`.*Received: l1=-0.1", id="DWD-l1-negative",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), 1e-4, group_l1=INF), ValueError,
        r"`group_l1`.*Received: group_l1=inf", id="DWD-group_l1-inf",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(_sgd(), 1e-4, exclude=5), TypeError,
        r"`exclude`.*Received: exclude=5", id="DWD-exclude-int",
    ),
    pytest.param(
        lambda m: DecoupledWeightDecay(
            keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.01), 1e-4
        ),
        ValueError, r"(?s)weight_decay.*0.01", id="DWD-inner-already-decays",
    ),
    pytest.param(
        lambda m: keras_regkit.normalized_weight_decay(-0.05, 128, 50000, 10), ValueError,
        r"`lambda_norm`.*Received: lambda_norm=-0.05", id="normalized_wd-negative",
    ),
    pytest.param(
        lambda m: keras_regkit.normalized_weight_decay(0.05, 0, 50000, 10), ValueError,
        r"`batch_size`.*Received: batch_size=0", id="normalized_wd-batch-zero",
    ),
    # --- dropout ------------------------------------------------------------------
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], rate=1.0, after=Dense), ValueError,
        r"`rate`.*Received: rate=1.0", id="insert_dropout-rate-one",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], rate=-0.1, after=Dense), ValueError,
        r"`rate`.*Received: rate=-0.1", id="insert_dropout-rate-negative",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], rate="half", after=Dense), TypeError,
        r"`rate`.*Received: rate='half'", id="insert_dropout-rate-str",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], after={Dense: 1.5}), ValueError,
        r"`after\[Dense\]`.*Received: after\[Dense\]=1.5",
        id="insert_dropout-mapping-rate-above-1",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], policy="resnet"), ValueError,
        r"`policy`.*Received: policy='resnet'", id="insert_dropout-unknown-policy",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], after="conv*"), ValueError,
        r"(?s)'conv\*'.*dense_a", id="insert_dropout-no-match",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"], after=Dense, policy="dense"),
        ValueError, r"(?s)`after`.*`policy`|`policy`.*`after`", id="insert_dropout-both",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout(m["seq"]), ValueError,
        r"(?s)`after`.*`policy`|`policy`.*`after`", id="insert_dropout-neither",
    ),
    pytest.param(
        lambda m: keras_regkit.insert_dropout("net", after=Dense), TypeError,
        r"`model`.*Received: model='net'", id="insert_dropout-not-model",
    ),
    pytest.param(
        lambda m: keras_regkit.dropout_plan(m["seq"], rate=NAN, after=Dense), ValueError,
        r"`rate`.*Received: rate=nan", id="dropout_plan-rate-nan",
    ),
    pytest.param(
        lambda m: keras_regkit.remove_dropout(None), TypeError,
        r"`model`.*Received: model=None", id="remove_dropout-None",
    ),
]


def test_table_is_large_and_distinct():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 30


@pytest.mark.parametrize(("call", "error", "pattern"), CASES)
def test_bad_input_is_refused(call, error, pattern):
    models = _models()
    with pytest.raises(error, match=pattern) as info:
        call(models)
    # Exact type (not a subclass, not the other of ValueError/TypeError).
    assert type(info.value) is error, (
        f"expected {error.__name__}, got {type(info.value).__name__}: {info.value}"
    )


def test_subclassed_model_is_refused_by_insert_dropout():
    """No layer graph to rewrite: a clear error that says what to do instead."""
    sub = _models()["sub"]
    with pytest.raises(
        TypeError, match=r"'sub' is a subclassed Subclassed.* Add dropout in its `call\(\)`"
    ):
        keras_regkit.insert_dropout(sub, after=Dense)


# --- coefficients: one matrix for every constructor that takes one -------------

# (constructor of one value, argument name). `MaxNorm` also refuses 0 (> 0).
COEFFICIENTS = [
    pytest.param(lambda v: L1(l1=v), "l1", id="L1"),
    pytest.param(lambda v: L2(l2=v), "l2", id="L2"),
    pytest.param(lambda v: ElasticNet(l1=v), "l1", id="ElasticNet-l1"),
    pytest.param(lambda v: ElasticNet(l2=v), "l2", id="ElasticNet-l2"),
    pytest.param(lambda v: CorrectedElasticNet(l1=v), "l1", id="CorrectedElasticNet-l1"),
    pytest.param(lambda v: CorrectedElasticNet(l2=v), "l2", id="CorrectedElasticNet-l2"),
    pytest.param(lambda v: ElasticNet.from_mix(alpha=v), "alpha", id="ElasticNet.from_mix"),
    pytest.param(lambda v: L2.from_textbook(strength=v, num_examples=10), "strength",
                 id="L2.from_textbook"),
    pytest.param(lambda v: GroupLasso(factor=v), "factor", id="GroupLasso"),
    pytest.param(lambda v: MaxNorm(max_value=v), "max_value", id="MaxNorm"),
    pytest.param(lambda v: DecoupledWeightDecay(_sgd(), weight_decay=v), "weight_decay",
                 id="DecoupledWeightDecay"),
    pytest.param(lambda v: keras_regkit.Orthogonal(factor=v), "factor", id="Orthogonal"),
    pytest.param(lambda v: keras_regkit.ConstantSchedule(v), "value", id="ConstantSchedule"),
    pytest.param(lambda v: keras_regkit.LinearSchedule(v, 1.0, 2), "start", id="LinearSchedule"),
    pytest.param(lambda v: keras_regkit.CosineSchedule(1.0, v, 2), "end", id="CosineSchedule"),
    pytest.param(lambda v: keras_regkit.EarlySchedule(2, value=v), "value", id="EarlySchedule"),
    pytest.param(lambda v: keras_regkit.LateSchedule(2, value=v), "value", id="LateSchedule"),
]
INVALID_COEFFICIENTS = [
    pytest.param(-1, ValueError, "must be {op} 0. Received: {name}=-1.0", id="negative"),
    pytest.param(NAN, ValueError, "finite number. Received: {name}=nan", id="nan"),
    pytest.param(INF, ValueError, "finite number. Received: {name}=inf", id="inf"),
    pytest.param(-INF, ValueError, "finite number. Received: {name}=-inf", id="-inf"),
    pytest.param(True, TypeError, "Received: {name}=True", id="bool"),
    pytest.param(False, TypeError, "Received: {name}=False", id="bool-false"),
    pytest.param("0.1", TypeError, "Received: {name}='0.1'", id="str"),
    pytest.param([0.1], TypeError, r"Received: {name}=\[0.1\]", id="list"),
    pytest.param(np.array([0.1, 0.2]), TypeError, r"Received: {name}=array\(\[0.1, 0.2\]\)",
                 id="array"),
]


@pytest.mark.parametrize(("value", "error", "message"), INVALID_COEFFICIENTS)
@pytest.mark.parametrize(("make", "name"), COEFFICIENTS)
def test_every_coefficient_refuses_the_same_bad_values(make, name, value, error, message):
    """The same check everywhere a coefficient is taken, naming the argument."""
    op = ">" if name == "max_value" else ">="  # MaxNorm's bound must be positive
    with pytest.raises(error, match=rf"`{name}`.*" + message.format(name=name, op=op)) as info:
        make(value)
    assert type(info.value) is error


@pytest.mark.parametrize(("make", "name"), COEFFICIENTS)
def test_every_coefficient_refuses_none(make, name):
    with pytest.raises(TypeError, match=rf"`{name}`.*Received: {name}=None"):
        make(None)


def test_max_norm_refuses_zero():
    with pytest.raises(ValueError, match="`max_value` must be > 0. Received: max_value=0.0"):
        MaxNorm(max_value=0)