"""What every timing benchmark here shares: interleaved A/B timing and the machine line."""

import os
import platform
import statistics
import time

import keras
import numpy as np


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


def step_timer(model, x, y):
    """`run(steps) -> seconds per train_on_batch step` for a compiled `model`.

    One step runs here first, so tracing and building stay outside the timing.
    """
    model.train_on_batch(x, y)

    def run(steps):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return (time.perf_counter() - start) / steps

    return run


def timing_arguments(parser, *, rounds, steps, batch_size=None):
    """Adds `--rounds`, `--steps` (and `--batch-size` when given a default)."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--steps", type=int, default=steps)
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size)


def print_ratio_table(header, columns, rows):
    """Prints the machine line, `# header` and a Markdown table, a row as it comes.

    `rows` yields lists of cells (a generator, so each row is printed, and
    flushed, as soon as it is measured).
    """
    print(machine_line())
    print(f"# {header}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)


def ratio_cells(result):
    """`[median ratio, "low-high"]` of an `interleaved` result, 3 decimals."""
    low, high = result["ratio_iqr"]
    return [f"{result['ratio']:.3f}", f"{low:.3f}-{high:.3f}"]


def jit_compile_argument(parser):
    """Adds `--jit-compile auto|true|false`; returns the text -> `jit_compile` mapping."""
    parser.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto")
    return {"auto": "auto", "true": True, "false": False}


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
