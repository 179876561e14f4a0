"""Blockwise dynamic 8-bit quantisation (fastopt.QuantizedState, quantize_blockwise, dequantize_blockwise)
against the NumPy reference written from the paper (quant8_reference.py) and bitsandbytes' own maps and
quantiser where bitsandbytes is installed."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import _quantized
from quant8_reference import dequantize, dynamic_map_float64, quantize

MAPS = {True: _quantized.SIGNED_MAP, False: _quantized.UNSIGNED_MAP}
SIZES = [0, 1, 2, 255, 256, 257, 1000, 4096, 300007]  # 300007: past the size that threads the loop


@pytest.mark.parametrize("signed", [True, False])
def test_maps_are_the_dynamic_type(signed):
    qmap = MAPS[signed]
    assert qmap.dtype == np.float32 and qmap.shape == (256,)
    assert np.all(np.diff(qmap) > 0) and qmap[-1] == 1.0 and 0.0 in qmap
    assert qmap[0] == (-qmap[-2] if signed else 0.0)
    # the definition in float64: the float32 map is it to within float32 rounding
    np.testing.assert_allclose(qmap, dynamic_map_float64(signed), rtol=2e-7, atol=0)


@pytest.mark.parametrize("signed", [True, False])
def test_maps_equal_bitsandbytes(signed):
    torch = pytest.importorskip("torch")
    bnbf = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is not installed")
    assert np.array_equal(MAPS[signed], bnbf.create_dynamic_map(signed=signed).numpy())
    del torch


def _data(n, signed, rng):
    x = rng.standard_normal(n).astype(np.float32) * rng.choice([1e-6, 1e-3, 1.0, 1e3], n).astype(np.float32)
    return x if signed else np.abs(x)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", SIZES)
def test_codes_and_absmax_are_the_references(n, signed):
    x = _data(n, signed, np.random.default_rng(n))
    q = fastopt.quantize_blockwise(x, signed=signed)
    codes, absmax = quantize(x, MAPS[signed])
    assert q.codes.dtype == np.uint8 and q.absmax.dtype == np.float32
    assert np.array_equal(q.absmax, absmax)
    assert np.array_equal(q.codes, codes)
    assert np.array_equal(fastopt.dequantize_blockwise(q), dequantize(codes, absmax, MAPS[signed]))


@pytest.mark.parametrize("signed", [True, False])
def test_every_map_value_and_every_midpoint(signed):
    """Each map value quantises to its own code; values just above and below each midpoint between
    neighbours go to the nearer one, and the midpoint itself to the lower code (argmin's first)."""
    qmap = MAPS[signed]
    mids = ((qmap[:-1].astype(np.float64) + qmap[1:]) / 2).astype(np.float32)
    probes = np.concatenate([qmap, mids, np.nextafter(mids, np.float32(2)), np.nextafter(mids, np.float32(-2))])
    x = np.concatenate([probes, [np.float32(1.0)]]).astype(np.float32)  # the 1.0 fixes absmax at 1
    for start in range(0, x.size, 255):
        block = np.concatenate([x[start:start + 255], [np.float32(1.0)]])
        q = fastopt.quantize_blockwise(block, signed=signed)
        codes, absmax = quantize(block, qmap)
        assert q.absmax[0] == 1.0 and np.array_equal(q.codes, codes), start
    assert np.array_equal(fastopt.quantize_blockwise(qmap, signed=signed).codes, np.arange(256))


@pytest.mark.parametrize("signed", [True, False])
def test_every_exponent_and_every_bucket(signed):
    """Values drawn over float32 bit patterns, not magnitudes: every exponent from the smallest subnormals
    (which share the table's lowest buckets) to 1, each with random mantissa bits, so that every bucket
    of the lookup table and the order keys within them meet the argmin reference."""
    rng = np.random.default_rng(18)
    n = 255 * 400
    exponents = rng.integers(0, 128, n, dtype=np.uint32)  # biased: 0 (zero, subnormals) .. 127 (1.0 and up)
    bits = (exponents << 23) | rng.integers(0, 1 << 23, n, dtype=np.uint32)
    if signed:
        bits |= rng.integers(0, 2, n, dtype=np.uint32) << 31
    x = np.clip(bits.view(np.float32), np.float32(-1.0), np.float32(1.0)).reshape(-1, 255)
    # one 1.0 per block of 256 fixes each absmax at 1, so the values are quantised as drawn
    blocks = np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], axis=1).ravel()
    q = fastopt.quantize_blockwise(blocks, signed=signed)
    codes, absmax = quantize(blocks, MAPS[signed])
    assert np.all(q.absmax == 1.0) and np.array_equal(q.absmax, absmax)
    assert np.array_equal(q.codes, codes)


