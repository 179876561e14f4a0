"""fastopt.linear_cross_entropy and fastopt.torch.linear_cross_entropy against torch's F.cross_entropy(F.linear(...))
(and F.linear_cross_entropy), their memory against the one-chunk bound, and their refusals of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastopt

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - the torch-free run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def problem(n, d, v, dtype=np.float64, seed=0, ignored=(), bias=True, classes=False):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d)).astype(dtype)
    w = (rng.standard_normal((v, d)) / np.sqrt(d) * 3).astype(dtype)
    b = rng.standard_normal(v).astype(dtype) if bias else None
    wc = (rng.random(v) + 0.1).astype(dtype) if classes else None
    y = rng.integers(0, v, n)
    for i in ignored:
        y[i] = -100
    return h, w, y, b, wc


def torch_reference(h, w, y, b, wc, reduction="mean", label_smoothing=0.0, z_loss=0.0, ignore_index=-100):
    """loss, dh, dw, db of F.cross_entropy(F.linear(h, w, b), y, ...) (+ the z-loss written out), by autograd;
    for "none" the gradients of the summed losses."""
    th = torch.tensor(h, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = torch.tensor(y)
    twc = None if wc is None else torch.tensor(wc)
    logits = F.linear(th, tw, tb)
    loss = F.cross_entropy(logits, ty, weight=twc, reduction=reduction, label_smoothing=label_smoothing,
                           ignore_index=ignore_index)
    if z_loss:
        # z * logsumexp(row)^2 per counted row; "mean" divides by the weight of the counted rows
        counted = ty != ignore_index
        z_rows = z_loss * torch.logsumexp(logits, dim=1) ** 2 * counted
        if reduction == "none":
            loss = loss + z_rows
        elif reduction == "sum":
            loss = loss + z_rows.sum()
        else:
            denom = counted.sum() if twc is None else twc[ty[counted]].sum()
            loss = loss + z_rows.sum() / denom
    grads = torch.autograd.grad(loss.sum(), [t for t in (th, tw, tb) if t is not None])
    out = [loss.detach().numpy()] + [g.numpy() for g in grads]
    return out


def assert_close(ours, ref, rtol=1e-10, what=""):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, what
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    assert err <= rtol * scale, f"{what}: max error {err:.3g} against scale {scale:.3g}"


def as_numpy(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.numpy()
    return np.asarray(x)


# --- numbers ----------------------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("v,chunk_rows", [(7, 5), (1, 4), (13, None), (64, 1)])
def test_float64_matches_torch(reduction, bias, classes, label_smoothing, v, chunk_rows):
    n, d = 23, 6  # 23 rows: the last chunk of 5 (or 4) rows is partial
    h, w, y, b, wc = problem(n, d, v, ignored=(0, 11, 22), bias=bias, classes=classes)
    result = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, reduction=reduction,
                                          label_smoothing=label_smoothing, chunk_rows=chunk_rows)
    ref = torch_reference(h, w, y, b, wc, reduction, label_smoothing)
    assert len(result) == (4 if bias else 3)
    for name, ours, theirs in zip(("loss", "dhidden", "dweight", "dbias"), result, ref):
        assert_close(ours, theirs, what=name)
    if reduction != "none":
        assert isinstance(result[0], float)


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("classes", [False, True])
def test_z_loss_matches_formula(reduction, classes):
    h, w, y, b, wc = problem(31, 5, 9, ignored=(3,), classes=classes)
    result = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, reduction=reduction, z_loss=1e-2,
                                          label_smoothing=0.1, chunk_rows=8)
    ref = torch_reference(h, w, y, b, wc, reduction, 0.1, z_loss=1e-2)
    for name, ours, theirs in zip(("loss", "dhidden", "dweight", "dbias"), result, ref):
        assert_close(ours, theirs, what=name)
    # the z term is really there
    without = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, reduction=reduction,
                                           label_smoothing=0.1, chunk_rows=8)
    assert not np.allclose(as_numpy(result[0]), as_numpy(without[0]))


@needs_torch
def test_mean_divides_by_the_weight_of_all_chunks():
    # Chunks with very different class weights and ignored rows: a per-chunk mean would be wrong.
    h, w, y, b, wc = problem(40, 4, 5, ignored=tuple(range(0, 40, 3)), classes=True)
    wc[:] = [0.1, 5.0, 0.3, 2.0, 1.0]
    for chunk_rows in (1, 3, 7, 40):
        result = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, chunk_rows=chunk_rows)
        ref = torch_reference(h, w, y, b, wc)
        for ours, theirs in zip(result, ref):
            assert_close(ours, theirs)


@needs_torch
def test_float32_within_torch_float32_error():
    h, w, y, b, wc = problem(300, 32, 500, dtype=np.float32, ignored=(5,), classes=True)
    ours = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, label_smoothing=0.1, chunk_rows=64)
    exact = torch_reference(*(None if a is None else a.astype(np.float64) if a.dtype.kind == "f" else a
                              for a in (h, w, y, b, wc)), label_smoothing=0.1)
    theirs32 = torch_reference(h, w, y, b, wc, label_smoothing=0.1)
    for name, o, t32, t64 in zip(("loss", "dhidden", "dweight", "dbias"), ours, theirs32, exact):
        assert as_numpy(o).dtype == np.float32 or name == "loss"
        torch_err = float(np.max(np.abs(np.asarray(t32, np.float64) - t64)))
        our_err = float(np.max(np.abs(np.asarray(as_numpy(o), np.float64) - t64)))
        scale = float(np.max(np.abs(t64)))
        assert our_err <= 4 * torch_err + 1e-6 * scale, f"{name}: {our_err:.3g} vs torch's {torch_err:.3g}"


@needs_torch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] if torch is not None else [])
def test_torch_tensors_give_numpy_numbers(dtype):
    h, w, y, b, wc = problem(50, 8, 17, dtype=np.float32 if dtype == torch.float32 else np.float64,
                             ignored=(1,), classes=True)
    on_numpy = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, reduction="none", chunk_rows=16)
    on_torch = fastopt.linear_cross_entropy(*map(torch.from_numpy, (h, w, y)), bias=torch.from_numpy(b),
                                            weight_classes=torch.from_numpy(wc), reduction="none", chunk_rows=16)
    for a, t in zip(on_numpy, on_torch):
        assert isinstance(a, np.ndarray) and isinstance(t, torch.Tensor) and t.dtype == dtype
        np.testing.assert_allclose(t.numpy(), a, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_outputs_written_into_out_arrays():
    h, w, y, b, _ = problem(20, 3, 6)
    out_dh = np.full((20, 3), np.nan)
    out_dw = np.full((6, 3), np.nan)
    loss, dh, dw, db = fastopt.linear_cross_entropy(h, w, y, bias=b, out_dhidden=out_dh, out_dweight=out_dw,
                                                    chunk_rows=7)
    assert dh is out_dh and dw is out_dw
    fresh = fastopt.linear_cross_entropy(h, w, y, bias=b, chunk_rows=7)
    assert loss == fresh[0]
    np.testing.assert_array_equal(out_dh, fresh[1])
    np.testing.assert_array_equal(out_dw, fresh[2])


def test_does_not_depend_on_thread_count():
    h, w, y, b, wc = problem(300, 16, 257, dtype=np.float32, classes=True)
    before = fastopt.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fastopt.set_num_threads(threads)
            results.append(fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, label_smoothing=0.1))
    finally:
        fastopt.set_num_threads(before)
    for other in results[1:]:
        assert other[0] == results[0][0]
        for a, c in zip(results[0][1:], other[1:]):
            np.testing.assert_array_equal(a, c)


@needs_torch
def test_nothing_counted_gives_nan_mean_and_zero_gradients():
    h, w, y, b, _ = problem(6, 3, 4, ignored=range(6))
    loss, dh, dw, db = fastopt.linear_cross_entropy(h, w, y, bias=b, chunk_rows=4)
    ref = torch_reference(h, w, y, b, None)
    assert np.isnan(loss) and np.isnan(ref[0])
    for ours, theirs in zip((dh, dw, db), ref[1:]):
        np.testing.assert_array_equal(ours, theirs)
        assert not ours.any()


def test_no_rows():
    h, w, y, b, _ = problem(0, 3, 4)
    loss, dh, dw, db = fastopt.linear_cross_entropy(h, w, y, bias=b, reduction="sum")
    assert loss == 0.0 and dh.shape == (0, 3) and not dw.any() and not db.any()


def test_default_chunk_rows():
    from fastopt._linear_cross_entropy import default_chunk_rows

    assert default_chunk_rows(4096, 32000, 4) == 448   # about 56 MiB of float32 logits, a multiple of 64
    assert default_chunk_rows(4096, 32000, 8) == 192
    assert default_chunk_rows(4096, 50257, 4) == 256
    assert default_chunk_rows(4096, 10**7, 4) == 64     # at least 64 rows
    assert default_chunk_rows(10, 32000, 4) == 10       # at most N
    assert default_chunk_rows(5000, 1, 4) == 5000


# --- memory -----------------------------------------------------------------------------------------------

def test_numpy_peak_memory_is_one_chunk():
    """tracemalloc sees NumPy's array allocations: the call's peak beyond what it returns stays within the
    chunk of logits, the accumulation block (at most as big) and O(N + V); the whole logits would be 32x more."""
    n, d, v, rows = 2048, 16, 4096, 64
    h, w, y, b, wc = problem(n, d, v, classes=True)
    chunk = rows * v * 8
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fastopt.linear_cross_entropy(h, w, y, bias=b, weight_classes=wc, chunk_rows=rows)
        peak = tracemalloc.get_traced_memory()[1] - before
        outputs = sum(a.nbytes for a in result[1:])
        del result
        # the method sees a full logits array when there is one
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        full = h @ w.T
        fastopt.softmax_cross_entropy(full, y, out=full)
        full_peak = tracemalloc.get_traced_memory()[1] - before
        del full
    finally:
        tracemalloc.stop()
    assert full_peak >= n * v * 8
    bound = outputs + 2 * chunk + 64 * (n + v) + (64 << 10)
    assert peak <= bound, f"peak extra {peak} bytes > bound {bound} (chunk {chunk}, outputs {outputs})"
    assert peak >= outputs + chunk  # the chunk is counted: the measurement is not blind


_RSS_CHILD = textwrap.dedent("""
    import json, sys
    import torch, torch.nn.functional as F
    import fastopt
    n, d, v, rows, how = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * 0.1
    y = torch.randint(0, v, (n,), generator=g)
    dh = torch.zeros(n, d)
    dw = torch.zeros(v, d)
    def ours(h, w, y, **kw):
        return fastopt.linear_cross_entropy(h, w, y, chunk_rows=rows, **kw)
    def full(h, w, y, **kw):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        F.cross_entropy(F.linear(hh, ww), y).backward()
    def autograd(h, w, y, **kw):  # fastopt.torch's: loss and backward, the gradients into .grad
        import fastopt.torch as ft
        hh, ww = h.detach().requires_grad_(), w.detach().requires_grad_()
        ft.linear_cross_entropy(hh, ww, y).backward()
    fn = {"ours": ours, "full": full, "autograd": autograd}[how]
    fn(h[:rows * 2].contiguous(), w[:64].contiguous(), y[:rows * 2] % 64)  # threads, BLAS buffers: warm
    def kib(field):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
    open("/proc/self/clear_refs", "w").write("5")  # the peak resident set (VmHWM) := the resident set now
    before = kib("VmRSS")
    if how == "ours":
        fn(h, w, y, out_dhidden=dh, out_dweight=dw)
    else:
        fn(h, w, y)
    print(json.dumps({"extra": (kib("VmHWM") - before) * 1024}))
