"""Bad input to the losses: softmax_cross_entropy, multiclass_svm_loss, penalty, softmax, log_softmax.

The contract: bad input raises TypeError / ValueError / IndexError whose message names the argument
(an out-of-range label names its row and value: "labels[3] = 7"), and it is raised BEFORE anything
is written. Every array passed (including `out` / `out_grad`, pre-filled with random values, and the
buffer behind any view) is compared byte for byte after the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import fastopt

N, C, ROW = 6, 5, 3  # the base problem; bad labels go into row ROW

# --------------------------------------------------------------------------------------- helpers


def rand(rng, shape, dtype=np.float64):
    """Random non-zero values (an accidental write shows)."""
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def other_float(dtype):
    return np.float32 if dtype == np.float64 else np.float64


def arrays_in(args: dict):
    """Every array passed, and the buffer behind each view."""
    found = []
    for value in args.values():
        if isinstance(value, np.ndarray):
            found.append(value)
            if isinstance(value.base, np.ndarray):
                found.append(value.base)
    return found


def snapshot(args: dict):
    return [(a, a.tobytes()) for a in arrays_in(args)]


def assert_unchanged(before) -> None:
    changed = [i for i, (a, data) in enumerate(before) if a.tobytes() != data]
    assert not changed, f"arrays {changed} (in argument order) were written before the error"


FUNCTIONS = {  # name: (function, positional arguments)
    "softmax_cross_entropy": (fastopt.softmax_cross_entropy, ("logits", "labels")),
    "multiclass_svm_loss": (fastopt.multiclass_svm_loss, ("scores", "labels")),
    "penalty": (fastopt.penalty, ("w",)),
    "softmax": (fastopt.softmax, ("x",)),
    "log_softmax": (fastopt.log_softmax, ("x",)),
}


def call(function: str, args: dict):
    fn, positional = FUNCTIONS[function]
    return fn(*(args[k] for k in positional), **{k: v for k, v in args.items() if k not in positional})


def assert_rejected(function: str, args: dict, error, match: str) -> None:
    """The call raises `error` with `match` in its message, and leaves every array untouched."""
    before = snapshot(args)
    with pytest.raises(error) as info:
        call(function, args)
    assert re.search(match, str(info.value)), f"{info.value!r} does not name {match!r}"
    assert_unchanged(before)


# ------------------------------------------------------------------------------- valid base calls


def ce_args(rng, dtype, label_dtype):
    labels = rng.integers(0, C, N)
    labels[1] = -100  # an ignored row
    return dict(logits=rand(rng, (N, C), dtype), labels=labels.astype(label_dtype),
                weight=rng.uniform(0.5, 2.0, C).astype(dtype), out=rand(rng, (N, C), dtype),
                label_smoothing=0.1, z_loss=1e-3, reduction="mean")


def svm_args(rng, dtype, label_dtype):
    return dict(scores=rand(rng, (N, C), dtype), labels=rng.integers(0, C, N).astype(label_dtype),
                margin=1.0, reduction="mean")


def penalty_args(rng, dtype, label_dtype):
    return dict(w=rand(rng, (4, 3), dtype), l1=1e-2, l2=1e-2, out_grad=rand(rng, (4, 3), dtype))


def softmax_args(rng, dtype, label_dtype):
    return dict(x=rand(rng, (3, 4), dtype), out=rand(rng, (3, 4), dtype))


BASE = {"softmax_cross_entropy": ce_args, "multiclass_svm_loss": svm_args, "penalty": penalty_args,
        "softmax": softmax_args, "log_softmax": softmax_args}
DTYPES = [(np.float64, np.int64), (np.float32, np.int32)]
DTYPE_IDS = ["f64-i64", "f32-i32"]


@pytest.mark.parametrize("dtype,label_dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_control_base_call_is_valid_and_writes_its_output(function, dtype, label_dtype):
    """The base arguments are valid, and out / out_grad really are written by a valid call
    (so "unchanged after the error" means something)."""
    args = BASE[function](np.random.default_rng(0), dtype, label_dtype)
    output = args.get("out", args.get("out_grad"))
    before = None if output is None else output.copy()
    call(function, args)
    if output is not None:
        assert not np.array_equal(output, before)


# ------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Bad:
    id: str
    edit: Callable[[dict, np.random.Generator], None]  # turns the valid base arguments bad
    error: type
    match: str  # must appear (regex) in the message: the argument's name

    def __repr__(self) -> str:
        return self.id


def put(**values):
    """An edit replacing arguments; a callable value is called with (args, rng)."""
    def edit(args, rng):
        for key, value in values.items():
            args[key] = value(args, rng) if callable(value) else value
    return edit


def label(row, value, **more):
    """An edit replacing `more` arguments, then putting `value` into labels[row]."""
    def edit(args, rng):
        put(**more)(args, rng)
        args["labels"][row] = value
    return edit


def name(arg):
    return rf"\b{arg}\b"


def shifted_views(args, rng):
    """logits and out as two (N, C) views of one buffer, C elements apart."""
    buffer = rand(rng, (N + 1) * C, args["logits"].dtype)
    args["logits"], args["out"] = buffer[:N * C].reshape(N, C), buffer[C:].reshape(N, C)


def x_and_out_shifted(args, rng):
    """x and out as two (3, 4) views of one buffer, a row apart."""
    buffer = rand(rng, 4 * 4, args["x"].dtype)
    args["x"], args["out"] = buffer[:12].reshape(3, 4), buffer[4:].reshape(3, 4)


def out_overlapping_labels(args, rng):
    out = args["out"]
    labels = out.reshape(-1).view(np.int64 if out.dtype == np.float64 else np.int32)[:N]
    labels[:] = args["labels"]
    args["labels"] = labels


# Arguments shared by the two (scores, labels) losses.
SCORES_LABELS = lambda scores: [  # noqa: E731
    Bad("label-equal-to-C", label(ROW, C), IndexError, re.escape(f"labels[{ROW}] = {C}")),
    Bad("label-way-too-big", label(ROW, 1000), IndexError, re.escape(f"labels[{ROW}] = 1000")),
    Bad("label-minus-1", label(ROW, -1), IndexError, re.escape(f"labels[{ROW}] = -1")),
    Bad("bad-label-in-last-row", label(N - 1, C), IndexError, re.escape(f"labels[{N - 1}] = {C}")),
    Bad("float-labels", put(labels=lambda a, r: a["labels"].astype(np.float64)), TypeError, name("labels")),
    Bad("bool-labels", put(labels=lambda a, r: a["labels"] > 1), TypeError, name("labels")),
    Bad("int16-labels", put(labels=lambda a, r: a["labels"].astype(np.int16)), TypeError, name("labels")),
    Bad("labels-too-short", put(labels=lambda a, r: a["labels"][:-1].copy()), ValueError, name("labels")),
    Bad("labels-too-long", put(labels=lambda a, r: np.append(a["labels"], 0)), ValueError, name("labels")),
    Bad("labels-2d", put(labels=lambda a, r: a["labels"].reshape(N, 1)), ValueError, name("labels")),
    Bad("labels-strided", put(labels=lambda a, r: np.repeat(a["labels"], 2)[::2]), ValueError, name("labels")),
    Bad("labels-list", put(labels=lambda a, r: a["labels"].tolist()), TypeError, name("labels")),
    Bad(f"{scores}-1d", put(**{scores: lambda a, r: a[scores][0].copy()}), ValueError, name(scores)),
    Bad(f"{scores}-3d", put(**{scores: lambda a, r: a[scores].reshape(N, C, 1)}), ValueError, name(scores)),
    Bad(f"{scores}-no-classes", put(**{scores: lambda a, r: np.zeros((N, 0), a[scores].dtype)}),
        ValueError, name(scores)),
    Bad(f"{scores}-int", put(**{scores: lambda a, r: a[scores].astype(np.int64)}), TypeError, name(scores)),
    Bad(f"{scores}-int32", put(**{scores: lambda a, r: a[scores].astype(np.int32)}), TypeError, name(scores)),
    Bad(f"{scores}-float16", put(**{scores: lambda a, r: a[scores].astype(np.float16)}), TypeError, name(scores)),
    Bad(f"{scores}-byteswapped", put(**{scores: lambda a, r: a[scores].astype(a[scores].dtype.newbyteorder())}),
        TypeError, name(scores)),
    Bad(f"{scores}-fortran", put(**{scores: lambda a, r: np.asfortranarray(a[scores])}), ValueError, name(scores)),
    Bad(f"{scores}-strided", put(**{scores: lambda a, r: np.repeat(a[scores], 2, axis=1)[:, ::2]}),
        ValueError, name(scores)),
    Bad(f"{scores}-list", put(**{scores: lambda a, r: a[scores].tolist()}), TypeError, name(scores)),
    Bad("reduction-unknown", put(reduction="average"), ValueError, name("reduction")),
    Bad("reduction-capitalised", put(reduction="Mean"), ValueError, name("reduction")),
]

CE_CASES = SCORES_LABELS("logits") + [
    Bad("minus-100-with-another-ignore-index",  # (the base's ignored row relabelled 2, the new ignore_index)
        label(ROW, -100, ignore_index=2, labels=lambda a, r: np.where(a["labels"] == -100, 2, a["labels"])),
        IndexError, re.escape(f"labels[{ROW}] = -100")),
    Bad("weight-too-long", put(weight=lambda a, r: np.append(a["weight"], 1.0).astype(a["weight"].dtype)),
        ValueError, name("weight")),
    Bad("weight-too-short", put(weight=lambda a, r: a["weight"][:-1].copy()), ValueError, name("weight")),
    Bad("weight-2d", put(weight=lambda a, r: a["weight"].reshape(1, C)), ValueError, name("weight")),
    Bad("weight-other-float", put(weight=lambda a, r: a["weight"].astype(other_float(a["weight"].dtype))),
        TypeError, name("weight")),
    Bad("weight-int", put(weight=lambda a, r: np.ones(C, np.int64)), TypeError, name("weight")),
    Bad("weight-strided", put(weight=lambda a, r: np.repeat(a["weight"], 2)[::2]), ValueError, name("weight")),
    Bad("weight-list", put(weight=lambda a, r: a["weight"].tolist()), TypeError, name("weight")),
    Bad("label_smoothing-negative", put(label_smoothing=-0.1), ValueError, name("label_smoothing")),
    Bad("label_smoothing-above-1", put(label_smoothing=1.5), ValueError, name("label_smoothing")),
    Bad("label_smoothing-nan", put(label_smoothing=float("nan")), ValueError, name("label_smoothing")),
    Bad("label_smoothing-inf", put(label_smoothing=float("inf")), ValueError, name("label_smoothing")),
    Bad("z_loss-negative", put(z_loss=-1e-3), ValueError, name("z_loss")),
    Bad("z_loss-nan", put(z_loss=float("nan")), ValueError, name("z_loss")),
    Bad("z_loss-inf", put(z_loss=float("inf")), ValueError, name("z_loss")),
    Bad("out-read-only", lambda a, r: a["out"].setflags(write=False), ValueError, name("out")),
    Bad("out-other-float", put(out=lambda a, r: a["out"].astype(other_float(a["out"].dtype))), TypeError,
        name("out")),
    Bad("out-int", put(out=lambda a, r: np.ones((N, C), np.int64)), TypeError, name("out")),
    Bad("out-transposed-shape", put(out=lambda a, r: a["out"].reshape(C, N)), ValueError, name("out")),
    Bad("out-flat", put(out=lambda a, r: a["out"].reshape(-1)), ValueError, name("out")),
    Bad("out-fortran", put(out=lambda a, r: np.asfortranarray(a["out"])), ValueError, name("out")),
    Bad("out-partly-overlaps-logits", shifted_views, ValueError, name("out")),
    Bad("out-overlaps-weight", put(weight=lambda a, r: a["out"][0]), ValueError, name("out")),
    Bad("out-overlaps-labels", out_overlapping_labels, ValueError, name("out")),
    Bad("out-list", put(out=lambda a, r: a["out"].tolist()), TypeError, name("out")),
]

SVM_CASES = SCORES_LABELS("scores") + [
    Bad("label-minus-100-no-ignore-index", label(ROW, -100), IndexError, re.escape(f"labels[{ROW}] = -100")),
    Bad("margin-nan", put(margin=float("nan")), ValueError, name("margin")),
    Bad("margin-inf", put(margin=float("inf")), ValueError, name("margin")),
]

PENALTY_CASES = [
    Bad("w-int", put(w=lambda a, r: a["w"].astype(np.int64)), TypeError, name("w")),
    Bad("w-float16", put(w=lambda a, r: a["w"].astype(np.float16)), TypeError, name("w")),
    Bad("w-fortran", put(w=lambda a, r: np.asfortranarray(a["w"])), ValueError, name("w")),
    Bad("w-list", put(w=lambda a, r: a["w"].tolist()), TypeError, name("w")),
    Bad("l1-negative", put(l1=-0.1), ValueError, name("l1")),
    Bad("l1-nan", put(l1=float("nan")), ValueError, name("l1")),
    Bad("l2-negative", put(l2=-1.0), ValueError, name("l2")),
    Bad("l2-inf", put(l2=float("inf")), ValueError, name("l2")),
    Bad("out_grad-wrong-shape", put(out_grad=lambda a, r: a["out_grad"].reshape(3, 4)), ValueError,
        name("out_grad")),
    Bad("out_grad-flat", put(out_grad=lambda a, r: a["out_grad"].reshape(-1)), ValueError, name("out_grad")),
    Bad("out_grad-other-float", put(out_grad=lambda a, r: a["out_grad"].astype(other_float(a["w"].dtype))),
        TypeError, name("out_grad")),
    Bad("out_grad-read-only", lambda a, r: a["out_grad"].setflags(write=False), ValueError, name("out_grad")),
    Bad("out_grad-fortran", put(out_grad=lambda a, r: np.asfortranarray(a["out_grad"])), ValueError,
        name("out_grad")),
    Bad("out_grad-is-w", put(out_grad=lambda a, r: a["w"]), ValueError, name("out_grad")),
    Bad("out_grad-view-of-w", put(out_grad=lambda a, r: a["w"].reshape(3, 4).reshape(4, 3)[:]), ValueError,
        name("out_grad")),
    Bad("out_grad-list", put(out_grad=lambda a, r: a["out_grad"].tolist()), TypeError, name("out_grad")),
]

SOFTMAX_CASES = [
    Bad("0-d", put(x=lambda a, r: np.array(1.5, a["x"].dtype)), ValueError, name("x")),
    Bad("int", put(x=lambda a, r: np.arange(12).reshape(3, 4)), TypeError, name("x")),
    Bad("float16", put(x=lambda a, r: a["x"].astype(np.float16)), TypeError, name("x")),
    Bad("fortran", put(x=lambda a, r: np.asfortranarray(a["x"])), ValueError, name("x")),
    Bad("list", put(x=lambda a, r: a["x"].tolist()), TypeError, name("x")),
    Bad("out-read-only", lambda a, r: a["out"].setflags(write=False), ValueError, name("out")),
    Bad("out-is-a-read-only-x", lambda a, r: (a["x"].setflags(write=False), a.update(out=a["x"])), ValueError,
        name("out")),
    Bad("out-other-float", put(out=lambda a, r: a["out"].astype(other_float(a["out"].dtype))), TypeError,
        name("out")),
    Bad("out-int", put(out=lambda a, r: np.ones((3, 4), np.int64)), TypeError, name("out")),
    Bad("out-transposed-shape", put(out=lambda a, r: a["out"].reshape(4, 3)), ValueError, name("out")),
    Bad("out-flat", put(out=lambda a, r: a["out"].reshape(-1)), ValueError, name("out")),
    Bad("out-fortran", put(out=lambda a, r: np.asfortranarray(a["out"])), ValueError, name("out")),
    Bad("out-strided", put(out=lambda a, r: np.repeat(a["out"], 2, axis=1)[:, ::2]), ValueError, name("out")),
    Bad("out-partly-overlaps-x", x_and_out_shifted, ValueError, name("out")),
    Bad("out-list", put(out=lambda a, r: a["out"].tolist()), TypeError, name("out")),
]

TABLE = ([("softmax_cross_entropy", b) for b in CE_CASES] + [("multiclass_svm_loss", b) for b in SVM_CASES]
         + [("penalty", b) for b in PENALTY_CASES] + [(f, b) for f in ("softmax", "log_softmax")
                                                       for b in SOFTMAX_CASES])


@pytest.mark.parametrize("dtype,label_dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("function,bad", TABLE, ids=[f"{f}-{b.id}" for f, b in TABLE])
def test_bad_input_is_refused_before_anything_is_written(function, bad, dtype, label_dtype):
    rng = np.random.default_rng(1)
    args = BASE[function](rng, dtype, label_dtype)
    bad.edit(args, rng)
    assert_rejected(function, args, bad.error, bad.match)


# ---------------------------------------------------------------------- the labels scan comes first


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_bad_label_in_the_last_row_of_a_big_in_place_batch(dtype, label_dtype):
    """Large enough to run on threads; out= logits itself, so any early write would show in logits."""
    rng = np.random.default_rng(2)
    n, c = 2048, 1000
    logits = rand(rng, (n, c), dtype)
    labels = rng.integers(0, c, n).astype(label_dtype)
    labels[-1] = c
    args = dict(logits=logits, labels=labels, weight=rng.uniform(0.5, 2.0, c).astype(dtype), out=logits,
                label_smoothing=0.1, reduction="none")
    assert_rejected("softmax_cross_entropy", args, IndexError, re.escape(f"labels[{n - 1}] = {c}"))
    scores = dict(scores=logits, labels=labels)
    assert_rejected("multiclass_svm_loss", scores, IndexError, re.escape(f"labels[{n - 1}] = {c}"))


def test_in_place_call_with_valid_labels_does_write_logits():
    """The control for the test above."""
    rng = np.random.default_rng(3)
    logits = rand(rng, (2048, 1000), np.float32)
    labels = rng.integers(0, 1000, 2048)
    before = logits.copy()
    _, grad = fastopt.softmax_cross_entropy(logits, labels, out=logits)
    assert grad is logits and not np.array_equal(logits, before)
