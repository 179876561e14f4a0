"""The `fastopt` command's jobs at tiny sizes, run as a user runs them (a subprocess, from tests/ so
that the source folder cannot shadow the installed package): the PNGs exist and decode, the printed
tables hold numbers, Adam reaches the Rosenbrock minimum, training beats chance, and a missing demo
extra gives a message rather than a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib", reason="the demo extra (matplotlib) is not installed")
pytest.importorskip("sklearn", reason="the demo extra (scikit-learn) is not installed")

from repo_paths import ROOT  # noqa: E402

HERE = os.path.dirname(__file__)
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"


def fastopt(*args, cwd=HERE):
    out = subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True, cwd=cwd,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def assert_png(path):
    import matplotlib.image

    assert os.path.exists(path), path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    image = matplotlib.image.imread(str(path))  # decodes the whole image: a truncated file fails
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def table_rows(stdout, first_words):
    """Rows of the printed tables that start with one of first_words, split into fields."""
    return [line.split() for line in stdout.splitlines() if line.split()[:1] and line.split()[0] in first_words]


RACERS = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "AdamW")


def test_race_table_plot_and_adam_reaches_the_rosenbrock_minimum(tmp_path):
    out = fastopt("race", "--steps", "1500", "--functions", "rosenbrock", "saddle", "--out", str(tmp_path))
    assert_png(tmp_path / "race.png")
    rows = table_rows(out, RACERS)
    assert len(rows) == 2 * len(RACERS), out
    for row in rows:  # optimizer, lr, steps (or -), final loss, final point
        assert re.fullmatch(NUMBER, row[1]) and re.fullmatch(r"\d+|-", row[2]), row
        assert re.fullmatch(NUMBER, row[3]), row
    rosenbrock = out.split("== saddle")[0]
    adam = next(r for r in table_rows(rosenbrock, ("Adam",)))
    assert adam[2] != "-", "Adam did not come within 1e-2 of (1, 1) on Rosenbrock"
    x, y = (float(v) for v in re.findall(NUMBER, " ".join(adam[4:])))
    assert abs(x - 1) < 1e-2 and abs(y - 1) < 1e-2, adam


def test_race_in_process_every_step_through_fastopt():
    """The same check on the returned path, and a learning rate set from the command line's syntax."""
    from fastopt.demo import race

    result = race.run_one(race.SURFACES["rosenbrock"], "adam", race.DEFAULT_LRS["rosenbrock"]["adam"], 1500)
    assert result.reached is not None and abs(result.path[-1] - 1).max() < 1e-2
    assert race.parse_lrs(["adam=0.1", "SGD=1e-3"]) == {"adam": 0.1, "sgd": 1e-3}
    for bad in (["adam"], ["adam=x"], ["adabelief=0.1"], ["adam=-1"]):
        with pytest.raises(ValueError):
            race.parse_lrs(bad)


def test_race_lr_flag_is_used(tmp_path):
    out = fastopt("race", "--steps", "50", "--functions", "valley", "--optimizers", "adam", "sgd",
                  "--lr", "adam=0.3", "sgd=0.001", "--out", str(tmp_path))
    lrs = {row[0]: float(row[1]) for row in table_rows(out, RACERS)}
    assert lrs == {"Adam": 0.3, "SGD": 0.001}


def test_train_gradcheck_table_plot_and_accuracy_above_chance(tmp_path):
    out = fastopt("train", "--epochs", "2", "--optimizers", "adam", "sgd", "--penalty", "elastic",
                  "--out", str(tmp_path))
    assert_png(tmp_path / "train.png")
    errors = [float(e) for e in re.findall(r"max relative error (" + NUMBER + ")", out)]
    assert len(errors) == 2 and all(e <= 1e-5 for e in errors), out
    rows = table_rows(out, RACERS)
    assert len(rows) == 4, out  # 2 models x 2 optimizers
    for row in rows:  # optimizer, lr, final loss, val acc %, best %, time
        assert all(re.fullmatch(NUMBER, v) for v in row[1:5]), row
        assert float(row[3]) > 50, f"validation accuracy {row[3]}% after 2 epochs (chance: 10%)"


def test_train_schedules_and_models(tmp_path):
    out = fastopt("train", "--epochs", "1", "--models", "linear", "--optimizers", "momentum",
                  "--schedule", "step", "--batch-size", "128", "--penalty", "none", "--out", str(tmp_path))
    assert "schedule step" in out and len(table_rows(out, RACERS)) == 1