def test_edge_blocks():
    zeros = fastopt.quantize_blockwise(np.zeros(300, np.float32))
    assert np.all(zeros.absmax == 0) and np.all(zeros.dequantize() == 0)
    same = fastopt.quantize_blockwise(np.full(256, 3.5, np.float32))
    assert same.absmax[0] == 3.5 and np.all(same.dequantize() == 3.5)
    # the signed map's most negative value is -0.99296875, not -1 (bitsandbytes' map): -absmax reads back so
    low = fastopt.quantize_blockwise(np.full(256, -3.5, np.float32))
    assert np.all(low.codes == 0) and np.all(low.dequantize() == np.float32(_quantized.SIGNED_MAP[0] * np.float32(3.5)))
    # the unsigned map has no negative values: a negative value reads back as 0 (its nearest)
    neg = fastopt.quantize_blockwise(np.array([-1.0, 0.5, 1.0], np.float32), signed=False)
    assert neg.dequantize()[0] == 0.0
    assert fastopt.QuantizedState.zeros((3, 100), signed=True).dequantize().shape == (3, 100)


def test_matches_bitsandbytes_quantize_blockwise():
    """The same absmax; codes never farther from the value than bitsandbytes' (its CPU quantiser is not
    exactly nearest: values near a midpoint may go either way, and |x / absmax| below about 1.5e-5 all
    go to its code 131, 2.125e-5, where the nearest is 0 or +-5.5e-7); on plain normal data
    all but a few near-ties the same codes."""
    torch = pytest.importorskip("torch")
    bnbf = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is not installed")
    qmap = MAPS[True].astype(np.float64)
    x = _data(10_000, True, np.random.default_rng(1))
    ours = fastopt.quantize_blockwise(x)
    codes, state = bnbf.quantize_blockwise(torch.from_numpy(x), blocksize=256)
    assert np.array_equal(state.absmax.numpy(), ours.absmax)
    normal = x / np.repeat(ours.absmax, 256)[:x.size]
    assert np.all(np.abs(normal - qmap[ours.codes]) <= np.abs(normal - qmap[codes.numpy()]))
    plain = np.random.default_rng(2).standard_normal(4096).astype(np.float32)
    same = bnbf.quantize_blockwise(torch.from_numpy(plain), blocksize=256)[0].numpy() == fastopt.quantize_blockwise(plain).codes
    assert same.mean() > 0.99, same.mean()
    # and bitsandbytes reads our state back to our values: the same format
    back = bnbf.dequantize_blockwise(torch.from_numpy(ours.codes), state)
    assert np.array_equal(back.numpy(), ours.dequantize())


def test_torch_tensors_hold_the_state():
    torch = pytest.importorskip("torch")
    x = _data(700, True, np.random.default_rng(2))
    q = fastopt.QuantizedState(torch.zeros(700, dtype=torch.uint8), torch.zeros(3), signed=True)
    fastopt._core._quantize_blockwise(torch.from_numpy(x), q.codes, q.absmax, _quantized.SIGNED_MAP)
    ref = fastopt.quantize_blockwise(x)
    assert np.array_equal(q.codes.numpy(), ref.codes) and np.array_equal(q.absmax.numpy(), ref.absmax)


@pytest.mark.parametrize("make, message", [
    (lambda x: (x.astype(np.float64), np.zeros(4, np.uint8), np.zeros(1, np.float32)), "float32"),
    (lambda x: (x, np.zeros(4, np.int32), np.zeros(1, np.float32)), "uint8"),
    (lambda x: (x, np.zeros(4, np.uint8), np.zeros(1, np.float64)), "absmax"),
    (lambda x: (x, np.zeros(5, np.uint8), np.zeros(1, np.float32)), "shape"),
    (lambda x: (x, np.zeros(4, np.uint8), np.zeros(2, np.float32)), "blocks of 256"),
])
def test_bad_arrays_are_refused(make, message):
    x, codes, absmax = make(np.ones(4, np.float32))
    before = codes.copy(), absmax.copy()
    with pytest.raises((TypeError, ValueError), match=message):
        fastopt._core._quantize_blockwise(x, codes, absmax, _quantized.SIGNED_MAP)
    assert np.array_equal(codes, before[0]) and np.array_equal(absmax, before[1])


def test_only_the_registered_maps():
    with pytest.raises(ValueError, match="SIGNED_MAP"):
        fastopt._core._quantize_blockwise(np.ones(4, np.float32), np.zeros(4, np.uint8), np.zeros(1, np.float32),
                                          _quantized.SIGNED_MAP.copy())
    with pytest.raises(TypeError, match="QuantizedState"):
        fastopt.dequantize_blockwise(np.zeros(4, np.uint8))


def test_a_map_the_lookup_table_cannot_serve_exactly_is_refused():
    """The table finds the count of decision bounds (the midpoints between neighbouring map values) below x
    exactly only when no bucket (x's sign, exponent and top 8 mantissa bits) holds two of them;
    registration checks it, and a refused map changes nothing."""
    dense = np.sort(np.concatenate([np.linspace(0.5, 0.5 + 255 * 2 ** -24, 255), [1.0]])).astype(np.float32)
    with pytest.raises(ValueError, match="lookup bucket"):
        fastopt._core._register_quantized(fastopt.QuantizedState, dense, _quantized.UNSIGNED_MAP)
    x = _data(1000, True, np.random.default_rng(9))
    assert np.array_equal(fastopt.quantize_blockwise(x).codes, quantize(x, MAPS[True])[0])
