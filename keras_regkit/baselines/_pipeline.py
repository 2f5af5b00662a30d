"""The `tf.data` stages of the CIFAR-10 baseline: from `(uint8 image, label)` to batches.

Cache, shuffle, augment (random flip and pad-crop, seeded per element),
scale or standardize, batch, prefetch: `make_pipeline`. Reading the prepared
dataset (tensorflow-datasets) is `_data`'s.
"""

import numpy as np

from keras_regkit import _validation

CIFAR10_SHAPE = (32, 32, 3)
CIFAR10_CLASSES = 10
PAD = 4  # pixels of zero padding before the random 32x32 crop

__all__ = ["channel_stats", "make_pipeline"]


def _import_tf():
    import tensorflow as tf

    return tf


def dataset_size(dataset):
    """The number of elements of `dataset`: its cardinality when known, else read through."""
    cardinality = int(dataset.cardinality())
    if cardinality >= 0:
        return cardinality
    return read_through(dataset)


def read_through(dataset):
    """Reads `dataset` to its end once and returns its length.

    On a `.cache()`d dataset this completes the in-memory cache. Keras stops
    reading after the known number of steps, before the end-of-data signal,
    so without this first full pass the cache would be thrown away (with a
    warning) instead of being kept.
    """
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


def channel_stats(dataset):
    """Per-channel mean and std of `(uint8 image, label)` pairs, scaled to [0, 1].

    Computed in float64 over every pixel of every image in one pass.
    """
    total = np.zeros(3)
    total_sq = np.zeros(3)
    pixels = 0
    for images, _ in dataset.batch(1024).as_numpy_iterator():
        values = images.astype(np.float64).reshape(-1, images.shape[-1]) / 255.0
        total += values.sum(axis=0)
        total_sq += np.square(values).sum(axis=0)
        pixels += values.shape[0]
    if pixels == 0:
        raise ValueError("Cannot standardize with an empty training set.")
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - np.square(mean), 0.0))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _augment(image, seeds):
    """Random horizontal flip, then a random 32x32 crop of the zero-padded 40x40 image.

    Stateless ops seeded per element: `seeds` is a pair of int64 drawn from
    `tf.data.Dataset.random`, fresh on every epoch.
    """
    tf = _import_tf()
    size = CIFAR10_SHAPE[0]
    flip_seed = tf.stack([seeds[0], seeds[1]])
    crop_seed = tf.stack([seeds[1], seeds[0]])
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    image = tf.image.resize_with_crop_or_pad(image, size + 2 * PAD, size + 2 * PAD)
    return tf.image.stateless_random_crop(image, CIFAR10_SHAPE, seed=crop_seed)


def make_pipeline(
    dataset,
    batch_size,
    *,
    training=False,
    augment=False,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    shuffle_buffer=None,
    seed=None,
    cache=True,
):
    """Turns `(uint8 image, int label)` pairs into batches ready for `fit`.

    Order of stages: cache (the raw uint8 images: 4x smaller than floats) ->
    shuffle (training only) -> augment (training only: random horizontal flip,
    then a random 32x32 crop of the image zero-padded to 40x40) -> scale to
    `[0, 1]`, then `(x - mean) / std` -> batch -> prefetch. Sharding across
    workers is by data (`AutoShardPolicy.DATA`), so multi-worker runs must use
    the same shuffle `seed` on every worker.

    Args:
        dataset: A `tf.data.Dataset` of `(image, label)` with uint8 images of
            shape `(32, 32, 3)`.
        batch_size: Positive int, the global batch size.
        training: Whether to shuffle (and augment, if `augment`).
        augment: Random flip + pad-crop on the fly (training only).
        mean, std: Per-channel statistics applied after scaling to [0, 1].
        shuffle_buffer: Shuffle buffer size; defaults to the whole dataset.
        seed: Seed for shuffling and augmentation (`None`: random).
        cache: Keep the decoded uint8 images in memory after the first pass.

    Returns:
        A `tf.data.Dataset` of `(float32 images, int32 labels)` batches.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> images = np.full((5, 32, 32, 3), 255, dtype=np.uint8)
    >>> raw = tf.data.Dataset.from_tensor_slices((images, np.arange(5)))
    >>> x, y = next(iter(make_pipeline(raw, batch_size=4)))
    >>> tuple(x.shape), x.dtype.name, float(x.numpy().max()), y.numpy().tolist()
    ((4, 32, 32, 3), 'float32', 1.0, [0, 1, 2, 3])
    """
    batch_size = _validation.positive_int(batch_size, "batch_size")
    if training and shuffle_buffer is not None:
        shuffle_buffer = _validation.positive_int(shuffle_buffer, "shuffle_buffer")
    return checked_pipeline(dataset, batch_size, training=training, augment=augment,
                            mean=mean, std=std, shuffle_buffer=shuffle_buffer, seed=seed,
                            cache=cache)


def checked_pipeline(dataset, batch_size, *, training, augment, mean, std, shuffle_buffer,
                     seed, cache):
    """`make_pipeline` for arguments already checked."""
    tf = _import_tf()
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    do_augment = bool(training and augment)

    def prepare(image, label):
        image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
        return image, tf.cast(label, tf.int32)

    def augment_and_prepare(example, seeds):
        image, label = example
        return prepare(_augment(image, seeds), label)

    if cache:
        dataset = dataset.cache()
    if training:
        if shuffle_buffer is None:
            shuffle_buffer = max(dataset_size(dataset), 1)
        dataset = dataset.shuffle(
            shuffle_buffer,
            seed=seed,
            reshuffle_each_iteration=True,
        )
    if do_augment:
        # Per-element seeds, re-drawn every epoch (a seeded stateful op in a
        # `map` would repeat the same augmentations each epoch).
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds.batch(2)))
        dataset = dataset.map(augment_and_prepare, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)
