"""Averages of the weights over training: stochastic weight averaging (`SWA`) and an EMA.

Both callbacks keep the average beside the model, in variables of their own,
and behave alike in everything but how they average:

- **What is averaged.** The model's trainable variables (`EMA` with
  `batch_norm="average"` also the moving statistics of every
  `BatchNormalization` layer). Other non-trainable variables (random-seed
  states, other layers' statistics) are not averaged: the model keeps their
  current values. Batch-norm statistics that are not averaged are
  recalibrated for the averaged weights by `recalibrate_batch_norm` on
  `recalibrate_data` whenever the average is put into the model.
- **Evaluation on the average.** With `validation_data`, at the end of each
  epoch that has an average the callback puts it into the model, runs
  `model.evaluate` (`verbose=0`), logs each result `name` as
  `val_swa_<name>` or `val_ema_<name>` in the epoch's logs (so in `History`,
  `CSVLogger`, ... listed after it), and puts the training weights back.
  Keras does not pass its own validation set to callbacks: give it here.
- **At the end of `fit`.** With `final_weights="average"` (the default) the
  model holds the average (recalibrated as above), and `last_weights` the
  training weights it replaced; with `"last"` the model keeps the training
  weights. `swap()` exchanges the two sets for a `with` block, e.g. to save
  the other one: `with swa.swap(): model.save("other.keras")`. It also works
  in a later callback's `on_epoch_end`.
- **Another `fit` with the same callback** continues the average. If the
  callback left the average in the model, it first puts the training
  weights back, so training goes on from where it stopped.
- **Between processes**, `save_state(path)` writes the callback's state (its
  counter, the averages, and the training weights while the model holds the
  average) to a `.npz` file, and `load_state(path)` reads it into a new
  callback, which adopts it when `fit` begins: saving the model (with its
  optimizer) and this state, then resuming, gives the run that was not
  interrupted. The data arguments are not part of `get_config`.
- **When training raises**, whatever the callback changed (the learning rate
  of `SWA`) is undone if the error comes from a training step or the data.
  An error raised by another callback is not seen: the change is then
  undone when the callback's next `fit` begins.
"""

import warnings

import keras
from keras import ops

from keras_regkit import _validation
from keras_regkit import _weight_average
from keras_regkit import batch_norm


