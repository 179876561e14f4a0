"""Checkpoints of the stateful optimizers: their state and hyperparameters in one .npz file.

``opt.save(path)`` / ``opt.load(path)`` (the same as ``save_checkpoint(opt, path)`` /
``load_checkpoint(opt, path)``). The file is a plain NumPy .npz archive, read with
``allow_pickle=False``, so loading a file runs no code from it. It holds:

    fastopt_checkpoint   the format version (an int)
    optimizer            the class name ("AdamW", ...)
    meta                 JSON: hyperparameters per group (a schedule lr as its description), the
                         groups' schedule step counts, the params' shapes and dtypes, and the
                         per-parameter scalars (step counts, absent momentum buffers)
    state/<i>/<key>      every state array, exactly as it was (so a resumed run is bit-identical);
                         a bfloat16 array (ml_dtypes, which .npy cannot describe) as its uint16 bit
                         patterns, its entry named in meta's "bfloat16_arrays"; an 8-bit state
                         (fastopt.QuantizedState) as state/<i>/<key>.codes and .absmax, its entry
                         and map (signed or not) in meta's "quantized_states"

The parameters themselves are the caller's, as with torch: save them beside the checkpoint
(np.savez) if the run is to resume. ``load`` reads and checks everything first (readable archive,
format version, optimizer class, number of groups and parameters, shapes and dtypes of the params
and of every state array, the hyperparameters' names and values) and changes the optimizer only when
all of it is right; otherwise it raises ValueError saying what is wrong and the optimizer is as it was.
``save`` writes a temporary file beside the target and renames it over the target, so a crash while
saving never leaves a half-written checkpoint under the target's name.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Dict, List

import numpy as np

from fastopt._hyper import MAX_STEP_COUNT
from fastopt._quantized import QuantizedState
from fastopt.optim._state_dtype import bfloat16, is_bfloat16

FORMAT_VERSION = 1
_STATE_PREFIX = "state/"


def _jsonable(value: Any, where: str) -> Any:
    """A hyperparameter or state scalar as JSON (NumPy scalars become Python numbers)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot store")


def _hyper_entry(value: Any, where: str) -> Any:
    """A hyperparameter as JSON. A schedule given as lr is code, not state: the checkpoint records
    its description ({"schedule": repr}) and the per-group step counts (schedule_steps), and load
    keeps the optimizer's own schedule object after checking that it is described the same way."""
    if callable(value):
        return {"schedule": repr(value)}
    return _jsonable(value, where)


