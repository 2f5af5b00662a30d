"""How the `keras-regkit` command starts (issue 21, item 3).

`--help` and argument errors answer at once, without Keras or TensorFlow (the
console script's launcher `keras_regkit_cli` defers `keras_regkit/__init__.py`
until a command runs); a command that runs has the whole package and no
TensorFlow start-up lines on stderr; and a library user's `import keras_regkit`
reads no `sys.argv` and touches no file descriptor. Each check runs in a fresh
process, since this one has imported Keras long ago.
"""

import json
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

from tests import helpers

STARTUP = helpers.REPO_ROOT / "keras_regkit" / "_startup.py"
TENSORFLOW_NOISE = ("oneDNN", "cuda", "absl", "cpu_feature_guard")


def _python(code, *, tmp_path, env=None, timeout=300):
    """Runs `code` in a fresh process without TF_CPP_MIN_LOG_LEVEL (as a user's shell)."""
    env = helpers.child_env(drop=("TF_CPP_MIN_LOG_LEVEL",), **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _last_json(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_help_and_argument_errors_import_no_keras(tmp_path):
    cases = [
        (["--help"], 0),
        (["cifar10", "--help"], 0),
        (["sweep", "--help"], 0),
        ([], 2),
        (["cifar10", "--epochs", "0", "--out", "run"], 2),
        (["cifar10", "--variant", "l3", "--out", "run"], 2),
        (["cifar10", "--data-dir", "", "--out", "run"], 2),  # refused by RunSettings
        (["sweep", "cifar10", "--param", "l3", "--values", "1e-3"], 2),
        (["compare"], 2),
    ]
    code = f"""
        import contextlib, io, json, sys
        import keras_regkit_cli
        report = []
        for argv, _ in {cases!r}:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    code = keras_regkit_cli.main(argv)
                except SystemExit as exit_:
                    code = ("SystemExit", exit_.code)
            loaded = [name for name in ("keras", "tensorflow", "keras_regkit", "numpy")
                      if name in sys.modules]
            report.append([code, loaded])
        print(json.dumps(report))
    """
    report = _last_json(_python(code, tmp_path=tmp_path))
    for (argv, expected), (code, loaded) in zip(cases, report):
        assert code == expected, (argv, code)
        # Nothing heavy, and no half-made `keras_regkit` left for a later import.
        assert loaded == [], (argv, loaded)
    assert not (tmp_path / "run").exists()


def test_a_command_runs_with_the_whole_package_and_no_tensorflow_lines(tmp_path):
    """`compare` of a folder that is no run: the package is imported whole (classes
    registered) before the command runs, and stderr holds only the error."""
    (tmp_path / "not_a_run").mkdir()
    code = """
        import json, sys
        import keras_regkit_cli
        code = keras_regkit_cli.main(["compare", "not_a_run"])
        import keras, keras_regkit
        print(json.dumps({
            "code": code,
            "all": sorted(keras_regkit.__all__) == sorted(n for n in keras_regkit.__all__
                                                          if hasattr(keras_regkit, n)),
            "registered": keras.saving.get_registered_object("keras_regkit>GroupLasso")
                          is keras_regkit.GroupLasso,
        }))
    """
    result = _python(code, tmp_path=tmp_path)
    report = _last_json(result)
    assert report == {"code": 2, "all": True, "registered": True}
    assert result.stderr.splitlines() == [
        "keras-regkit: error: 'not_a_run' is not a finished run folder: it has no "
        "metrics.json (a run writes it last)."], result.stderr


def test_the_console_script_answers_help_at_once():
    script = pathlib.Path(sys.executable).with_name("keras-regkit")
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    assert "keras_regkit_cli" in script.read_text(), (
        f"{script} is stale: `pip install -e .` regenerates it")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                                env=helpers.child_env(drop=("TF_CPP_MIN_LOG_LEVEL",)),
                                timeout=300)
        times.append(time.perf_counter() - started)
        assert result.returncode == 0 and "usage: keras-regkit" in result.stdout
        assert result.stderr == ""
    print(f"keras-regkit --help: {', '.join(f'{t:.2f}' for t in times)} s")
    assert min(times) < 2.0, times  # was ~8 s with Keras imported first; the machine is noisy


def test_python_m_keras_regkit_cli_answers_help_at_once(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_regkit_cli", "cifar10", "--epochs", "0", "--out", "x"],
        cwd=tmp_path, env=helpers.child_env(drop=("TF_CPP_MIN_LOG_LEVEL",)),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "keras-regkit cifar10: error: argument --epochs: must be an integer >= 1")
    for noise in TENSORFLOW_NOISE:
        assert noise not in result.stderr, result.stderr


@pytest.mark.parametrize("argv, orig_argv", [
    (["/venv/bin/keras-regkit", "cifar10"], ["/venv/bin/python", "/venv/bin/keras-regkit", "cifar10"]),
    (["-m", "--help"], ["python", "-m", "keras_regkit", "--help"]),  # as `python -m` has it
])
def test_importing_the_package_reads_no_argv_and_touches_no_descriptor(tmp_path, argv, orig_argv):
    """Even with the command line's `sys.argv`, `import keras_regkit` dups no descriptor
    and sets no TF_CPP_MIN_LOG_LEVEL (JAX, which Keras may import, sets its own default)."""
    code = f"""
        import json, os, sys
        sys.argv, sys.orig_argv = {argv!r}, {orig_argv!r}
        calls, writers = [], []
        for name in ("dup", "dup2"):
            def spy(*args, _real=getattr(os, name), _name=name):
                calls.append(_name)
                return _real(*args)
            setattr(os, name, spy)
        environ_setitem = type(os.environ).__setitem__
        def setitem(self, key, value):
            if key == "TF_CPP_MIN_LOG_LEVEL":
                frame = sys._getframe(1)
                while frame.f_globals.get("__name__") in ("os", "_collections_abc"):
                    frame = frame.f_back
                writers.append(frame.f_globals.get("__name__"))
            environ_setitem(self, key, value)
        type(os.environ).__setitem__ = setitem
        import keras_regkit
        print(json.dumps({{"calls": calls, "ours": [w for w in writers
                                                    if w.startswith("keras_regkit")]}}))
    """
    result = _python(code, tmp_path=tmp_path)
    assert _last_json(result) == {"calls": [], "ours": []}
    assert len(result.stdout.splitlines()) == 1  # and it prints nothing


def _quiet_start(tmp_path, verbose, *, env=None):
    """Runs `_startup.quiet_tensorflow_start(verbose)` alone (not through the package)."""
    code = f"""
        import importlib.util, json, os, sys
        spec = importlib.util.spec_from_file_location("startup", {str(STARTUP)!r})
        startup = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(startup)
        captured = startup.quiet_tensorflow_start(verbose={verbose})
        print(json.dumps({{"captured": captured, "tensorflow": "tensorflow" in sys.modules,
                           "level": os.environ.get("TF_CPP_MIN_LOG_LEVEL")}}))
    """
    return _python(code, tmp_path=tmp_path, env=env)


@pytest.mark.tensorflow_only
def test_quiet_start_keeps_tensorflow_start_up_lines_off_stderr(tmp_path):
    result = _quiet_start(tmp_path, 1)
    assert _last_json(result) == {"captured": True, "tensorflow": True, "level": "2"}
    for noise in TENSORFLOW_NOISE:
        assert noise not in result.stderr, result.stderr


@pytest.mark.parametrize("verbose, env, level", [
    (1, {"TF_CPP_MIN_LOG_LEVEL": "0"}, "0"),  # the user's level is respected
    (2, {}, "2"),  # --verbose 2: the start is not captured
])
def test_quiet_start_leaves_tensorflow_alone(tmp_path, verbose, env, level):
    result = _quiet_start(tmp_path, verbose, env=env)
    assert _last_json(result) == {"captured": False, "tensorflow": False, "level": level}


def test_a_failing_tensorflow_import_is_replayed_not_hidden(tmp_path):
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'native noise from a broken install\\n')\n"
        "raise ImportError('broken tensorflow')\n")
    result = _quiet_start(tmp_path, 1, env={"PYTHONPATH": str(tmp_path / "fake")})
    assert _last_json(result) == {"captured": False, "tensorflow": False, "level": None}
    assert "native noise from a broken install" in result.stderr


def test_a_failing_package_import_leaves_no_half_made_package(tmp_path):
    package = tmp_path / "broken_package"
    package.mkdir()
    (package / "__init__.py").write_text("RAN = True\nraise RuntimeError('broken __init__')\n")
    (package / "light.py").write_text("VALUE = 1\n")
    code = f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import keras_regkit_cli
        deferred = keras_regkit_cli.DeferredImport("broken_package")
        from broken_package import light  # a submodule imports without __init__.py
        ran_early = hasattr(sys.modules["broken_package"], "RAN")
        try:
            deferred()
        except RuntimeError as error:
            message = str(error)
        after_failure = sorted(n for n in sys.modules if n.startswith("broken_package"))
        deferred.discard_unless_done()
        print(json.dumps([ran_early, message, after_failure,
                          sorted(n for n in sys.modules if n.startswith("broken_package"))]))
    """
    assert _last_json(_python(code, tmp_path=tmp_path)) == [
        False, "broken __init__", ["broken_package.light"], []]
