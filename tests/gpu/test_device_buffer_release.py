"""DeviceBuffer (fastopt._device): its memory is freed stream-ordered on its own stream, so the free must first
wait for every stream it was handed to through __dlpack__ (a consumer on another stream may still be reading
it when the last reference goes; torch's record_stream solves the same problem for its allocator).

The ordering logic is Python over three native calls (allocate, order_after, release), so it is checked
here without a GPU, against a stand-in for the compiled module that records the calls; the GPU half
(order_after's event and wait) is test_cuda_frameworks.py's.
"""

from __future__ import annotations

import gc

import pytest

import fastopt._device as device_module


class RecordingCore:
    """The four native calls DeviceBuffer makes, recorded instead of run."""

    def __init__(self, fail_for=()):
        self.calls = []
        self.fail_for = set(fail_for)

    def _cuda_allocate(self, nbytes, device, stream):
        self.calls.append(("allocate", nbytes, device, stream))
        return 0x7000

    def _cuda_order_after(self, device, producer, consumer):
        if producer in self.fail_for:
            raise RuntimeError("CUDA error in cudaEventRecord: invalid resource handle")
        self.calls.append(("order_after", device, producer, consumer))

    def _cuda_release(self, ptr, device, stream):
        self.calls.append(("release", ptr, device, stream))

    def _dlpack_export(self, owner, ptr, shape, dtype, device_type, device, versioned):
        self.calls.append(("export",))
        return object()


@pytest.fixture
def core(monkeypatch):
    recording = RecordingCore()
    monkeypatch.setattr(device_module, "_core", recording)
    return recording


def release_calls(core):
    """The calls made when the buffer went: everything after its last export."""
    last_export = max(i for i, c in enumerate(core.calls) if c[0] == "export")
    return core.calls[last_export + 1:]


def test_the_free_waits_for_every_consumer_stream(core):
    buf = device_module.DeviceBuffer((4, 3), "float32", 1, 111)
    buf.__dlpack__(stream=222)     # a consumer on another stream
    buf.__dlpack__(stream=1)       # the legacy default stream (handle 0)
    buf.__dlpack__(stream=222)     # the same consumer again: waited for once
    buf.__dlpack__(stream=111)     # the buffer's own stream: nothing to wait for
    buf.__dlpack__(stream=-1)      # no ordering asked for: not remembered either
    del buf
    gc.collect()
    at_release = release_calls(core)
    assert at_release[-1] == ("release", 0x7000, 1, 111)
    waits = at_release[:-1]
    assert sorted(waits) == [("order_after", 1, 0, 111), ("order_after", 1, 222, 111)]


def test_a_buffer_never_exported_elsewhere_is_freed_at_once(core):
    buf = device_module.DeviceBuffer((8,), "float64", 0, 5)
    buf.__dlpack__(stream=5)
    del buf
    gc.collect()
    assert release_calls(core) == [("release", 0x7000, 0, 5)]


def test_a_consumer_stream_that_is_gone_does_not_stop_the_free(monkeypatch):
    recording = RecordingCore(fail_for={333})
    monkeypatch.setattr(device_module, "_core", recording)
    buf = device_module.DeviceBuffer((2,), "float32", 0, 7)
    buf.__dlpack__(stream=333)
    buf.__del__()  # (directly: an exception here would be raised, not just printed)
    assert recording.calls[-1] == ("release", 0x7000, 0, 7)
    buf.__del__()  # a second time frees nothing
    assert [c[0] for c in recording.calls].count("release") == 1
