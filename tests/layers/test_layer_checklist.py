"""The shared layer checklist (`tests/layers/layer_checklist.py`) on every public layer.

A new public layer gets a `LayerCase` here: `test_every_public_layer_has_a_case`
fails until it has one. Each tolerance is 5 standard errors of the drop
fraction: a binomial over the independent mask draws of `stats_shape` (as
many as the noise shape has entries), or, for DropBlock, the exact variance of
one map's kept fraction (`_kept_moments`, a NumPy reference from the paper)
over the maps of `stats_shape`.
"""

import math

import keras
import pytest

import keras_regkit
from keras_regkit import DropBlock2D
from keras_regkit import DropPath
from keras_regkit import ScheduledDropout
from keras_regkit import ScheduledSpatialDropout1D
from keras_regkit import ScheduledSpatialDropout2D
from keras_regkit import ScheduledSpatialDropout3D
from tests.layers.layer_checklist import LayerCase
from tests.layers.layer_checklist import check_config
from tests.layers.layer_checklist import check_fresh_process_reload
from tests.layers.layer_checklist import run_layer_checklist
from tests.layers.test_layers import _kept_moments


def _binomial(rate, draws):
    """`(expected_drop, tolerance)`: 5 standard errors over `draws` independent draws."""
    return rate, 5 * math.sqrt(rate * (1 - rate) / draws)


def _dropblock(rate, block_h, block_w, size, maps):
    """`(expected_drop, tolerance)` for `maps` maps of `size x size`."""
    gamma = rate * size * size / (block_h * block_w * (size - block_h + 1) * (size - block_w + 1))
    mean, variance = _kept_moments(size, size, block_h, block_w, gamma)
    return 1 - mean, 5 * math.sqrt(variance / maps)


def _case(layer_cls, init_kwargs, input_shape, spatial_axes, stats_shape, drop, **kwargs):
    expected_drop, tolerance = drop
    return LayerCase(layer_cls, init_kwargs, input_shape, spatial_axes, stats_shape,
                     expected_drop, tolerance, **kwargs)


CASES = [
    # One draw per sample.
    _case(DropPath, {"rate": 0.3, "seed": 1, "name": "drop_path"}, (4, 6, 5, 3), (1, 2),
          (8000, 1, 1, 1), _binomial(0.3, 8000), id="DropPath"),
    # One draw per entry.
    _case(ScheduledDropout, {"rate": 0.4, "seed": 2}, (4, 6, 5), (1,),
          (40, 100, 10), _binomial(0.4, 40_000), id="ScheduledDropout"),
    # One draw per sample and channel.
    _case(ScheduledSpatialDropout1D, {"rate": 0.4, "seed": 3}, (4, 6, 5), (1,),
          (800, 2, 10), _binomial(0.4, 8000), id="ScheduledSpatialDropout1D"),
    _case(ScheduledSpatialDropout2D, {"rate": 0.4, "data_format": "channels_first", "seed": 4},
          (4, 5, 6, 4), (2, 3), (800, 10, 2, 2), _binomial(0.4, 8000),
          id="ScheduledSpatialDropout2D-channels_first"),
    _case(ScheduledSpatialDropout3D, {"rate": 0.4, "seed": 5}, (4, 3, 4, 3, 5), (1, 2, 3),
          (800, 2, 2, 2, 10), _binomial(0.4, 8000), id="ScheduledSpatialDropout3D"),
    # Kept entries scaled by the batch's count over kept count.
    _case(DropBlock2D, {"rate": 0.2, "block_size": 3, "seed": 6}, (4, 8, 8, 3), (1, 2),
          (256, 8, 8, 4), _dropblock(0.2, 3, 3, 8, 1024), rescale="batch", id="DropBlock2D"),
    _case(DropBlock2D, {"rate": 0.2, "block_size": (2, 4), "data_format": "channels_first",
                        "seed": 7},
          (4, 3, 8, 8), (2, 3), (256, 4, 8, 8), _dropblock(0.2, 2, 4, 8, 1024),
          rescale="batch", id="DropBlock2D-pair-channels_first"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_layer_checklist(case, tmp_path):
    run_layer_checklist(case, tmp_path, fresh_process=False)  # below, all in one process


def test_fresh_process_reload_of_every_case(tmp_path):
    check_fresh_process_reload(CASES, tmp_path)


def test_every_public_layer_has_a_case():
    public = {getattr(keras_regkit, name) for name in keras_regkit.__all__}
    layers = {obj for obj in public if isinstance(obj, type)
              and issubclass(obj, keras.layers.Layer) and not issubclass(obj, keras.Model)}
    assert layers == {case.layer_cls for case in CASES}


@pytest.mark.parametrize("layer_cls, init_kwargs", [
    (DropBlock2D, {"rate": 0.1, "block_size": 3, "seed": None}),
    (DropPath, {"rate": 0.1, "seed": None}),
])
def test_config_without_a_seed(layer_cls, init_kwargs):
    check_config(LayerCase(layer_cls, init_kwargs, (2, 4, 4, 1), (1, 2), (2, 4, 4, 1), 0.1, 0.1))
