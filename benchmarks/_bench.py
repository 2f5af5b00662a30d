"""What the benchmark scripts share: their flags, interleaved timing, tables and result files.

A script keeps only what is its own (its networks, arms and columns). Scripts
run as `python benchmarks/<name>.py` (or from this folder): Python then puts
this folder first on `sys.path`, so `import _bench` finds this module.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import keras
import numpy as np

_JIT_COMPILE = {"auto": "auto", "true": True, "false": False}


# Flags.


def argument_parser(doc):
    """An `ArgumentParser` described by the first line of the script's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def timing_parser(doc, *, rounds, steps, batch_size=None, jit_compile=False, names=None):
    """`argument_parser(doc)` with the flags of an interleaved timing.

    `--rounds` and `--steps` (their defaults), `--batch-size` when given a
    default, `--jit-compile auto|true|false` with `jit_compile=True` (read it
    with `jit_compile_value`), and with `names=(flag, names)` a flag (`--pairs`,
    `--arms`, ...) that picks some of `names`, all by default.
    """
    parser = argument_parser(doc)
    if names is not None:
        flag, choices = names
        parser.add_argument(flag, nargs="+", default=list(choices), choices=list(choices))
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--steps", type=int, default=steps)
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size)
    if jit_compile:
        parser.add_argument("--jit-compile", choices=list(_JIT_COMPILE), default="auto")
    return parser


def jit_compile_value(args):
    """`model.compile`'s `jit_compile` for the `--jit-compile` text."""
    return _JIT_COMPILE[args.jit_compile]


def run_arguments(parser, *, out):
    """Adds the flags of a training run: `--data-dir` (TFDS's; default: TFDS_DATA_DIR
    or TFDS's own), `--seed` (0) and `--out` (the folder for result files)."""
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out)


# Interleaved timing.


def interleaved(arm_a, arm_b, rounds, steps):
    """Times `arm_a(steps)` and `arm_b(steps)` alternately, `rounds` times.

    Each arm is a callable returning seconds per step. Who goes first
    alternates so that drift does not favour one arm; machine noise hits both.

    Returns:
        `{"ratio": median a/b, "a_ms", "b_ms": median ms/step, "ratio_iqr": [q1, q3]}`.
    """
    arm_a(2), arm_b(2)  # warm caches
    ratios, a_times, b_times = [], [], []
    for i in range(rounds):
        if i % 2:
            b, a = arm_b(steps), arm_a(steps)
        else:
            a, b = arm_a(steps), arm_b(steps)
        a_times.append(a)
        b_times.append(b)
        ratios.append(a / b)
    return {
        "ratio": statistics.median(ratios),
        "a_ms": 1000 * statistics.median(a_times),
        "b_ms": 1000 * statistics.median(b_times),
        "ratio_iqr": np.percentile(ratios, [25, 75]).tolist(),
    }


def compare(names, arms, rounds, steps):
    """Yields `(name, interleaved(*arms(name), rounds, steps))`, a name at a time.

    A generator, so that a table prints each row as soon as it is measured.
    """
    for name in names:
        arm_a, arm_b = arms(name)
        yield name, interleaved(arm_a, arm_b, rounds, steps)


def step_timer(model, optimizer, x, y, jit_compile="auto"):
    """`run(steps) -> seconds per train_on_batch step`; compiles `model` first.

    The loss is sparse categorical cross-entropy. One step runs here first, so
    tracing and building stay outside the timing.
    """
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  jit_compile=jit_compile)
    model.train_on_batch(x, y)

    def run(steps):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return (time.perf_counter() - start) / steps

    return run


def epoch_timer(build, callbacks, *, steps, batch_size, shape, seed=0):
    """`run(_) -> seconds per step of one fit epoch` of a model that `build()` makes.

    `build` runs after `keras.utils.set_random_seed(seed)`, so arms built with
    one seed start from the same weights; Adam 1e-3, sparse categorical
    cross-entropy, `steps` random batches (`random_batch`) unshuffled. The
    callbacks and the epoch-end work are inside the time; the argument of `run`
    is ignored (an epoch is `steps` steps).
    """
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x, y = random_batch(steps * batch_size, shape, seed=seed)

    def run(_steps):
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False,
                  callbacks=list(callbacks))
        return (time.perf_counter() - started) / steps

    return run


def random_batch(count, shape, *, high=1.0, seed=0):
    """`count` random float32 inputs of `shape`, uniform in [0, high), and labels 0-9."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, *shape), dtype=np.float32)
    if high != 1.0:
        x *= np.float32(high)
    return x, rng.integers(0, 10, size=(count,))


# Tables and result files.


def print_table(header, columns, rows):
    """Prints the machine line, `# header` and a Markdown table, a row as it comes.

    `rows` yields lists of cells (a generator, so each row is printed, and
    flushed, as soon as it is measured).
    """
    print(machine_line())
    print(f"# {header}")
    print_markdown(columns, rows)


def print_markdown(columns, rows):
    """Prints a Markdown table of `columns`, each row of `rows` flushed as it comes."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)


def time_cells(result):
    """`[arm a ms/step, arm b ms/step]` of an `interleaved` result, 1 decimal."""
    return [f"{result['a_ms']:.1f}", f"{result['b_ms']:.1f}"]


def ratio_cells(result):
    """`[median ratio, "low-high"]` of an `interleaved` result, 3 decimals."""
    low, high = result["ratio_iqr"]
    return [f"{result['ratio']:.3f}", f"{low:.3f}-{high:.3f}"]


def machine_line():
    """`# machine: ...`: CPU count, load average (1, 5, 15 min), Python, backend, versions."""
    import keras_regkit

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [d.device_type for d in tf.config.list_physical_devices()]
        version = f"TensorFlow {tf.__version__}, devices {devices}"
    elif backend == "jax":
        import jax

        version = f"JAX {jax.__version__} ({jax.devices()[0].platform})"
    else:
        version = backend
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load} at start; "
        f"Python {platform.python_version()}, {version}, "
        f"Keras {keras.__version__}, keras_regkit {keras_regkit.__version__}"
    )


def run_line(what, *details):
    """`what; host, N CPUs, keras version (backend)[, details]; command: the command line`."""
    where = [platform.node(), f"{os.cpu_count()} CPUs",
             f"keras {keras.__version__} ({keras.backend.backend()})", *details]
    return f"{what}; {', '.join(where)}; command: {' '.join(sys.argv)}"


def json_lines(out, name):
    """Creates `<out>/<name>` empty; returns `write(row)`, which appends `row` as a JSON line."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    open(path, "w").close()

    def write(row):
        with open(path, "a") as file:
            file.write(json.dumps(row) + "\n")

    return write