def save_checkpoint(optimizer, path) -> None:
    """Writes the optimizer's state and hyperparameters to the .npz file `path` (replaced if it
    exists; the name is used as given, no suffix is added)."""
    arrays: Dict[str, np.ndarray] = {}
    scalars: Dict[str, Dict[str, Any]] = {}
    bfloat16_arrays: List[str] = []
    quantized_states: Dict[str, bool] = {}
    for i, state in optimizer.state.items():
        scalars[str(i)] = {}
        for key, value in state.items():
            if isinstance(value, QuantizedState):
                entry = f"{_STATE_PREFIX}{i}/{key}"
                arrays[entry + ".codes"] = np.asarray(value.codes)
                arrays[entry + ".absmax"] = np.asarray(value.absmax)
                quantized_states[entry] = value.signed
            elif isinstance(value, np.ndarray):
                if is_bfloat16(value.dtype):
                    bfloat16_arrays.append(f"{_STATE_PREFIX}{i}/{key}")
                    value = value.view(np.uint16)
                arrays[f"{_STATE_PREFIX}{i}/{key}"] = value
            else:
                scalars[str(i)][key] = _jsonable(value, f"state[{i}][{key!r}]")
    groups = []
    for k, group in enumerate(optimizer.param_groups):
        groups.append({"hyper": {key: _hyper_entry(value, f"param_groups[{k}][{key!r}]")
                                 for key, value in group.items() if key != "params"},
                       "params": len(group["params"])})
    meta = {"param_groups": groups, "schedule_steps": list(optimizer.schedule_steps),
            # (bfloat16 by name: NumPy's spelling of ml_dtypes' dtype, "|V2", does not read back as it)
            "params": [{"shape": list(p.shape), "dtype": "bfloat16" if is_bfloat16(p.dtype) else p.dtype.str}
                       for p in optimizer._all_params()],
            "state": scalars}
    if bfloat16_arrays:
        meta["bfloat16_arrays"] = bfloat16_arrays
    if quantized_states:
        meta["quantized_states"] = quantized_states

    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "cannot save a checkpoint over a folder", path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        try:
            f = open(temporary, "wb")
        except OSError as error:
            # Named as the caller gave it, not as the temporary file beside it.
            reason = (f"the folder {folder!r} does not exist" if not os.path.isdir(folder)
                      else error.strerror or str(error))
            raise type(error)(error.errno, f"cannot save the checkpoint: {reason}", path) from None
        with f:
            np.savez(f, fastopt_checkpoint=np.array(FORMAT_VERSION),
                     optimizer=np.array(type(optimizer).__name__), meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member, or the end of an empty archive
_NPY_MAGIC = b"\x93NUMPY"


def _read(path: str) -> Dict[str, np.ndarray]:
    """Every member of the archive, read in full (so zip's CRC-32 of each member is verified)."""
    with open(path, "rb") as f:  # (a missing file, a folder, no permission: the OSError as it is)
        head = f.read(6)
    if not head:
        raise ValueError(f"{path} is not a readable fastopt checkpoint: the file is empty (truncated?)")
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path} is not a fastopt checkpoint: it is a single .npy array, not the .npz "
                         "archive opt.save writes")
    if not head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path} is not a fastopt checkpoint: not an .npz archive (opt.save writes a zip "
                         "file; this one starts with other bytes)")
    name = None
    contents: Dict[str, Any] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                contents[name] = archive[name]
    except Exception as error:  # BadZipFile, EOFError, ValueError, zlib.error, OSError ...
        if name is not None and isinstance(error, ValueError) and "allow_pickle" in str(error):
            # (NumPy's advice to load it with allow_pickle=True is not passed on: a checkpoint holds
            # no Python objects, and loading one would run code from the file.)
            raise ValueError(f"{path} is not a fastopt checkpoint: its member {name!r} holds Python objects "
                             "(pickled data), which fastopt never writes and does not load") from None
        raise ValueError(f"{path} is not a readable fastopt checkpoint (truncated or corrupted?): "
                         f"{type(error).__name__}: {error}") from error
    for name, value in contents.items():
        if not isinstance(value, np.ndarray):  # (np.load gives a member that is not .npy data as bytes)
            raise ValueError(f"{path} is not a fastopt checkpoint: its member {name!r} is not a NumPy array")
    return contents


def load_checkpoint(optimizer, path) -> None:
    """Restores a save_checkpoint() of an optimizer of the same class over parameters of the same
    shapes and dtypes; training then continues bit-identically. Raises ValueError, changing nothing,
    when the file is unreadable or does not match the optimizer."""
    path = os.fspath(path)
    contents = _read(path)
    what = f"checkpoint {path}"
    try:
        groups, state, schedule_steps = _restore(optimizer, contents, what)
    except RecursionError:  # (a hostile file: JSON nested deeper than any checkpoint's)
        raise ValueError(f"{what}: the metadata is nested too deeply to be a fastopt checkpoint's") from None
    # Everything checked: now replace.
    for group, hyper in zip(optimizer.param_groups, groups):
        group.update(hyper)
    optimizer.state = state
    optimizer.schedule_steps = schedule_steps


