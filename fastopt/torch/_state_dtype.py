"""Compact optimizer state for the torch twins (issue 18): `state_dtype` and its state layouts. Adam / AdamW,
SGD, Adagrad and RMSprop take all three (their keys: `keys` below), and so do the twins of the element-wise rules
(NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion: state j holds the rule's j-th state; Lion's loads into
bitsandbytes.optim.Lion8bit).

- "float32" (also None and torch.float32; the default): today's state, torch's keys and dtypes.
- "bfloat16" (also torch.bfloat16): torch's keys (Adam's exp_avg, exp_avg_sq, max_exp_avg_sq; SGD's
  momentum_buffer; Adagrad's sum; RMSprop's square_avg, momentum_buffer, grad_avg), torch.bfloat16 tensors;
  the kernel reads them, updates in float32 and rounds back (round-to-nearest-even, or stochastically with
  stochastic_rounding=True).
- "int8": bitsandbytes' layout, so that a twin's state_dict loads into bitsandbytes.optim.Adam8bit/AdamW8bit
  (two states: Optimizer2State) or SGD8bit / Adagrad8bit / RMSprop8bit (one state: Optimizer1State) and back.
  State j (1, 2) holds the twin's j-th entry of `int8_keys` (Adam: exp_avg, exp_avg_sq; SGD: momentum_buffer;
  Adagrad: sum; RMSprop: square_avg). Per parameter of >= MIN_8BIT_SIZE elements: `state1` / `state2` (uint8
  codes, the parameter's shape), `absmax1` / `absmax2` (float32, one per block of 256 elements), `qmap1` /
  `qmap2` (float32 (256,): the dynamic map the codes index, as bitsandbytes stores it; read only, checked at
  load and at each step, one tensor shared by all parameters as in bitsandbytes) and `step`. Smaller
  parameters keep float32 `state1` / `state2` (bitsandbytes' min_8bit_size rule). The kernel gets each
  quantised state wrapped in fastopt.QuantizedState, over the same memory (NumPy views, no copy).
  Maps: new state takes the map fastopt.optim's SIGNED_MAP_OF names for its key (signed: exp_avg,
  momentum_buffer; unsigned: exp_avg_sq, sum, square_avg), or for a rule's state the description's (unsigned for
  the states it never makes negative). A loaded state may hold either map where the
  kernel takes either (EITHER_MAP: Adagrad's sum, RMSprop's square_avg; bitsandbytes' one-state optimizers
  store the signed map for all), and keeps the map it was loaded with.

Compact state runs on the CPU only for now (float32 parameters); CUDA parameters are refused at construction
and at each step, before anything is written.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional

import numpy as np
import torch

MIN_8BIT_SIZE = 4096  # bitsandbytes' min_8bit_size: smaller tensors keep float32 state
BLOCKSIZE = 256
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # torch's keys (the bfloat16 layout too)
SHARED_KEYS = ("qmap1", "qmap2")  # read only, shared between parameters (never written)
EITHER_MAP = ("sum", "square_avg")  # keys whose 8-bit state the kernels take in either map (loaded state)
BNB_WRAPPED_KEY = "__bnb_optimizer_quant_state__"  # bitsandbytes' state_dict nests its tensors under it

_NAMES = {None: "float32", "float32": "float32", torch.float32: "float32",
          "bfloat16": "bfloat16", torch.bfloat16: "bfloat16", "int8": "int8"}


FORMS = ("float32", "bfloat16", "int8")


def normalise(value: Any, forms=FORMS) -> str:
    """state_dtype as one of `forms` (ValueError naming state_dtype otherwise)."""
    try:
        name = _NAMES.get(value)
    except TypeError:  # (unhashable)
        name = None
    if name is None or name not in forms:
        raise ValueError(f"state_dtype must be one of {', '.join(repr(f) for f in forms)} (or None, torch.float32, "
                         f"torch.bfloat16), got {value!r}")
    return name


def check_options(group: Dict[str, Any], where: str = "", forms=FORMS, name: str = "Adam") -> None:
    """The group's state_dtype (one of `forms`), stochastic_rounding and seed, and the parameters compact state
    (and stochastic rounding of bfloat16 parameters) can take. `name`: the optimizer's torch class."""
    form = normalise(group.get("state_dtype"), forms)
    rounding = group.get("stochastic_rounding", False)
    if not isinstance(rounding, bool):
        raise TypeError(f"{where}stochastic_rounding must be a bool, got {type(rounding).__name__}")
    seed = group.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"{where}seed must be an int with 0 <= seed < 2**64, got {seed!r}")
    if rounding and form == "float32":
        # torch's state (of the params' dtype): bfloat16 params are what there is to round (checked per group:
        # the constructor's defaults have no params)
        if "params" not in group:
            return
        params = list(group["params"])
        low = [i for i, p in enumerate(params) if p.dtype == torch.bfloat16]
        if not low:
            raise ValueError(f"{where}stochastic_rounding=True rounds bfloat16 values, but state_dtype is {form!r} "
                             "and no parameter is bfloat16 (use state_dtype='bfloat16')")
        for i in low:
            if not params[i].is_cpu:
                raise ValueError(f"{where}stochastic_rounding=True: params[{i}] is on {params[i].device}, but "
                                 "stochastic rounding is implemented on the CPU only for now")
    elif rounding and form != "bfloat16":
        raise ValueError(f"{where}stochastic_rounding=True rounds bfloat16 values, but state_dtype is {form!r} "
                         "(use state_dtype='bfloat16')")
    if form == "float32":
        return
    if form == "int8" and group.get("amsgrad"):
        raise ValueError(f"{where}amsgrad=True is not available with state_dtype='int8' (bitsandbytes' 8-bit layout "
                         "has no max_exp_avg_sq); use state_dtype='bfloat16' or 'float32'")
    if form == "int8" and name == "RMSprop":
        for option, value, missing in (("momentum", group.get("momentum", 0), "momentum_buffer"),
                                       ("centered", group.get("centered", False), "grad_avg")):
            if (value is True) if option == "centered" else _positive(value):
                raise ValueError(f"{where}{option}={value!r} is not available with state_dtype='int8' (bitsandbytes' "
                                 f"8-bit RMSprop layout keeps square_avg only, no {missing}); use "
                                 "state_dtype='bfloat16' or 'float32'")
    if group.get("differentiable"):
        raise ValueError(f"{where}differentiable=True (stepped by torch.optim's own {name}) keeps torch's float32 state; "
                         f"state_dtype={form!r} is not available with it")
    from fastopt.torch import _dtensor
    if _dtensor.holds_dtensor(group.get("params", ())):
        raise ValueError(f"{where}state_dtype={form!r} is not available for DTensor (FSDP2) parameters yet")
    for i, p in enumerate(group.get("params", ())):
        if not p.is_cpu:
            raise ValueError(f"{where}state_dtype={form!r}: params[{i}] is on {p.device}, but compact optimizer "
                             "state is implemented on the CPU only for now (use state_dtype='float32' on CUDA)")
        if p.dtype != torch.float32 and not (form == "bfloat16" and p.dtype == torch.bfloat16):
            takes = "float32 or bfloat16" if form == "bfloat16" else "float32"
            raise ValueError(f"{where}state_dtype={form!r}: params[{i}] has dtype {p.dtype}, but this compact optimizer "
                             f"state goes with {takes} parameters")
        if form == "int8" and quantised(p):
            quantised_module()  # (NotImplementedError when this build has no 8-bit state)


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError, RuntimeError):
        return False  # (the kernel's checks name a bad value)


