"""Crash and resume: a `model.fit` killed mid-epoch resumes to the uninterrupted weights.

A `model.fit` (TensorFlow) in a subprocess is killed with SIGKILL in the
middle of an epoch, then resumed in another subprocess with
`keras.callbacks.BackupAndRestore`; it must end with the weights and optimizer
state of an uninterrupted run.
"""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

# --- 2. crash (SIGKILL mid-epoch) and resume with BackupAndRestore ------------------

_CRASH_SCRIPT = r'''
import json, os, pathlib, signal, sys
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras
import keras_regkit
from keras_regkit import CorrectedElasticNet, DecoupledWeightDecay, L2, MaxNorm

work = pathlib.Path(sys.argv[1])
EPOCHS, BATCH, KILL_EPOCH, KILL_BATCH = 4, 16, 2, 3
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(128, 1))).astype("float32")


def build():
    keras.utils.clear_session()
    keras.utils.set_random_seed(1234)
    init = lambda s: keras.initializers.GlorotUniform(seed=s)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="h1", kernel_initializer=init(1),
                           kernel_regularizer=CorrectedElasticNet(1e-3, 1e-2)),
        keras.layers.Dense(16, activation="tanh", name="h2", kernel_initializer=init(2),
                           kernel_regularizer=L2(1e-3), kernel_constraint=MaxNorm(1.0)),
        keras.layers.Dense(1, name="out", kernel_initializer=init(3),
                           kernel_regularizer=CorrectedElasticNet(1e-3, 1e-2)),
    ], name="crash")
    model.compile(
        optimizer=DecoupledWeightDecay(keras.optimizers.Adam(1e-2), weight_decay=1e-2,
                                       exclude=["*/bias"], l1=1e-4),
        loss="mse",
    )
    return model


class KillOnce(keras.callbacks.Callback):
    """SIGKILL (no clean-up, no Python exception) mid-epoch, only on the first run."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        marker = work / "killed"
        if self.epoch == KILL_EPOCH and batch == KILL_BATCH and not marker.exists():
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)


def save(model, name, history):
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.weights)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    np.savez(work / f"{name}.npz", **arrays)
    flags = [l.kernel_regularizer.correction_applied for l in model.layers
             if isinstance(l.kernel_regularizer, CorrectedElasticNet)]
    (work / f"{name}.json").write_text(json.dumps({
        "epochs_run": len(history.history["loss"]),
        "iterations": int(model.optimizer.iterations), "flags": flags}))


backup = work / "backup"
if not (work / "killed").exists():  # first run: reference first, then the doomed run
    model = build()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                        callbacks=[keras_regkit.ElasticNetCorrection()])
    save(model, "reference", history)
else:
    meta = json.loads((backup / "training_metadata.json").read_text())
    (work / "backup_seen.json").write_text(json.dumps(meta))
model = build()
history = model.fit(
    x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
    callbacks=[keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch"),
               keras_regkit.ElasticNetCorrection(), KillOnce()],
)
save(model, "resumed", history)
'''


def _run_script(code, args, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=helpers.REPO_ROOT, env=helpers.child_env(),
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.tensorflow_only
def test_fit_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    """`save_freq="epoch"`: the kill in epoch 2 resumes from the end of epoch 1.

    Keras 3's `BackupAndRestore` restores weights, optimizer state (the
    optimizer is saved with the model's weights) and the epoch number, but not
    the batch index: with an integer `save_freq` a resumed run would restart
    the epoch from its first batch on mid-epoch weights. So the backup is
    taken at epoch ends, and the batches of the killed epoch are replayed.
    """
    first = _run_script(_CRASH_SCRIPT, [str(tmp_path)])
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert (tmp_path / "killed").exists() and (tmp_path / "reference.json").exists()
    assert not (tmp_path / "resumed.json").exists()

    second = _run_script(_CRASH_SCRIPT, [str(tmp_path)])
    assert second.returncode == 0, second.stderr[-5000:]

    backup_seen = json.loads((tmp_path / "backup_seen.json").read_text())
    assert backup_seen["epoch"] == 2  # epochs 0 and 1 were finished and backed up
    reference = json.loads((tmp_path / "reference.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert reference["epochs_run"] == 4 and resumed["epochs_run"] == 2
    assert resumed["iterations"] == reference["iterations"] == 4 * 8
    assert resumed["flags"] == reference["flags"] == [True, True]  # corrected once
    want = dict(np.load(tmp_path / "reference.npz"))
    got = dict(np.load(tmp_path / "resumed.npz"))
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)
    assert not (tmp_path / "backup").exists()  # deleted at the end of a finished fit