def _restore(optimizer, contents: Dict[str, np.ndarray], what: str):
    """The groups' hyperparameters, the state and the schedule counts that `contents` (the archive's
    members) restore into `optimizer`, all checked; ValueError naming the file and the fault otherwise."""

    def fail(message: str):
        raise ValueError(f"{what}: {message}")

    for required in ("fastopt_checkpoint", "optimizer", "meta"):
        if required not in contents:
            fail(f"has no '{required}' entry; not a fastopt checkpoint")
    version = _header(contents, "fastopt_checkpoint", "iu", "an integer", fail)
    name = _header(contents, "optimizer", "U", "a string", fail)
    text = _header(contents, "meta", "U", "a JSON string", fail)
    if version != FORMAT_VERSION:
        fail(f"format version {version}; this fastopt reads version {FORMAT_VERSION}")
    if name != type(optimizer).__name__:
        fail(f"holds a {name} optimizer, not a {type(optimizer).__name__}")
    try:
        meta = json.loads(text)
    except ValueError as error:
        fail(f"unreadable header: 'meta' is not JSON: {error}")
    counts, hypers, shapes, scalars, schedule_steps = _parse_meta(meta, fail)
    bfloat16_arrays = meta.get("bfloat16_arrays", []) if isinstance(meta, dict) else []
    if not isinstance(bfloat16_arrays, list) or not all(isinstance(e, str) for e in bfloat16_arrays):
        fail(f"malformed metadata: bfloat16_arrays is {_short(bfloat16_arrays)}, not a list of entry names")
    for entry in bfloat16_arrays:
        stored = contents.get(entry)
        if entry in ("fastopt_checkpoint", "optimizer", "meta") or not isinstance(stored, np.ndarray) \
                or stored.dtype != np.uint16:
            fail(f"malformed metadata: bfloat16_arrays names {_short(entry)}, which is not a uint16 state array")
    if bfloat16_arrays:
        contents = dict(contents)
        for entry in bfloat16_arrays:
            contents[entry] = contents[entry].view(bfloat16())

    # The parameters: count, grouping, shapes, dtypes.
    params = optimizer._all_params()
    if len(shapes) != len(params):
        fail(f"has {len(shapes)} parameters, the optimizer has {len(params)}")
    if len(counts) != len(optimizer.param_groups):
        fail(f"has {len(counts)} param groups, the optimizer has {len(optimizer.param_groups)}")
    for k, (count, group) in enumerate(zip(counts, optimizer.param_groups)):
        if count != len(group["params"]):
            fail(f"param group {k} has {count} parameters, the optimizer's has {len(group['params'])}")
    for i, ((shape, dtype), p) in enumerate(zip(shapes, params)):
        if shape != p.shape or dtype != p.dtype:
            fail(f"params[{i}] was {dtype} {shape}, the optimizer's is {p.dtype} {p.shape}")
    if len(schedule_steps) != len(hypers):
        fail(f"schedule_steps {schedule_steps!r} do not give one count per param group")

    # The hyperparameters: the same names, and values the kernels accept.
    new_groups: List[Dict[str, Any]] = []
    for k, (hyper, group) in enumerate(zip(hypers, optimizer.param_groups)):
        expected = set(group) - {"params"}
        if set(hyper) != expected:
            fail(f"param group {k} has hyperparameters {sorted(hyper)}, expected {sorted(expected)}")
        restored = {}
        for key, value in hyper.items():
            if isinstance(value, dict):  # a schedule: the optimizer must have one described alike
                ours = group[key]
                described = value.get("schedule")
                if set(value) != {"schedule"} or not isinstance(described, str):
                    fail(f"param group {k}'s {key} is {_short(value)}, neither a value nor a schedule's description")
                if not callable(ours) or described != repr(ours):
                    fail(f"param group {k}'s {key} was the schedule {described}, the optimizer's is {ours!r}")
                value = ours
            elif isinstance(group[key], tuple) and isinstance(value, list):
                value = tuple(value)
            restored[key] = value
        try:
            optimizer._check_group(optimizer._effective(dict(restored, params=group["params"]), schedule_steps[k]))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what}: param group {k}: {error}") from error
        new_groups.append(restored)

    # The state: the scalars of the metadata and the arrays of the archive, per parameter.
    new_state: Dict[int, Dict[str, Any]] = {i: dict(s) for i, s in scalars.items()}
    contents, quantized = _quantized_entries(meta, contents, fail)
    for entry, value in quantized.items():
        parts = entry.split("/")
        if len(parts) != 3 or parts[0] + "/" != _STATE_PREFIX or _index(parts[1]) is None or not parts[2]:
            fail(f"malformed metadata: quantized_states names {_short(entry)}")
        new_state.setdefault(_index(parts[1]), {})[parts[2]] = value
    for entry, array in contents.items():
        if entry in ("fastopt_checkpoint", "optimizer", "meta"):
            continue
        parts = entry.split("/")
        if len(parts) != 3 or parts[0] + "/" != _STATE_PREFIX or _index(parts[1]) is None or not parts[2]:
            fail(f"unexpected entry '{entry}'")
        state = new_state.setdefault(_index(parts[1]), {})
        if parts[2] in state:
            fail(f"state[{parts[1]}][{parts[2]!r}] is both in the metadata and an array")
        # (np.asarray, not np.ascontiguousarray, which makes a 0-d array 1-d; np.load gives a fresh,
        # writeable, C-ordered array)
        state[parts[2]] = np.asarray(array, order="C")
    for i, state in new_state.items():
        if not 0 <= i < len(params):
            fail(f"has state for parameter {i}, the optimizer has {len(params)} parameters")
        if state:
            try:
                optimizer._check_state(i, params[i], state)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{what}: {error}") from error
    return new_groups, new_state, schedule_steps