def test_train_with_each_state_precision_shows_memory_and_learns(tmp_path):
    """--state-dtypes trains Adam and AdamW (the default with it) once per state precision; the table's last
    column is the optimizer's state in KiB: bfloat16 half of float32's, 8-bit about a quarter (the mlp's
    64 x 64 first layer is the one tensor of >= 4096 elements, the others keep float32 state)."""
    out = fastopt("train", "--epochs", "3", "--models", "mlp", "--state-dtypes", "float32", "bfloat16", "int8",
                  "--out", str(tmp_path))
    assert_png(tmp_path / "train.png")
    rows = {(row[0], row[1]): row for row in table_rows(out, ("Adam", "AdamW"))}
    assert set(rows) == {(o, d) for o in ("Adam", "AdamW") for d in ("float32", "bfloat16", "int8")}, out
    for (name, dtype), row in rows.items():  # optimizer, dtype, lr, final loss, val acc, best, time, KiB, "KiB"
        assert row[-1] == "KiB" and float(row[4]) > 80, row
    for name in ("Adam", "AdamW"):
        kib = {d: float(rows[(name, d)][-2]) for d in ("float32", "bfloat16", "int8")}
        assert kib["bfloat16"] == pytest.approx(kib["float32"] / 2, rel=1e-3), kib
        assert kib["int8"] < 0.6 * kib["float32"], kib
        acc = {d: float(rows[(name, d)][4]) for d in ("float32", "bfloat16", "int8")}
        assert abs(acc["int8"] - acc["float32"]) < 3 and abs(acc["bfloat16"] - acc["float32"]) < 3, acc


def test_train_state_dtypes_refuses_optimizers_without_them(tmp_path):
    err = usage_error("train", "--state-dtypes", "bfloat16", "--optimizers", "adam", "sgd", "--out", str(tmp_path))
    assert err.startswith("usage: fastopt train") and "--state-dtypes applies to adam, adamw, momentum" in err, err
    assert err.splitlines()[-1].endswith("leave out --optimizers sgd (or pass --optimizers adam adamw)"), err
    assert "runs of" not in err
    # LAMB's per-tensor norms keep float32 state only, in every precision asked for
    err = usage_error("train", "--state-dtypes", "int8", "--optimizers", "lion", "lamb", "--out", str(tmp_path))
    assert "--state-dtypes applies to adam, adamw, momentum, nesterov, adagrad, rmsprop, nadam, radam, adamax, " \
        "adadelta, asgd, rprop, lion only" in err, err
    assert err.splitlines()[-1].endswith("leave out --optimizers lamb (or pass --optimizers adam adamw)"), err


def test_train_compact_state_of_a_rule_optimizer(tmp_path):
    out = fastopt("train", "--epochs", "2", "--models", "mlp", "--optimizers", "lion", "nadam",
                  "--state-dtypes", "float32", "bfloat16", "int8", "--out", str(tmp_path))
    rows = {(row[0], row[1]): row for row in table_rows(out, ("Lion", "NAdam"))}
    assert set(rows) == {(o, d) for o in ("Lion", "NAdam") for d in ("float32", "bfloat16", "int8")}, out
    for name in ("Lion", "NAdam"):
        kib = {d: float(rows[(name, d)][-2]) for d in ("float32", "bfloat16", "int8")}
        assert kib["bfloat16"] == pytest.approx(kib["float32"] / 2, rel=1e-3), kib
        assert kib["int8"] < 0.6 * kib["float32"], kib
        acc = {d: float(rows[(name, d)][4]) for d in ("float32", "bfloat16", "int8")}
        assert abs(acc["bfloat16"] - acc["float32"]) < 3 and abs(acc["int8"] - acc["float32"]) < 3, (name, acc)
    assert float(rows[("NAdam", "bfloat16")][4]) > 80, rows  # (Lion, at its small lr, is slower over 2 epochs)


def test_train_bfloat16_state_for_the_classic_optimizers_halves_their_memory(tmp_path):
    out = fastopt("train", "--epochs", "2", "--models", "linear", "--state-dtypes", "float32", "bfloat16",
                  "--optimizers", "momentum", "adagrad", "rmsprop", "--out", str(tmp_path))
    labels = ("Momentum", "AdaGrad", "RMSProp")
    rows = {(row[0], row[1]): row for row in table_rows(out, labels)}
    assert set(rows) == {(o, d) for o in labels for d in ("float32", "bfloat16")}, out
    for name in labels:
        kib = {d: float(rows[(name, d)][-2]) for d in ("float32", "bfloat16")}
        assert kib["bfloat16"] == pytest.approx(kib["float32"] / 2, abs=0.051), kib  # (KiB printed to 0.1)
        acc = {d: float(rows[(name, d)][4]) for d in ("float32", "bfloat16")}
        assert acc["float32"] > 50 and abs(acc["bfloat16"] - acc["float32"]) < 3, acc  # (chance: 10%)


