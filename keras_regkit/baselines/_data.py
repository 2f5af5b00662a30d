"""CIFAR-10 for the baseline: the prepared tensorflow-datasets copy, read and checked.

`load_cifar10` reads the prepared dataset with `tfds.load(..., download=False)`
(never downloads), says how to provide it when it is missing
(`CIFAR10NotFoundError`) and which folder is unreadable when it is corrupt
(`CIFAR10ReadError`), then builds three pipelines (`_pipeline.make_pipeline`'s
stages): a shuffled, optionally augmented training stream, an un-augmented pass
over the same training subset (to measure the real train accuracy for the
train-test gap), and the test set.
"""

import dataclasses
import logging
import os
import re

from keras_regkit import _validation
from keras_regkit.baselines._errors import BaselineInputError
from keras_regkit.baselines._pipeline import channel_stats
from keras_regkit.baselines._pipeline import checked_pipeline
from keras_regkit.baselines._pipeline import dataset_size
from keras_regkit.baselines._pipeline import read_through

__all__ = ["CIFAR10Data", "CIFAR10NotFoundError", "CIFAR10ReadError", "load_cifar10"]


class CIFAR10NotFoundError(FileNotFoundError):
    """CIFAR-10 is not prepared in the tensorflow-datasets data directory.

    The message is one paragraph telling how to provide the data; command-line
    tools print it as is, without a traceback.
    """


class CIFAR10ReadError(BaselineInputError):
    """CIFAR-10's files are in the data directory but cannot be read (corrupt,
    truncated or not tensorflow-datasets' own); the message names the folder."""


def _unreadable(data_dir, error):
    # TensorFlow's op errors begin with the function's internal name.
    detail = " ".join(re.sub(r"\{\{function_node [^}]*\}\}", "", str(error)).split())
    if len(detail) > 300:
        detail = detail[:300] + "..."
    return CIFAR10ReadError(
        f"CIFAR-10 in the tensorflow-datasets directory {data_dir!r} cannot be read "
        f"({type(error).__name__}: {detail}). Replace it with a freshly prepared copy "
        "(the folder that holds `cifar10/3.0.2/`) and pass it with --data-dir "
        "(or data_dir= in Python, or TFDS_DATA_DIR)."
    )


def resolve_data_dir(data_dir=None):
    """The tfds data directory in use: `data_dir`, else `$TFDS_DATA_DIR`, else tfds's default."""
    data_dir = _validation.optional_path(data_dir, "data_dir")
    if data_dir is not None:
        return os.path.abspath(os.path.expanduser(data_dir))
    from_env = os.environ.get("TFDS_DATA_DIR")
    if from_env:
        return os.path.abspath(os.path.expanduser(from_env))
    return os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def missing_data_message(data_dir, detail=None):
    """The one-paragraph explanation shown when CIFAR-10 cannot be read."""
    message = (
        f"CIFAR-10 was not found in the tensorflow-datasets directory {data_dir!r}, "
        "and keras_regkit never downloads it. Provide a prepared copy (the folder "
        "that holds `cifar10/3.0.2/`) with `--data-dir DIR` on the command line, "
        "`data_dir=DIR` in Python, or the environment variable TFDS_DATA_DIR=DIR. "
        "To prepare one, run on a machine with internet access "
        "`python -c \"import tensorflow_datasets as tfds; "
        "tfds.builder('cifar10', data_dir='DIR').download_and_prepare()\"` "
        "(or `tfds build cifar10 --data_dir DIR`) and copy DIR over."
    )
    if detail:
        message += f" (tensorflow-datasets said: {detail})"
    return message


@dataclasses.dataclass(frozen=True)
class CIFAR10Data:
    """The pipelines returned by `load_cifar10`.

    Attributes:
        train: Shuffled (and, if asked, augmented) batches `(images, labels)`.
        train_eval: The same training subset, in order, never augmented: for
            measuring train accuracy at the end of training.
        test: Test batches, in order.
        num_train: Number of training examples used.
        num_test: Number of test examples used.
        mean: Per-channel mean subtracted (after scaling to [0, 1]); zeros
            unless `standardize=True`.
        std: Per-channel divisor; ones unless `standardize=True`.
        data_dir: The tensorflow-datasets directory read.
        validation: Batches of the validation images carved from the train
            split (`validation_size`), in order, never augmented; `None`
            without them.
        num_validation: Number of validation examples (`0` without them).
    """

    train: object
    train_eval: object
    test: object
    num_train: int
    num_test: int
    mean: tuple
    std: tuple
    data_dir: str
    validation: object = None
    num_validation: int = 0