""")


def _peak_rss_extra(args) -> int:
    # Every big block mmapped on its own and unmapped when freed: a freed block cannot be reused unseen.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    # (from tests/: in the repository root the source folder would shadow the installed package)
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["extra"]


@needs_torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs and glibc's malloc knobs: Linux")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under AddressSanitizer freed memory stays in its quarantine: the peak is not the program's")
def test_torch_peak_memory_is_one_chunk():
    """torch has no CPU allocator statistics: the peak resident memory of a child process over the call
    (VmHWM after resetting it, glibc told to map every big block on its own), with the gradients preallocated. The same
    measurement of F.linear + F.cross_entropy sees its (N, V) logits and their gradients."""
    n, d, v, rows = 4096, 32, 8192, 64
    logits_bytes = n * v * 4  # 128 MiB
    chunk = rows * v * 4      # 2 MiB
    ours = _peak_rss_extra((n, d, v, rows, "ours"))
    full = _peak_rss_extra((n, d, v, rows, "full"))
    assert full >= logits_bytes
    assert ours <= chunk + (12 << 20), f"peak extra {ours} bytes; chunk {chunk}"


@needs_torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs and glibc's malloc knobs: Linux")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under AddressSanitizer freed memory stays in its quarantine: the peak is not the program's")
def test_torch_autograd_peak_memory_is_the_gradients_twice_and_one_chunk():
    """fastopt.torch.linear_cross_entropy forward + backward: the gradients made in the forward pass and their
    scaled copies that backward hands to .grad, and one chunk, nothing more (autograd must not, for one,
    materialise zero gradients for the op's gradient outputs: a third set)."""
    n, d, v = 512, 2048, 4096
    grads = (n * d + v * d) * 4  # 37.7 MB
    chunk = n * v * 4            # (the default chunk holds all 512 rows) 8.4 MB
    extra = _peak_rss_extra((n, d, v, n, "autograd"))
    assert extra >= grads  # the measurement sees the gradients
    assert extra <= 2 * grads + chunk + (12 << 20), f"peak extra {extra} bytes; gradients {grads}, chunk {chunk}"


# --- bad input --------------------------------------------------------------------------------------------

def _bad_cases():
    h, w, y, b, wc = problem(10, 3, 5, classes=True)
    ok = dict(hidden=h, weight=w, labels=y, bias=b, weight_classes=wc, chunk_rows=3)
    late_bad = y.copy()
    late_bad[9] = 5
    negative = y.copy()
    negative[4] = -1
    cases = [
        (dict(hidden=h.astype(np.float32)), TypeError, "weight has dtype float64 but hidden has float32"),
        (dict(hidden=h.astype(np.int64)), TypeError, "hidden must be a float32 or float64"),
        (dict(hidden=h[None]), ValueError, r"hidden must be 2-d"),
        (dict(hidden=np.asfortranarray(h)), ValueError, "hidden must be C-contiguous"),
        (dict(hidden=h.tolist()), TypeError, "hidden must be a NumPy array"),
        (dict(weight=w[:, :2].copy()), ValueError, r"weight has shape \(5, 2\) but hidden has D = 3"),
        (dict(weight=w.T.copy()), ValueError, "weight has shape"),
        (dict(weight=w[:0]), ValueError, "V = 0"),
        (dict(weight=w.astype(np.float32)), TypeError, "weight has dtype float32"),
        (dict(labels=late_bad), IndexError, r"labels\[9\] = 5 is out of range for 5 classes"),
        (dict(labels=negative), IndexError, r"labels\[4\] = -1"),
        (dict(labels=y.astype(np.float64)), TypeError, "labels must be an int32 or int64"),
        (dict(labels=y[:9]), ValueError, r"labels has shape \(9,\) but hidden has 10 rows"),
        (dict(bias=b[:4]), ValueError, r"bias has shape \(4,\)"),
        (dict(bias=b.astype(np.float32)), TypeError, "bias has dtype float32"),
        (dict(weight_classes=wc[:2]), ValueError, "weight_classes has shape"),
        (dict(reduction="avg"), ValueError, "reduction must be"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(z_loss=-1.0), ValueError, "z_loss"),
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
        (dict(chunk_rows=0), ValueError, "chunk_rows must be at least 1"),
        (dict(chunk_rows=2.0), TypeError, "chunk_rows must be an int"),
        (dict(out_dhidden="fresh(10, 2)"), ValueError, r"out_dhidden has shape \(10, 2\), expected \(10, 3\)"),
        (dict(out_dhidden="fresh32(10, 3)"), TypeError, "out_dhidden has dtype float32"),
        (dict(out_dweight="fresh(3, 5)"), ValueError, r"out_dweight has shape \(3, 5\), expected \(5, 3\)"),
        (dict(out_dweight="readonly(5, 3)"), ValueError, "out_dweight is read-only"),
        (dict(out_dhidden="hidden"), ValueError, "out_dhidden shares memory with hidden"),
        (dict(out_dweight="out_dhidden-alias"), ValueError, "out_dweight shares memory with out_dhidden"),
    ]
    return ok, cases


@pytest.mark.parametrize("index", range(len(_bad_cases()[1])))
def test_bad_input_is_refused_before_writing(index):
    ok, cases = _bad_cases()
    change, error, match = cases[index]
    kwargs = {**ok, "out_dhidden": np.full((10, 3), 7.0), "out_dweight": np.full((5, 3), 7.0)}
    for key, value in change.items():
        if isinstance(value, str) and key.startswith("out_"):
            if value.startswith("fresh"):
                shape = tuple(int(s) for s in value[value.index("(") + 1:-1].split(","))
                value = np.full(shape, 7.0, np.float32 if value.startswith("fresh32") else np.float64)
            elif value.startswith("readonly"):
                value = np.full((5, 3), 7.0)
                value.flags.writeable = False
            elif value == "hidden":
                value = ok["hidden"]
            elif value == "out_dhidden-alias":
                big = np.full(30, 7.0)
                kwargs["out_dhidden"] = big.reshape(10, 3)
                value = big[:15].reshape(5, 3)
        kwargs[key] = value
    copies = {k: np.array(v, copy=True) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error, match=match):
        fastopt.linear_cross_entropy(kwargs.pop("hidden"), kwargs.pop("weight"), kwargs.pop("labels"), **kwargs)
    for key, before in copies.items():
        array = kwargs.get(key, ok.get(key))
        if key in ("hidden", "weight", "labels"):
            continue
        np.testing.assert_array_equal(array, before, err_msg=key)


@needs_torch
def test_mixed_frameworks_and_grad_tensors_refused():
    h, w, y, b, _ = problem(6, 3, 4)
    th, tw, ty = map(torch.from_numpy, (h, w, y))
    with pytest.raises(TypeError, match="weight is a torch.Tensor but hidden is a numpy.ndarray"):
        fastopt.linear_cross_entropy(h, tw, y)
    with pytest.raises(TypeError, match="labels is a numpy.ndarray but hidden is a torch.Tensor"):
        fastopt.linear_cross_entropy(th, tw, y)
    out = np.zeros((4, 3))
    with pytest.raises(TypeError, match="out_dweight is a numpy.ndarray"):
        fastopt.linear_cross_entropy(th, tw, ty, out_dweight=out)
    with pytest.raises(TypeError, match="hidden requires grad"):
        fastopt.linear_cross_entropy(th.clone().requires_grad_(), tw, ty)


# --- the torch autograd function --------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_function_gradcheck(reduction, bias):
    import fastopt.torch as ft

    h, w, y, b, wc = problem(9, 4, 6, ignored=(2,), classes=True)
    th = torch.tensor(h, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty, twc = torch.tensor(y), torch.tensor(wc)

    def f(*args):
        return ft.linear_cross_entropy(args[0], args[1], ty, linear_bias=args[2] if bias else None, weight=twc,
                                       reduction=reduction, label_smoothing=0.1, z_loss=1e-2)

    # for "none" gradcheck's grad_outputs are not uniform: the backward that reruns the chunks
    assert torch.autograd.gradcheck(f, tuple(t for t in (th, tw, tb) if t is not None))


@needs_torch
@pytest.mark.skipif(torch is not None and not hasattr(F, "linear_cross_entropy"),
                    reason="torch has no F.linear_cross_entropy")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunked", [False, True])
def test_torch_function_matches_torch_linear_cross_entropy(reduction, chunked):
    import fastopt.torch as ft

    h, w, y, b, wc = problem(40, 8, 33, ignored=(3, 7), classes=True)
    options = torch.nn.LinearCrossEntropyOptions() if chunked else None
    grads, losses = [], []
    for fn, kw in ((ft.linear_cross_entropy, {}), (F.linear_cross_entropy, {"options": options})):
        th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (h, w, b))
        loss = fn(th, tw, torch.tensor(y), linear_bias=tb, weight=torch.tensor(wc), reduction=reduction,
                  label_smoothing=0.0 if chunked else 0.2, **kw)  # torch's chunked path: no smoothing
        (loss.sum() if reduction != "none" else (loss * torch.arange(40.0, dtype=torch.float64)).sum()).backward()
        losses.append(loss.detach().numpy())
        grads.append([t.grad.numpy() for t in (th, tw, tb)])
    assert_close(losses[0], losses[1])
    for a, c in zip(*grads):
        assert_close(a, c)


@needs_torch
def test_torch_function_defaults_and_one_sample():
    import fastopt.torch as ft

    h, w, y, _, _ = problem(5, 4, 6, ignored=(1,))
    th, tw, ty = torch.tensor(h), torch.tensor(w), torch.tensor(y)
    np.testing.assert_allclose(ft.linear_cross_entropy(th, tw, ty).item(),
                               F.cross_entropy(F.linear(th, tw), ty).item(), rtol=1e-12)
    one = ft.linear_cross_entropy(th[0], tw, ty[0], reduction="none")
    assert one.shape == ()
    np.testing.assert_allclose(one.item(), F.cross_entropy(F.linear(th[0:1], tw), ty[0:1]).item(), rtol=1e-12)
    # only the tensors that want a gradient get one
    tw.requires_grad_()
    loss = ft.linear_cross_entropy(th, tw, ty)
    loss.backward()
    assert th.grad is None and tw.grad is not None


@needs_torch
@pytest.mark.skipif(torch is not None and not hasattr(torch.library, "opcheck"), reason="torch has no opcheck")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_ops_pass_opcheck(reduction, bias):
    """torch's own check of a custom op: schema, fake (meta) shapes, autograd registration, AOT dispatch."""
    import fastopt.torch  # noqa: F401  (registers the ops)

    h, w, y, b, wc = problem(9, 4, 6, ignored=(2,), classes=True)
    th, tw = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    args = (th, tw, torch.tensor(y), tb, torch.tensor(wc), reduction, -100, 0.1, 1e-2)
    torch.library.opcheck(torch.ops.fastopt.linear_cross_entropy.default, args)
    forward = torch.ops.fastopt.linear_cross_entropy(*(a.detach() if torch.is_tensor(a) else a for a in args))
    grad_loss = torch.arange(9.0, dtype=torch.float64) if reduction == "none" else torch.tensor(2.0, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastopt.linear_cross_entropy_backward.default,
                          (grad_loss, *forward[1:], *(a.detach() if torch.is_tensor(a) else a for a in args)))


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_function_compiles_without_graph_breaks(reduction):
    """Under torch.compile the loss is one opaque op (its backward another): no graph break, eager's numbers,
    for a uniform grad_output and, with "none", a per-row one (the backward that reruns the chunks)."""
    import fastopt.torch as ft

    h, w, y, b, _ = problem(12, 5, 9, ignored=(4,))
    ty = torch.tensor(y)

    def loss_of(th, tw, tb):
        loss = ft.linear_cross_entropy(th, tw, ty, linear_bias=tb, reduction=reduction, label_smoothing=0.1)
        return loss if reduction != "none" else (loss * torch.arange(12.0, dtype=torch.float64)).sum()

    explained = torch._dynamo.explain(loss_of)(*(torch.tensor(a) for a in (h, w, b)))
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(loss_of, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (loss_of, compiled):
        tensors = [torch.tensor(a, requires_grad=True) for a in (h, w, b)]
        loss = fn(*tensors)
        loss.backward()
        results.append([loss.detach().numpy()] + [t.grad.numpy() for t in tensors])
    for ours, eager in zip(*results):
        np.testing.assert_array_equal(ours, eager)


# --- fastopt train --linear-ce ----------------------------------------------------------------------------

def test_demo_mlp_through_linear_cross_entropy_has_the_same_numbers():
    from fastopt.demo import train

    rng = np.random.default_rng(3)
    params = train.mlp_params(12, 9, 5, rng, np.float64)
    params[1] += 0.1 * rng.standard_normal(9)
    params[3] += 0.1 * rng.standard_normal(5)
    X, y = rng.standard_normal((30, 12)), rng.integers(0, 5, 30)
    plain = train.mlp_loss_grad([p.copy() for p in params], X, y, l1=1e-3, l2=1e-3)
    fused = train.mlp_linear_ce_loss_grad([p.copy() for p in params], X, y, l1=1e-3, l2=1e-3)
    assert fused[0] == pytest.approx(plain[0], rel=1e-12)
    for a, c in zip(fused[1], plain[1]):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13)
    model = train.make_model("mlp", 12, 5, 9, linear_ce=True)
    assert model.loss_grad is train.mlp_linear_ce_loss_grad


# --- fastopt bench's linear rows --------------------------------------------------------------------------

def test_bench_plans_and_builds_the_linear_case():
    from fastopt.bench import cli, linear_memory
    from fastopt.bench.backends import select_backends
    from fastopt.bench.cases import linear_loss_case, plan_cases

    args = cli.build_parser().parse_args(["--quick", "--part", "losses"])
    assert "linear_cross_entropy" in args.losses
    shapes = [cli.parse_linear_shape(s) for s in cli.QUICK_LINEAR_SHAPES]
    pending = plan_cases([], [], False, [], args.losses, select_backends(), shapes)
    assert [p.name for p in pending] == ["linear_ce"]
    case = linear_loss_case(40, 8, 30, select_backends(), memory=False)
    assert case.probe is None and next(iter(case.impls)) == "fastopt"
    if torch is not None:
        assert {"fastopt.torch", "torch linear+ce"} <= set(case.impls)
    for fn in case.impls.values():
        fn()
    if sys.platform.startswith("linux"):
        # a plain (N, V) implementation holds its logits: the child's measurement sees them
        assert linear_memory.measure("fastopt", 64, 8, 4096) >= 0
        if torch is not None:
            assert linear_memory.measure("torch linear+ce", 2048, 8, 4096) >= 2048 * 4096 * 4


@needs_torch
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the bench measures peak memory on Linux only")
def test_the_bench_memory_child_runs_from_the_repository_root():
    # `fastopt bench` run in the repository root (as the Quick start does) measures each implementation's peak
    # memory in a `python -m` child: it must import the installed fastopt, not the source folder there.
    from repo_paths import ROOT as root
    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', %r)]\n"
            "from fastopt.bench import linear_memory\n"
            "print(linear_memory.measure('fastopt', 64, 16, 100, timeout=240))" % root)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] != "None", "the child failed: no memory figure"
