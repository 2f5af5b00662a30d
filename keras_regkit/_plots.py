"""Where `RegularizationMonitor`'s per-variable rows go: a PNG and TensorBoard scalars.

matplotlib and TensorFlow are imported only when a row is drawn or written
(the `monitor` extra).
"""

import math

QUANTITIES = ("penalty", "norm", "zero_fraction", "saturation", "decay_penalty")


def plot_statistics(rows, path):
    """Draws `rows` (from `RegularizationMonitor`) as one PNG: a panel per quantity."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    keys = [key for key in QUANTITIES if any(row[key] is not None for row in rows)]
    variables = list(dict.fromkeys(row["variable"] for row in rows))
    columns = min(len(keys), 3)
    lines = math.ceil(len(keys) / columns)
    figure, axes = pyplot.subplots(lines, columns, figsize=(5 * columns, 3.5 * lines), squeeze=False)
    for axis, key in zip(axes.flat, keys):
        for variable in variables:
            points = [(r["epoch"], r[key]) for r in rows if r["variable"] == variable and r[key] is not None]
            if points:
                epochs, values = zip(*points)
                axis.plot([e + 1 for e in epochs], values, marker=".", label=variable)
        axis.set_title(key)
        axis.set_xlabel("epoch")
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    if len(variables) <= 12:
        axes.flat[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def write_tensorboard(writer, epoch, rows):
    """Writes each row's quantities as TensorBoard scalars `<quantity>/<variable>` at `epoch`."""
    import tensorflow as tf

    with writer.as_default():
        for row in rows:
            for key in QUANTITIES:
                if row[key] is not None:
                    tf.summary.scalar(f"{key}/{row['variable']}", row[key], step=epoch)
        writer.flush()