def load_cifar10(
    batch_size=128,
    data_dir=None,
    augment=False,
    train_limit=None,
    test_limit=None,
    standardize=False,
    *,
    shuffle_buffer=None,
    seed=None,
    validation_size=None,
):
    """Loads CIFAR-10 from a prepared tensorflow-datasets directory.

    Reads `tfds.load("cifar10", download=False)` from `data_dir`, else
    `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`; it never downloads. Images
    are scaled to `[0, 1]`, or, with `standardize=True`, standardized per
    channel with the mean and std of the training subset used. Training
    batches are shuffled and, with `augment=True`, randomly flipped and
    pad-cropped on the fly (see `make_pipeline`).

    Args:
        batch_size: Positive int, the global batch size. Defaults to `128`.
        data_dir: tensorflow-datasets data directory (holding `cifar10/`).
        augment: Random horizontal flip and 4-pixel pad-crop for training.
        train_limit: Use only the first `train_limit` training images.
        test_limit: Use only the first `test_limit` test images.
        standardize: Per-channel standardization instead of plain [0, 1].
        shuffle_buffer: Shuffle buffer; defaults to the whole training subset.
        seed: Seed for shuffling and augmentation.
        validation_size: Carve this many validation images out of the train
            split, never the test split: the images right after the training
            subset (with `train_limit=None`, the last `validation_size` of the
            split, the training subset being the rest). For choosing
            hyperparameters (`keras_regkit.tuning`).

    Returns:
        A `CIFAR10Data` holding the `train`, `train_eval` and `test` pipelines
        and their sizes.

    Raises:
        CIFAR10NotFoundError: if the dataset is not prepared in the directory
            (the message says how to provide it).
        CIFAR10ReadError: if its files are there but cannot be read.
        BaselineInputError: if `train_limit + validation_size` exceeds the
            train split.
        ImportError: if `tensorflow-datasets` is not installed.
    """
    batch_size = _validation.positive_int(batch_size, "batch_size")
    train_limit = _validation.optional_positive_int(train_limit, "train_limit")
    test_limit = _validation.optional_positive_int(test_limit, "test_limit")
    validation_size = _validation.optional_positive_int(validation_size, "validation_size")
    if shuffle_buffer:  # `None` or 0: the whole training subset
        shuffle_buffer = _validation.positive_int(shuffle_buffer, "shuffle_buffer")
    return _load(batch_size, data_dir, augment=augment, train_limit=train_limit,
                 test_limit=test_limit, standardize=standardize,
                 shuffle_buffer=shuffle_buffer, seed=seed, validation_size=validation_size)


def load_for_run(settings, replicas=1):
    """The data of a run's `RunSettings` (already checked), batched for `replicas`."""
    return _load(settings.batch_size * replicas, settings.data_dir, augment=settings.augment,
                 train_limit=settings.train_limit, test_limit=settings.test_limit,
                 standardize=settings.standardize, shuffle_buffer=None,
                 seed=settings.data_seed, validation_size=None)


def _read_errors():
    """What tfds and tf.data raise for files that are there but not readable."""
    import tensorflow as tf
    from google.protobuf import message
    from google.protobuf import json_format

    return (OSError, ValueError, KeyError, json_format.Error, message.Error,
            tf.errors.OpError)


def _load(batch_size, data_dir, *, augment, train_limit, test_limit, standardize,
          shuffle_buffer, seed, validation_size):
    """`load_cifar10` for arguments already checked."""
    resolved_dir = resolve_data_dir(data_dir)
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # optional dependency
        raise ImportError(
            "load_cifar10 needs tensorflow-datasets: "
            "`pip install 'keras_regkit[cifar]'`."
        ) from error

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # tfds warns about the missing folder too
    try:
        train_raw, test_raw = tfds.load(
            "cifar10",
            split=["train", "test"],
            data_dir=resolved_dir,
            as_supervised=True,
            download=False,
            # We cache after `take`; tfds's own cache of the whole split would
            # be cut short by `take` and thrown away.
            read_config=tfds.ReadConfig(try_autocache=False),
        )
    except (AssertionError, FileNotFoundError) as error:
        # tfds signals "not prepared" with an AssertionError.
        detail = str(error).split(". ")[0]
        raise CIFAR10NotFoundError(missing_data_message(resolved_dir, detail)) from None
    except _read_errors() as error:  # there, but its description is not readable
        raise _unreadable(resolved_dir, error) from None
    finally:
        absl_logger.setLevel(level)

    validation_raw = None
    if validation_size is not None:
        try:
            split_size = dataset_size(train_raw)  # known from the metadata, without reading
        except _read_errors() as error:
            raise _unreadable(resolved_dir, error) from None
        if train_limit is None and validation_size >= split_size:
            raise BaselineInputError(
                f"`validation_size` must leave training images: the train split has "
                f"{split_size} images. Received: validation_size={validation_size}"
            )
        if train_limit is not None and train_limit + validation_size > split_size:
            raise BaselineInputError(
                f"The train split has {split_size} images: train_limit + validation_size "
                f"must be at most that. Received: train_limit={train_limit}, "
                f"validation_size={validation_size}"
            )
        if train_limit is None:
            train_limit = split_size - validation_size
        validation_raw = train_raw.skip(train_limit).take(validation_size).cache()
    if train_limit is not None:
        train_raw = train_raw.take(train_limit)
    if test_limit is not None:
        test_raw = test_raw.take(test_limit)
    # Decode once, keep the uint8 images in memory (shared by `train`,
    # `train_eval` and the statistics); the full first pass fills the caches.
    train_raw, test_raw = train_raw.cache(), test_raw.cache()
    try:
        num_train, num_test = read_through(train_raw), read_through(test_raw)
        num_validation = 0 if validation_raw is None else read_through(validation_raw)
    except _read_errors() as error:  # corrupt or truncated records
        raise _unreadable(resolved_dir, error) from None
    if num_train == 0 or num_test == 0:
        raise CIFAR10NotFoundError(
            missing_data_message(resolved_dir, "the train or test split is empty")
        )

    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if standardize:
        mean, std = channel_stats(train_raw)
    common = dict(mean=mean, std=std, seed=seed, cache=False, shuffle_buffer=None,
                  augment=False, training=False)
    return CIFAR10Data(
        train=checked_pipeline(train_raw, batch_size, **{
            **common, "training": True, "augment": augment,
            "shuffle_buffer": shuffle_buffer or num_train}),
        train_eval=checked_pipeline(train_raw, batch_size, **common),
        test=checked_pipeline(test_raw, batch_size, **common),
        num_train=num_train,
        num_test=num_test,
        mean=mean,
        std=std,
        data_dir=resolved_dir,
        validation=None if validation_raw is None else checked_pipeline(
            validation_raw, batch_size, **common),
        num_validation=num_validation,
    )
