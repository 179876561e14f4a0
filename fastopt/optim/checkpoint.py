"""Checkpoints of the stateful optimizers: their state and hyperparameters in one .npz file.

``opt.save(path)`` / ``opt.load(path)`` (the same as ``save_checkpoint(opt, path)`` /
``load_checkpoint(opt, path)``). The file is a plain NumPy .npz archive, read with
``allow_pickle=False``, so loading a file runs no code from it. It holds:

    fastopt_checkpoint   the format version (an int)
    optimizer            the class name ("AdamW", ...)
    meta                 JSON: hyperparameters per group (a schedule lr as its description), the
                         groups' schedule step counts, the params' shapes and dtypes, and the
                         per-parameter scalars (step counts, absent momentum buffers)
    state/<i>/<key>      every state array, exactly as it was (so a resumed run is bit-identical)

The parameters themselves are the caller's, as with torch: save them beside the checkpoint
(np.savez) if the run is to resume. ``load`` reads and checks everything first (readable archive,
format version, optimizer class, number of groups and parameters, shapes and dtypes of the params
and of every state array, the hyperparameters' names and values) and changes the optimizer only when
all of it is right; otherwise it raises ValueError saying what is wrong and the optimizer is as it was.
``save`` writes a temporary file beside the target and renames it over the target, so a crash while
saving never leaves a half-written checkpoint under the target's name.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import numpy as np

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
    for i, state in optimizer.state.items():
        scalars[str(i)] = {}
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{_STATE_PREFIX}{i}/{key}"] = value
            else:
                scalars[str(i)][key] = _jsonable(value, f"state[{i}][{key!r}]")
    groups = []
    for k, group in enumerate(optimizer.param_groups):
        groups.append({"hyper": {key: _hyper_entry(value, f"param_groups[{k}][{key!r}]")
                                 for key, value in group.items() if key != "params"},
                       "params": len(group["params"])})
    meta = {"param_groups": groups, "schedule_steps": list(optimizer.schedule_steps),
            "params": [{"shape": list(p.shape), "dtype": p.dtype.str} for p in optimizer._all_params()],
            "state": scalars}

    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            np.savez(f, fastopt_checkpoint=np.array(FORMAT_VERSION),
                     optimizer=np.array(type(optimizer).__name__), meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _read(path: str) -> Dict[str, np.ndarray]:
    """Every member of the archive, read in full (so zip's CRC-32 of each member is verified)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {name: archive[name] for name in archive.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # BadZipFile, EOFError, ValueError, zlib.error, OSError ...
        raise ValueError(f"{path} is not a readable fastopt checkpoint (truncated or corrupted?): "
                         f"{type(error).__name__}: {error}") from error


def load_checkpoint(optimizer, path) -> None:
    """Restores a save_checkpoint() of an optimizer of the same class over parameters of the same
    shapes and dtypes; training then continues bit-identically. Raises ValueError, changing nothing,
    when the file is unreadable or does not match the optimizer."""
    path = os.fspath(path)
    contents = _read(path)
    what = f"checkpoint {path}"

    def fail(message: str):
        raise ValueError(f"{what}: {message}")

    for required in ("fastopt_checkpoint", "optimizer", "meta"):
        if required not in contents:
            fail(f"has no '{required}' entry; not a fastopt checkpoint")
    try:
        version = int(contents["fastopt_checkpoint"])
        name = str(contents["optimizer"])
        meta = json.loads(str(contents["meta"]))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: unreadable header: {error}") from error
    if version != FORMAT_VERSION:
        fail(f"format version {version}; this fastopt reads version {FORMAT_VERSION}")
    if name != type(optimizer).__name__:
        fail(f"holds a {name} optimizer, not a {type(optimizer).__name__}")
    try:
        saved_groups = meta["param_groups"]
        saved_params = meta["params"]
        saved_scalars = meta["state"]
        counts = [int(g["params"]) for g in saved_groups]
        hypers = [dict(g["hyper"]) for g in saved_groups]
        shapes = [(tuple(int(d) for d in p["shape"]), np.dtype(p["dtype"])) for p in saved_params]
        scalars = {int(i): dict(s) for i, s in saved_scalars.items()}
        schedule_steps = [int(k) for k in meta.get("schedule_steps", [0] * len(saved_groups))]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{what}: malformed metadata: {error!r}") from error

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

    # The hyperparameters: the same names, and values the kernels accept.
    new_groups: List[Dict[str, Any]] = []
    for k, (hyper, group) in enumerate(zip(hypers, optimizer.param_groups)):
        expected = set(group) - {"params"}
        if set(hyper) != expected:
            fail(f"param group {k} has hyperparameters {sorted(hyper)}, expected {sorted(expected)}")
        restored = {key: (tuple(value) if isinstance(group[key], tuple) and isinstance(value, list) else value)
                    for key, value in hyper.items()}
        for key, value in hyper.items():
            if isinstance(value, dict):  # a schedule: the optimizer must have one described alike
                ours = group[key]
                if not callable(ours) or value.get("schedule") != repr(ours):
                    fail(f"param group {k}'s {key} was the schedule {value.get('schedule')}, the "
                         f"optimizer's is {ours!r}")
                restored[key] = ours
        if len(schedule_steps) != len(hypers) or schedule_steps[k] < 0:
            fail(f"schedule_steps {schedule_steps!r} do not give one count >= 0 per param group")
        trial = optimizer._effective(dict(restored, params=group["params"]), schedule_steps[k])
        try:
            optimizer._check_group(trial)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what}: param group {k}: {error}") from error
        new_groups.append(restored)

    # The state: every array of its parameter's shape and dtype, the keys the optimizer uses.
    new_state: Dict[int, Dict[str, Any]] = {i: dict(s) for i, s in scalars.items()}
    for entry, array in contents.items():
        if entry in ("fastopt_checkpoint", "optimizer", "meta"):
            continue
        parts = entry.split("/")
        if len(parts) != 3 or parts[0] + "/" != _STATE_PREFIX or not parts[1].isdigit():
            fail(f"unexpected entry '{entry}'")
        new_state.setdefault(int(parts[1]), {})[parts[2]] = array
    starts = optimizer._group_starts() + [len(params)]
    for i, state in new_state.items():
        if not 0 <= i < len(params):
            fail(f"has state for parameter {i}, the optimizer has {len(params)} parameters")
        group = optimizer.param_groups[max(k for k in range(len(starts) - 1) if starts[k] <= i)]
        fresh: Dict[str, Any] = {}
        optimizer._init_state(fresh, params[i], group)
        allowed = set(fresh) | set(optimizer._lazy_state)
        if state and not set(fresh) <= set(state):
            fail(f"state of params[{i}] lacks {sorted(set(fresh) - set(state))}")
        for key, value in state.items():
            if key not in allowed:
                fail(f"state of params[{i}] has an unknown entry '{key}'")
            if isinstance(value, np.ndarray):
                if value.shape != params[i].shape or value.dtype != params[i].dtype:
                    fail(f"state[{i}][{key!r}] is {value.dtype} {value.shape}, but params[{i}] is "
                         f"{params[i].dtype} {params[i].shape}")
                state[key] = np.ascontiguousarray(value)  # np.load gives a fresh, writeable array
            elif key == "step":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    fail(f"state[{i}]['step'] is {value!r}, not a count >= 0")
            elif value is not None or isinstance(fresh.get(key), np.ndarray):
                fail(f"state[{i}][{key!r}] is {value!r}, expected an array")

    # Everything checked: now replace.
    for group, hyper in zip(optimizer.param_groups, new_groups):
        group.update(hyper)
    optimizer.state = new_state
    optimizer.schedule_steps = schedule_steps