@keras.saving.register_keras_serializable(package="keras_regkit")
class SWA(_weight_average.WeightAverage):
    r"""Stochastic weight averaging: the mean of the weights at the ends of epochs.

    Izmailov et al. average the weights an SGD run visits late in training
    (with a constant or cyclic learning rate) and find wider optima that
    generalize better. At the end of epoch `start_epoch` and every
    `frequency` epochs after it (epochs counted from 0, as `fit` and its
    `initial_epoch` count them), with `n` the number of epochs averaged so
    far, each averaged variable `w` updates its average

        average = w                              if n == 0
        average = average + (w - average) / (n + 1)   otherwise

    the running mean of PyTorch's `swa_utils.AveragedModel`. What is averaged,
    evaluation on the average (`val_swa_<name>`), what the model holds at the
    end, `swap()`, `save_state` and error handling are described in
    `keras_regkit.averaging`. The trainable variables are averaged; the
    batch-norm statistics are recalibrated on `recalibrate_data` (as PyTorch's
    `update_bn`). Without `recalibrate_data` they are those of the last
    weights, which do not match the average: the callback then warns at the
    end of training if the model has a `BatchNormalization` layer.

    With `swa_learning_rate`, the optimizer's learning rate is set to that
    constant from the start of epoch `start_epoch` (the paper's constant
    schedule; anneal to it with a schedule of your own before `start_epoch`),
    and put back when training ends. It must then be a plain value (a
    variable), not a `LearningRateSchedule` or a callable: those are refused
    when training begins.

    Args:
        start_epoch: Int `>= 0`, the first epoch averaged.
        frequency: Int `>= 1`, epochs between averages. Defaults to `1`.
        swa_learning_rate: Positive float, the learning rate from
            `start_epoch` on, or `None` (the default: unchanged).
        recalibrate_data: Batches to recalibrate the batch-norm statistics
            on (what `recalibrate_batch_norm` takes, re-iterable), or `None`.
        recalibrate_steps: Int `>= 1`, the number of batches of
            `recalibrate_data` to use, or `None` (all).
        validation_data: `(x, y)` arrays or a dataset to evaluate the average
            on at each epoch end, or `None`.
        final_weights: `"average"` (the default) or `"last"`: what the model
            holds after `fit`.

    Attributes:
        averaged_count: The number of epochs averaged so far (`n`).

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
    ...     1, use_bias=False, kernel_initializer="zeros")])
    >>> model.compile(keras.optimizers.SGD(1.0), "mae")  # w < 10: each step adds 1
    >>> swa = keras_regkit.SWA(start_epoch=1)
    >>> _ = model.fit(np.ones((1, 1)), np.full((1, 1), 10.0), epochs=4, verbose=0,
    ...               callbacks=[swa])
    >>> float(model.layers[0].kernel[0, 0])  # epochs 1, 2, 3 end at 2, 3, 4
    3.0
    >>> swa.averaged_count, float(swa.last_weights[0][0, 0])
    (3, 4.0)

    Reference: Izmailov et al. (2018), "Averaging Weights Leads to Wider
    Optima and Better Generalization"; PyTorch `torch.optim.swa_utils`.
    """

    _prefix = "swa"
    _counter = "averaged_count"

    def __init__(self, start_epoch, frequency=1, swa_learning_rate=None, recalibrate_data=None,
                 recalibrate_steps=None, validation_data=None, final_weights="average"):
        self.start_epoch = _validation.non_negative_int(start_epoch, "start_epoch")
        self.frequency = _validation.positive_int(frequency, "frequency")
        self.swa_learning_rate = (None if swa_learning_rate is None else
                                  _validation.positive(swa_learning_rate, "swa_learning_rate"))
        super().__init__(recalibrate_data, recalibrate_steps, validation_data, final_weights)
        self.averaged_count = 0
        self._saved_learning_rate = None  # (optimizer, value) while the SWA rate is set

    def _begin(self, model):
        if self.swa_learning_rate is None:
            return
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not isinstance(optimizer.learning_rate, keras.Variable):
            raise ValueError(
                "SWA(swa_learning_rate=...) sets the optimizer's learning rate, which "
                "must be a plain float (a variable); this one is "
                f"{type(getattr(optimizer, '_learning_rate', None)).__name__}. Drop the "
                "schedule or pass swa_learning_rate=None. Received: "
                f"swa_learning_rate={self.swa_learning_rate!r}")

    def _undo(self):
        if self._saved_learning_rate is not None:
            optimizer, value = self._saved_learning_rate
            optimizer.learning_rate = value
            self._saved_learning_rate = None

    def on_epoch_begin(self, epoch, logs=None):
        if (self.swa_learning_rate is not None and epoch >= self.start_epoch
                and self._saved_learning_rate is None):
            optimizer = self.model.optimizer
            value = float(ops.convert_to_numpy(optimizer.learning_rate))
            self._saved_learning_rate = (optimizer, value)
            optimizer.learning_rate = self.swa_learning_rate

    def on_epoch_end(self, epoch, logs=None):
        self.model  # noqa: B018 -- with JAX, brings the model's variables up to date
        if epoch >= self.start_epoch and (epoch - self.start_epoch) % self.frequency == 0:
            n = self.averaged_count
            if n == 0:
                _weight_average.assign(self._averages, self._variables)
            else:
                self._lerp(1.0 / (n + 1))
            self.averaged_count = n + 1
        if self.validation_data is not None and self.averaged_count:
            self._evaluate(logs)

    def _end(self, model):
        if not self.averaged_count:
            warnings.warn(
                f"SWA: training ended before epoch start_epoch={self.start_epoch}, so "
                "nothing was averaged; the model keeps its weights.", UserWarning, stacklevel=2)
        elif (self.final_weights == "average" and self.recalibrate_data is None
              and batch_norm._batch_norm_layers(model)):
            warnings.warn(
                f"SWA: model '{model.name}' has BatchNormalization layers whose moving "
                "statistics belong to the last weights, not to the average. Pass "
                "`recalibrate_data` or call `keras_regkit.recalibrate_batch_norm`.",
                UserWarning, stacklevel=2)

    def get_config(self):
        return {"start_epoch": self.start_epoch, "frequency": self.frequency,
                "swa_learning_rate": self.swa_learning_rate, **self._data_config()}