@functools.lru_cache(maxsize=None)
def _signed_maps() -> Dict[str, bool]:
    """fastopt.optim's SIGNED_MAP_OF (the classic optimizers' keys) and the rules' (from each description's
    non_negative states); a key common to several optimizers takes one map in all."""
    from fastopt.optim._from_rule import element_wise, signed_maps
    from fastopt.optim._state_dtype import SIGNED_MAP_OF
    from fastopt.rules import SPECS

    maps = dict(SIGNED_MAP_OF)
    for spec in SPECS:
        if element_wise(spec):
            for key, signed in signed_maps(spec).items():
                if maps.setdefault(key, signed) != signed:
                    raise AssertionError(f"state {key!r} takes the signed map in one optimizer, not in another")
    return maps


def signed_map_of(key: str) -> bool:
    """The map new 8-bit state of `key` takes (fastopt.optim's SIGNED_MAP_OF, and the rules' classes')."""
    return _signed_maps()[key]


def maps_of(key: str):
    """The maps (signed flags) a loaded 8-bit state of `key` may hold: its own, or either where the kernel
    takes either (EITHER_MAP)."""
    return (signed_map_of(key), not signed_map_of(key)) if key in EITHER_MAP else (signed_map_of(key),)


def quantised_module():
    """fastopt.QuantizedState (part B of issue 18), or a clear error when this build lacks it."""
    import fastopt
    cls = getattr(fastopt, "QuantizedState", None)
    if cls is None:
        raise NotImplementedError("state_dtype='int8' needs fastopt.QuantizedState (8-bit blockwise state), which "
                                  "this build of fastopt does not have")
    return cls