def test_train_int8_state_for_the_classic_optimizers_shows_memory_and_learns(tmp_path):
    """The mlp's 64 x 64 first layer (4096 weights, bitsandbytes' min_8bit_size) keeps 8-bit state (a byte per
    weight and a float32 absmax per 256), the rest float32: 7016 bytes of state against float32's 19240."""
    out = fastopt("train", "--epochs", "3", "--models", "mlp", "--state-dtypes", "float32", "int8",
                  "--optimizers", "momentum", "nesterov", "adagrad", "rmsprop", "--out", str(tmp_path))
    assert_png(tmp_path / "train.png")
    labels = ("Momentum", "Nesterov", "AdaGrad", "RMSProp")
    rows = {(row[0], row[1]): row for row in table_rows(out, labels)}
    assert set(rows) == {(o, d) for o in labels for d in ("float32", "int8")}, out
    for name in labels:
        kib = {d: float(rows[(name, d)][-2]) for d in ("float32", "int8")}
        assert kib["float32"] == pytest.approx(19240 / 1024, abs=0.051), kib  # (KiB printed to 0.1)
        assert kib["int8"] == pytest.approx(7016 / 1024, abs=0.051), kib
        acc = {d: float(rows[(name, d)][4]) for d in ("float32", "int8")}
        assert acc["float32"] > 80 and abs(acc["int8"] - acc["float32"]) < 3, acc  # (chance: 10%)


def test_info_shows_build_devices_and_timing():
    out = fastopt("info", "--size", "10000", "--rounds", "2")
    assert "cpu_isa" in out and "CPU" in out and "CUDA" in out
    from fastopt.bench.workloads import ALL_OPTIMIZERS

    rows = table_rows(out, ALL_OPTIMIZERS)  # the classic five and every optimizer described as a rule
    assert [row[0] for row in rows] == list(ALL_OPTIMIZERS), out
    assert "lion" in ALL_OPTIMIZERS and all(re.fullmatch(NUMBER, row[1]) for row in rows), out


def test_demo_quick_writes_every_plot(tmp_path):
    out = fastopt("--quick", "--out", str(tmp_path))  # no command: the demo
    for name in ("race.png", "train.png", "bench.png"):
        assert_png(tmp_path / name)
        assert str(tmp_path / name) in out
    assert (tmp_path / "bench.json").exists()
    # The GPU: one line, saying why there are no CUDA rows, or naming the GPU.
    from fastopt.bench.backends import cuda_unavailable

    reason = cuda_unavailable()
    if reason is not None:
        assert f"no GPU: CUDA rows skipped ({reason})" in out
        assert out.count("no GPU") == 1 and "Only CPU" not in out and "no GPU backend" not in out, out
    else:
        import fastopt as fo

        assert fo.cuda.device_name(0) in out


def test_bench_says_whether_there_are_cuda_rows(tmp_path):
    from fastopt.bench.backends import cuda_unavailable

    args = ["bench", "--sizes", "1000", "--no-gpt2", "--shapes", "8x10", "--rounds", "1", "--no-torch",
            "--cuda-size", "1M", "--cuda-shape", "64x1000", "--json", str(tmp_path / "b.json")]
    reason = cuda_unavailable()
    out = fastopt(*args)
    if reason is None:  # a GPU: CUDA rows, unless left out
        assert "CUDA rows: fastopt-cuda against torch" in out and "== CUDA AdamW: 1,000,000 float32 elements ==" in out
        out = fastopt(*args, "--no-cuda")
        assert "CUDA rows left out (--no-cuda)" in out and "== CUDA" not in out
    else:
        assert f"no GPU: CUDA rows skipped ({reason})" in out and "== CUDA" not in out


def usage_error(*args, cwd=HERE):
    """Run a command that must be refused before any work: status 2, no traceback, nothing on stdout (no
    table, no heading); returns stderr."""
    out = subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True, cwd=cwd,
                         timeout=120)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout == "", out.stdout
    return out.stderr


@pytest.mark.parametrize("tol", ["-1", "0", "nan", "inf", "x"])
def test_race_refuses_a_tolerance_that_is_not_positive(tol, tmp_path):
    err = usage_error("race", "--tol", tol, "--out", str(tmp_path))
    assert err.startswith("usage: fastopt race") and "--tol" in err, err