def _header(contents, key: str, kinds: str, expected: str, fail) -> Any:
    """A header member: a 0-d array of one of the dtype `kinds`, as a Python value."""
    value = contents[key]
    if value.shape != () or value.dtype.kind not in kinds:
        fail(f"unreadable header: '{key}' is a {value.dtype} array of shape {value.shape}, not {expected}")
    return value.item()


def _index(text: Any) -> Any:
    """A parameter index written as decimal digits ("0", "12"), or None."""
    if isinstance(text, str) and text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0")):
        return int(text)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_meta(meta: Any, fail):
    """The metadata's parts, each of the type the format gives it, or `fail` saying which is not."""

    def field(owner: Any, key: str, kind, where: str, default: Any = None):
        if not isinstance(owner, dict):
            fail(f"malformed metadata: {where} is {_short(owner)}, not a JSON object")
        if key not in owner:
            if default is not None:
                return default
            fail(f"malformed metadata: {where} has no '{key}'")
        value = owner[key]
        if not isinstance(value, kind):
            fail(f"malformed metadata: {where}['{key}'] is {_short(value)}, not a JSON "
                 f"{'object' if kind is dict else 'list'}")
        return value

    def count(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(f"malformed metadata: {where} is {_short(value)}, not a count >= 0")
        return value

    groups = field(meta, "param_groups", list, "meta")
    counts, hypers = [], []
    for k, g in enumerate(groups):
        hypers.append(field(g, "hyper", dict, f"param_groups[{k}]"))
        counts.append(count(g.get("params"), f"param_groups[{k}]['params']"))
    shapes = []
    for i, p in enumerate(field(meta, "params", list, "meta")):
        dims = field(p, "shape", list, f"params[{i}]")
        shape = tuple(count(d, f"params[{i}]['shape']") for d in dims)
        dtype = p.get("dtype")
        try:
            if not isinstance(dtype, str):
                raise TypeError
            dtype = bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
        except (TypeError, ValueError):
            fail(f"malformed metadata: params[{i}]['dtype'] is {_short(dtype)}, not a NumPy dtype")
        shapes.append((shape, dtype))
    scalars = {}
    for key, entries in field(meta, "state", dict, "meta").items():
        i = _index(key)
        if i is None:
            fail(f"malformed metadata: the state key {_short(key)} is not a parameter index")
        if not isinstance(entries, dict):
            fail(f"malformed metadata: state[{i}] is {_short(entries)}, not a JSON object")
        scalars[i] = entries
    schedule_steps = field(meta, "schedule_steps", list, "meta", default=[0] * len(groups))
    for k, value in enumerate(schedule_steps):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEP_COUNT:
            fail(f"malformed metadata: schedule_steps[{k}] is {_short(value)}, not a step count in [0, 2**63 - 2]")
    return counts, hypers, shapes, scalars, schedule_steps


def _quantized_entries(meta, contents: Dict[str, np.ndarray], fail):
    """The archive's members without the 8-bit states meta's "quantized_states" names, and those states
    (entry -> QuantizedState over the stored codes and absmax)."""
    named = meta.get("quantized_states", {}) if isinstance(meta, dict) else {}
    if not isinstance(named, dict) or not all(isinstance(k, str) and isinstance(v, bool) for k, v in named.items()):
        fail(f"malformed metadata: quantized_states is {_short(named)}, not a map of entry names to signed flags")
    if not named:
        return contents, {}
    contents = dict(contents)
    states = {}
    for entry, signed in named.items():
        codes, absmax = contents.pop(entry + ".codes", None), contents.pop(entry + ".absmax", None)
        if not (isinstance(codes, np.ndarray) and codes.dtype == np.uint8):
            fail(f"quantized_states names {_short(entry)}, but its .codes is not a uint8 array")
        if not (isinstance(absmax, np.ndarray) and absmax.dtype == np.float32 and absmax.ndim == 1):
            fail(f"quantized_states names {_short(entry)}, but its .absmax is not a float32 vector")
        states[entry] = QuantizedState(np.asarray(codes, order="C"), np.asarray(absmax, order="C"), signed)
    return contents, states