@functools.lru_cache(maxsize=None)
def _map(signed: bool) -> torch.Tensor:
    """The dynamic quantisation map fastopt's kernels use (signed: exp_avg; unsigned: exp_avg_sq), read off
    the kernels themselves: codes 0..255 dequantised with absmax 1."""
    cls = quantised_module()
    q = cls(codes=np.arange(BLOCKSIZE, dtype=np.uint8), absmax=np.ones(1, dtype=np.float32), signed=signed)
    return torch.from_numpy(np.ascontiguousarray(q.dequantize(), dtype=np.float32)).reshape(BLOCKSIZE)


def qmap(signed: bool) -> torch.Tensor:
    return _map(signed)


def blocks(n: int) -> int:
    return (n + BLOCKSIZE - 1) // BLOCKSIZE


def quantised(p: torch.Tensor) -> bool:
    return p.numel() >= MIN_8BIT_SIZE


def new_state(p: torch.Tensor, form: str, keys=MOMENTS[:2], fill=0.0) -> Dict[str, Any]:
    """A parameter's fresh state tensors `keys` in `form` ("bfloat16" or "int8": then state j holds keys[j-1]
    in the map signed_map_of(keys[j-1]) names), filled with `fill` (a number, or one per key; int8: quantised
    from it), without `step`."""
    fills = list(fill) if isinstance(fill, (list, tuple)) else [fill] * len(keys)
    if form == "bfloat16":
        return {key: torch.full_like(p, f, dtype=torch.bfloat16, memory_format=torch.contiguous_format)
                for key, f in zip(keys, fills)}
    if not quantised(p):
        return {f"state{j}": torch.full_like(p, f, dtype=torch.float32, memory_format=torch.contiguous_format)
                for j, f in enumerate(fills, start=1)}
    cls = quantised_module()
    state = {}
    for j, (key, fill) in enumerate(zip(keys, fills), start=1):
        signed = signed_map_of(key)
        q = cls.zeros(tuple(p.shape), signed) if fill == 0 else \
            cls.quantize(np.full(tuple(p.shape), fill, dtype=np.float32), signed)
        state[f"state{j}"] = torch.from_numpy(np.array(q.codes, dtype=np.uint8, copy=True)).reshape(p.shape)
        state[f"absmax{j}"] = torch.from_numpy(np.array(q.absmax, dtype=np.float32, copy=True))
        state[f"qmap{j}"] = qmap(signed)
    return state


def bf16_zeros(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p, dtype=torch.bfloat16, memory_format=torch.contiguous_format)