@keras.saving.register_keras_serializable(package="keras_regkit")
class EMA(_weight_average.WeightAverage):
    r"""An exponential moving average of the weights, updated after every training batch.

    At the end of training batch `k` (1, 2, ... counted over every `fit` with
    this callback: the attribute `updates`), with `t = k - update_after_step - 1`,

        decay_k = 0                                                    if t <= 0
        decay_k = min(decay, 1 - (1 + t / warmup_gamma) ** -warmup_power)  otherwise
        average = decay_k * average + (1 - decay_k) * w

    so the average is a copy of the weights for `k <= update_after_step + 1`,
    and then its decay rises towards `decay` instead of weighting the early
    random weights for thousands of steps.
    With `warmup_power=None`, `decay_k = decay` for `t > 0`. This is timm's
    `ModelEmaV3.get_decay(step=k)` (with `use_warmup=True`, `min_decay=0`)
    and ema-pytorch's `EMA` with `beta=decay`, `power`, `inv_gamma` and
    `update_every=1`: with the defaults the decay reaches 0.999 after about
    31,600 batches. `k` counts
    callback calls: with `steps_per_execution=s > 1`, Keras calls it every `s`
    steps and the average sees every `s`-th weights.

    It adds to the optimizers' own `use_ema=True` the warmup, evaluation on
    the average (`val_ema_<name>`), both weight sets kept (`swap()`,
    `last_weights`) and a batch-norm policy. `batch_norm="average"` (the
    default, as timm) averages every `BatchNormalization` layer's moving
    statistics too; `"recalibrate"` recomputes them for the average with
    `recalibrate_batch_norm` on `recalibrate_data` whenever the average is put
    into the model. The rest is described in `keras_regkit.averaging`.

    The update is one compiled call after each batch (a `tf.function` or
    `jax.jit` built once, the rate an argument: nothing retraces); with JAX,
    reading the weights after each batch also syncs the training state into
    the model. The cost per batch grows with the number and size of the
    variables, not with the batch size.

    Args:
        decay: Float in `[0, 1)`, the decay once warmed up. Defaults to `0.999`.
        warmup_power: Positive float, or `None` for no warmup. Defaults to
            `2/3`.
        warmup_gamma: Positive float. Defaults to `1.0`.
        update_after_step: Int `>= 0`, batches during which the average only
            copies the weights. Defaults to `0`.
        batch_norm: `"average"` (the default) or `"recalibrate"`.
        recalibrate_data: Batches for `batch_norm="recalibrate"` (what
            `recalibrate_batch_norm` takes, re-iterable).
        recalibrate_steps: Int `>= 1` or `None`: how many of those batches.
        validation_data: `(x, y)` arrays or a dataset to evaluate the average
            on at each epoch end, or `None`.
        final_weights: `"average"` (the default) or `"last"`: what the model
            holds after `fit`.

    Attributes:
        updates: The number of updates so far (`k` of the last one).

    Example:

    >>> import numpy as np, keras, keras_regkit
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
    ...     1, use_bias=False, kernel_initializer="zeros")])
    >>> model.compile(keras.optimizers.SGD(1.0), "mae")  # w < 10: each step adds 1
    >>> ema = keras_regkit.EMA(decay=0.5, warmup_power=None)
    >>> _ = model.fit(np.ones((3, 1)), np.full((3, 1), 10.0), batch_size=1, verbose=0,
    ...               callbacks=[ema])
    >>> float(model.layers[0].kernel[0, 0])  # 1, then 0.5 * 1 + 0.5 * 2, 0.5 * 1.5 + 0.5 * 3
    2.25

    Reference: Polyak & Juditsky (1992); timm `timm.utils.ModelEmaV3`;
    lucidrains' ema-pytorch.
    """

    _prefix = "ema"
    _counter = "updates"

    def __init__(self, decay=0.999, warmup_power=2 / 3, warmup_gamma=1.0, update_after_step=0,
                 batch_norm="average", recalibrate_data=None, recalibrate_steps=None,
                 validation_data=None, final_weights="average"):
        self.decay = _validation.rate(decay, "decay")
        self.warmup_power = (None if warmup_power is None
                             else _validation.positive(warmup_power, "warmup_power"))
        self.warmup_gamma = _validation.positive(warmup_gamma, "warmup_gamma")
        self.update_after_step = _validation.non_negative_int(
            update_after_step, "update_after_step")
        self.batch_norm = _validation.one_of(batch_norm, "batch_norm", ("average", "recalibrate"))
        super().__init__(recalibrate_data, recalibrate_steps, validation_data, final_weights)
        self.updates = 0

    def _recalibrates(self):
        return self.batch_norm == "recalibrate"

    def _variables_to_average(self, model):
        variables = list(model.trainable_variables)
        if self.batch_norm == "average":
            variables += [s for layer in batch_norm._batch_norm_layers(model)
                          for s in (layer.moving_mean, layer.moving_variance)]
        return variables

    def on_train_batch_end(self, batch, logs=None):
        self.model  # noqa: B018 -- with JAX, brings the model's variables up to date
        self.updates += 1
        t = self.updates - self.update_after_step - 1
        if t <= 0:
            _weight_average.assign(self._averages, self._variables)
            return
        decay = self.decay
        if self.warmup_power is not None:
            decay = min(decay, 1.0 - (1.0 + t / self.warmup_gamma) ** -self.warmup_power)
        self._lerp(1.0 - decay)

    def on_epoch_end(self, epoch, logs=None):
        if self.validation_data is not None and self.updates:
            self._evaluate(logs)

    def get_config(self):
        return {"decay": self.decay, "warmup_power": self.warmup_power,
                "warmup_gamma": self.warmup_gamma, "update_after_step": self.update_after_step,
                "batch_norm": self.batch_norm, **self._data_config()}