@pytest.mark.parametrize("args, command, message", [
    (["race", "--lr", "adam"], "race", "--lr expects NAME=VALUE"),
    (["train", "--lr", "sgd=-1"], "train", "must be > 0"),
    (["train", "--l2", "-1"], "train", "--l2"),
    (["race", "--out", "/proc/nope"], "race", "cannot create the folder"),
    (["train", "--out", "/proc/nope"], "train", "cannot create the folder"),
    (["demo", "--out", "/proc/nope"], "demo", "cannot create the folder"),
    (["--out", "/proc/nope"], "demo", "cannot create the folder"),
])
def test_errors_print_the_commands_own_usage(args, command, message, tmp_path):
    """Errors found after parsing (a bad --lr, an --out that cannot be created) name the command's usage,
    not the top-level one, and come before any work (no table, no progress)."""
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path)]
    err = usage_error(*args)
    assert err.startswith(f"usage: fastopt {command}"), err
    assert message in err, err
    assert "runs of" not in err  # no progress line: nothing ran


def test_race_gif_is_an_animation(tmp_path):
    from PIL import Image

    out = fastopt("race", "--steps", "120", "--functions", "rosenbrock", "saddle", "--optimizers", "adam", "adamw",
                  "sgd", "--gif", "--out", str(tmp_path))
    path = tmp_path / "race.gif"
    assert f"wrote {path}" in out
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.is_animated and gif.n_frames >= 10, (gif.format, gif.n_frames)
        first = gif.convert("RGB").tobytes()
        gif.seek(gif.n_frames - 1)
        assert gif.convert("RGB").tobytes() != first, "the racers do not move"
    assert_png(tmp_path / "race.png")


def test_stated_demo_times_agree():
    """`fastopt --help` and the README state the demo's duration once measured: the same figures."""
    from fastopt.demo import cli

    help_text = subprocess.run([sys.executable, "-m", "fastopt", "--help"], capture_output=True, text=True, cwd=HERE,
                               timeout=120).stdout
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    for stated in (cli.DEMO_SECONDS, cli.QUICK_SECONDS):
        assert stated in " ".join(help_text.split()), help_text
        assert stated in readme
    assert "about a minute" not in help_text


def test_stated_bench_quick_time_agrees():
    from fastopt.bench import cli

    help_text = subprocess.run([sys.executable, "-m", "fastopt", "bench", "--help"], capture_output=True, text=True,
                               cwd=HERE, timeout=120).stdout
    assert cli.QUICK_SECONDS in " ".join(help_text.split())
    for doc in ("README.md", "BENCHMARKS.md"):
        assert cli.QUICK_SECONDS in " ".join(open(os.path.join(ROOT, doc), encoding="utf-8").read().split()), doc


@pytest.mark.parametrize("command", ["race", "train", "demo"])
def test_missing_demo_extra_gives_a_message_not_a_traceback(command, tmp_path):
    # sys.modules[name] = None makes `import name` raise ImportError: the real failure path.
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['sklearn'] = None\n"
            "from fastopt.__main__ import main\n"
            f"sys.exit(main([{command!r}, '--out', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=120)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    assert 'pip install "fastopt[demo]"' in out.stderr and "matplotlib" in out.stderr
    assert not list(tmp_path.iterdir()), "nothing is written when the extra is missing"


def test_bad_flags_are_refused_cleanly(tmp_path):
    for args in (["race", "--lr", "adam"], ["race", "--steps", "0"], ["train", "--epochs", "-1"],
                 ["info", "--rounds", "0"]):
        err = usage_error(*args, *(["--out", str(tmp_path)] if args[0] != "info" else []))
        assert err.startswith(f"usage: fastopt {args[0]}"), err


RULE_RACERS = ("NAdam", "RAdam", "Adamax", "Adadelta", "ASGD", "Rprop", "Lion", "LAMB")


def test_race_with_all_optimizers_each_reaches_the_beale_minimum_or_moves(tmp_path):
    # `--optimizers all`: the course's seven and every optimizer described as a rule; on Beale each of the
    # newer ones at its default lr comes within 1e-2 of (3, 0.5) or at least improves on the start
    out = fastopt("race", "--optimizers", "all", "--steps", "2000", "--functions", "beale", "--out", str(tmp_path))
    assert_png(tmp_path / "race.png")
    rows = table_rows(out, RACERS + RULE_RACERS)
    assert len(rows) == len(RACERS) + len(RULE_RACERS), out
    start_loss = (1.5 - 1.0 + 1.0 * 1.4) ** 2 + (2.25 - 1.0 + 1.0 * 1.4 ** 2) ** 2 + (2.625 - 1.0 + 1.0 * 1.4 ** 3) ** 2
    for row in table_rows(out, RULE_RACERS):
        assert row[2] != "-" or float(row[3]) < start_loss / 10, row


def test_train_runs_the_newer_optimizers(tmp_path):
    out = fastopt("train", "--optimizers", "lion", "nadam", "--epochs", "10", "--out", str(tmp_path))
    rows = table_rows(out, ("Lion", "NAdam"))
    assert len(rows) == 4 and all(float(row[3]) > 60.0 for row in rows), out  # (chance: 10%)