def form_of(state: Dict[str, Any], keys=MOMENTS) -> Optional[str]:
    """The layout a parameter's (non-empty) state is in: "int8" (state1...), "bfloat16" (torch's keys in
    bfloat16) or "float32"; None when it holds none of `keys` as a tensor yet (SGD's state before its first
    momentum step), which fits every layout."""
    if "state1" in state or "state2" in state:
        return "int8"
    value = next((state[k] for k in keys if torch.is_tensor(state.get(k))), None)
    if value is None:
        return None
    return "bfloat16" if value.dtype == torch.bfloat16 else "float32"


def _tensor_ok(value: Any, dtype: torch.dtype, shape) -> bool:
    return (type(value) in (torch.Tensor, torch.nn.Parameter) and value.is_cpu and value.dtype == dtype
            and value.layout == torch.strided and tuple(value.shape) == tuple(shape) and value.is_contiguous()
            and not value.requires_grad)


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"a {value.device} tensor of dtype {value.dtype}, shape {tuple(value.shape)}" + \
            ("" if value.is_contiguous() else ", not contiguous")
    return f"a {type(value).__name__}"


def check_state(name: str, p: torch.Tensor, state: Dict[str, Any], form: str, amsgrad: bool,
                check_maps: bool = False, keys=MOMENTS, required=MOMENTS[:2], optimizer: str = "Adam",
                int8_keys=MOMENTS[:2], scalars=()) -> None:
    """Raises (TypeError / ValueError naming the entry) unless `state` is a state of `form` for p.
    `name`: how the state is called ("state[3]"); check_maps: at load (the step checks them too, cheaply:
    the shared maps are the same tensors). keys: the state tensors the optimizer keeps (`required` of them
    in every state; None is allowed for the others, SGD's momentum_buffer); optimizer: its name; int8_keys:
    what int8's state1, state2... hold (each qmap j must be a map maps_of(int8_keys[j-1]) allows); scalars: the
    numbers it keeps beside the step (NAdam's mu_product, ASGD's eta and mu), checked by the optimizer itself."""
    have = form_of(state, keys)
    if have is not None and have != form:
        raise ValueError(f"{name} is in the {have} layout but its param group has state_dtype={form!r} "
                         f"({'torch' if have != 'int8' else 'bitsandbytes'}' keys {sorted(state)})")
    if form == "bfloat16":
        for key in state:
            if key != "step" and key not in keys and key not in scalars:
                raise ValueError(f"{name} has an entry {key!r} that {optimizer} with state_dtype='bfloat16' does not "
                                 "keep")
        for key in required:
            if key not in state:
                raise ValueError(f"{name} lacks {key!r}")
        for key in keys:
            if key in state and state[key] is None and key not in required:
                continue
            if key in state and not _tensor_ok(state[key], torch.bfloat16, p.shape):
                raise TypeError(f"{name}['{key}'] must be a contiguous CPU torch.bfloat16 tensor of shape "
                                f"{tuple(p.shape)} (state_dtype='bfloat16'), got {_describe(state[key])}")
        return
    q = quantised(p)
    slots = range(1, len(int8_keys) + 1)
    expected = tuple(f"{k}{j}" for k in ("state", "absmax", "qmap") for j in slots) if q else \
        tuple(f"state{j}" for j in slots)
    extra = [key for key in state if key != "step" and key not in expected and key not in scalars]
    missing = [key for key in expected if key not in state]
    if extra or missing:
        size = f"{p.numel()} elements, {'>=' if q else '<'} {MIN_8BIT_SIZE}"
        raise ValueError(f"{name} {'lacks ' + str(missing) if missing else 'has entries ' + str(extra)}: with "
                         f"state_dtype='int8' a parameter of {size} keeps {['step', *expected]}")
    if not q:
        for key in expected:
            if not _tensor_ok(state[key], torch.float32, p.shape):
                raise TypeError(f"{name}['{key}'] must be a contiguous CPU float32 tensor of shape {tuple(p.shape)}, "
                                f"got {_describe(state[key])}")
        return
    for j in slots:
        for key, dtype, shape in ((f"state{j}", torch.uint8, p.shape), (f"absmax{j}", torch.float32,
                                                                        (blocks(p.numel()),)),
                                  (f"qmap{j}", torch.float32, (BLOCKSIZE,))):
            if not _tensor_ok(state[key], dtype, shape):
                raise TypeError(f"{name}['{key}'] must be a contiguous CPU {dtype} tensor of shape {tuple(shape)}, "
                                f"got {_describe(state[key])}")
        map_signed(name, state, j, int8_keys[j - 1])


