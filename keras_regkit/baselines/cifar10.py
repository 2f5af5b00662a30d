"""CIFAR-10 VGG-like baseline built from keras_regkit's own parts.

The network is the classic Keras "VGG-like convnet" (two blocks of
Conv2D(3x3, same, relu) x 2 -> MaxPooling2D -> Dropout(0.25), then
Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(10, softmax)), with
`blocks=3` for the larger textbook network (32-32-64-64-128-128). Its
penalties come from `keras_regkit.regularizers`, its max-norm constraint from
`keras_regkit.constraints`, its dropout layers from
`keras_regkit.dropout.insert_dropout(policy="vgg")`, and the decoupled
variants' optimizer from `keras_regkit.optimizers.DecoupledWeightDecay`.

- `build_vgg_like(...)`, `VARIANTS`, `build_variant(name)`: the model
  (`Variant`: what a variant sets, plain data; `build_callbacks(variant)`:
  the `fit` callbacks it needs);
- `build_resnet(depth=20)`: He et al.'s CIFAR ResNet, for the `resnet*`
  variants (DropPath and DropBlock placed by `keras_regkit.residual`);
- `load_cifar10(...)`: the tensorflow-datasets input pipeline (never
  downloads; `CIFAR10NotFoundError` says how to provide the data);
- `RunSettings(...)`: the settings of one run (variant, epochs, batch size,
  data, strategy, seed, ...), checked once and recorded in its run folder;
- `train(...)`: one variant end to end (`train(variant, epochs=...)` or
  `train(settings=RunSettings(...))`), writing a run folder with
  history.json, metrics.json, model.keras and curves.png (whole or not at
  all: a run that fails half-way leaves the folder as it was);
- `compare_runs(...)`: the table and curves of several run folders;
- `sweep(...)`: one variant's strength chosen on validation images with
  KerasTuner (the validation curve, the choice, its test accuracy).

The command line (`keras-regkit cifar10 ...`, `keras-regkit compare ...`) is
a thin layer over these.
"""

from keras_regkit.baselines._data import CIFAR10Data
from keras_regkit.baselines._data import CIFAR10NotFoundError
from keras_regkit.baselines._data import load_cifar10
from keras_regkit.baselines._model import build_callbacks
from keras_regkit.baselines._model import build_variant
from keras_regkit.baselines._model import build_vgg_like
from keras_regkit.baselines._pipeline import make_pipeline
from keras_regkit.baselines._report import compare_runs
from keras_regkit.baselines._report import format_table
from keras_regkit.baselines._report import load_run
from keras_regkit.baselines._report import plot_runs
from keras_regkit.baselines._resnet import build_resnet
from keras_regkit.baselines._run_settings import RunSettings
from keras_regkit.baselines._settings import DEFAULT_VARIANT
from keras_regkit.baselines._sweep import sweep
from keras_regkit.baselines._errors import OutputDirError
from keras_regkit.baselines._run_folder import RUN_FILES as OUTPUT_FILES
from keras_regkit.baselines._run_folder import check_output_dir
from keras_regkit.baselines._training import make_strategy
from keras_regkit.baselines._training import train
from keras_regkit.baselines._variants import VARIANTS
from keras_regkit.baselines._variants import Variant
from keras_regkit.baselines._variants import get_variant

__all__ = [
    "CIFAR10Data",
    "CIFAR10NotFoundError",
    "DEFAULT_VARIANT",
    "OUTPUT_FILES",
    "OutputDirError",
    "RunSettings",
    "VARIANTS",
    "Variant",
    "build_callbacks",
    "build_resnet",
    "build_variant",
    "build_vgg_like",
    "check_output_dir",
    "compare_runs",
    "format_table",
    "get_variant",
    "load_cifar10",
    "load_run",
    "make_pipeline",
    "make_strategy",
    "plot_runs",
    "sweep",
    "train",
]