def map_signed(name: str, state: Dict[str, Any], j: int, key: str) -> bool:
    """Whether state j's qmap is the signed map (ValueError naming it unless it is one `key` may hold)."""
    value = state[f"qmap{j}"]
    allowed = maps_of(key)
    for signed in allowed:
        if value is _map(signed):
            return signed
    for signed in allowed:
        if torch.equal(value, _map(signed)):
            return signed
    kinds = " or ".join("signed" if signed else "unsigned" for signed in allowed)
    raise ValueError(f"{name}['qmap{j}'] is not the {kinds} dynamic map fastopt (and bitsandbytes) quantise "
                     f"{key} with")


def unwrap_bnb(state: Any) -> Any:
    """A parameter's state from bitsandbytes' state_dict, its nested quantisation tensors put back in place."""
    if isinstance(state, dict) and BNB_WRAPPED_KEY in state:
        state = dict(state)
        state.update(state.pop(BNB_WRAPPED_KEY))
    return state


def to_form(p: torch.Tensor, state: Dict[str, Any], form: str, keys=MOMENTS) -> None:
    """A loaded float32/bfloat16 state (torch's keys) put into `form` where that is a cast: torch's float32
    state into a bfloat16 twin (rounded to nearest), bfloat16 state into a float32 twin (exact)."""
    have = form_of(state, keys)
    if have is None or have == form or "int8" in (have, form):
        return
    dtype = torch.bfloat16 if form == "bfloat16" else torch.float32
    for key in keys:
        value = state.get(key)
        if torch.is_tensor(value) and value.is_floating_point() and value.dtype in (torch.float32, torch.bfloat16):
            state[key] = value.to(dtype=dtype).contiguous()


def kernel_operands(states: List[Dict[str, Any]], form: str, amsgrad: bool):
    """The state operands of one kernel call: (exp_avgs, exp_avg_sqs, max_exp_avg_sqs or None).
    bfloat16: the bfloat16 tensors themselves (the kernels take torch.bfloat16 CPU tensors)."""
    m = [s["exp_avg"] for s in states]
    v = [s["exp_avg_sq"] for s in states]
    vmax = [s["max_exp_avg_sq"] for s in states] if amsgrad else None
    return m, v, vmax


def int8_split(states: List[Dict[str, Any]]):
    """Indices of the call's float32-state members and of its quantised ones."""
    small, big = [], []
    for i, s in enumerate(states):
        (big if s["state1"].dtype == torch.uint8 else small).append(i)
    return small, big


def quantised_operands(states: List[Dict[str, Any]], int8_keys=MOMENTS[:2]):
    """For each of int8_keys (state1, state2...), the quantised members' states as fastopt.QuantizedState over
    the state's own memory, in the map its qmap holds (checked by the step's check_state)."""
    cls = quantised_module()
    return tuple([wrap(cls, s[f"state{j}"], s[f"absmax{j}"], map_signed(f"state[{i}]", s, j, key))
                  for i, s in enumerate(states)] for j, key in enumerate(int8_keys, start=1))


def wrap(cls, codes: torch.Tensor, absmax: torch.Tensor, signed: bool):
    """A QuantizedState over `codes` and `absmax` (NumPy views of the tensors' memory: no copy)."""
    return cls(codes=codes.detach().numpy(), absmax=absmax.detach().numpy(), signed=signed)


def nbytes(state: Optional[Dict[str, Any]]) -> int:
    """Bytes of a parameter's moment tensors (the shared maps and the step count not counted)."""
    if not state:
        return 0
    return sum(v.numel() * v.element_size() for k, v in state.items()
               if torch.is_tensor(v) and k != "step" and k not in SHARED_KEYS)
