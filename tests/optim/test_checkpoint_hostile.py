"""Hostile and careless checkpoints: every fault of the metadata (the JSON and the header members) is a
ValueError naming the file and what is wrong, never RecursionError, KeyError, a bare int() message or
NumPy's advice to load with allow_pickle; the optimizer stays exactly as it was and still steps.
And the two file-system mistakes of opt.save / opt.load: a missing folder, a file that is not a checkpoint.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from test_checkpoint import assert_refused, edit_meta, rewrite, saved, target


def refused_naming_the_file(path, match):
    """assert_refused (ValueError, the optimizer unchanged and still stepping), and the file is named."""
    assert_refused(path, re.escape(str(path)) + ".*" + match)


# ------------------------------------------------------------------------------------ nesting

@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_meta_is_a_value_error(tmp_path, depth):
    """The issue's case: json.loads of deeply nested JSON raised RecursionError."""
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update(meta=np.array("[" * depth + "]" * depth)))
    refused_naming_the_file(path, "nested too deeply")


def test_deep_nesting_inside_a_hyperparameter(tmp_path):
    path = saved(tmp_path)

    def edit(members):
        text = str(members["meta"]).replace('"lr": 0.01', '"lr": ' + "[" * 50_000 + "]" * 50_000, 1)
        members["meta"] = np.array(text)
    rewrite(path, edit)
    refused_naming_the_file(path, "nested too deeply")


# ------------------------------------------------------------------------------------ state keys

@pytest.mark.parametrize("key", ["x", "-1", "01", "1.5", " 1", "\u0663", ""])
def test_bad_state_key_names_the_key(tmp_path, key):
    """The issue's case: a state key that is not an index raised int()'s bare message."""
    path = saved(tmp_path)
    rewrite(path, edit_meta(lambda m: m["state"].update({key: m["state"]["0"]})))
    refused_naming_the_file(path, re.escape(f"the state key {key!r} is not a parameter index"))


@pytest.mark.parametrize("entry", ["state/x/exp_avg", "state/-1/exp_avg", "state/01/exp_avg", "state/0/",
                                   "state/0/exp_avg/extra"])
def test_bad_state_member_name(tmp_path, entry):
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({entry: np.zeros((3, 4))}))
    refused_naming_the_file(path, "unexpected entry")


def test_state_entry_both_scalar_and_array(tmp_path):
    path = saved(tmp_path)
    rewrite(path, edit_meta(lambda m: m["state"]["0"].update(exp_avg=None)))
    refused_naming_the_file(path, re.escape("state[0]['exp_avg'] is both"))


# ------------------------------------------------------------------------------------ wrong types anywhere

def set_path(meta, keys, value):
    target_ = meta
    for key in keys[:-1]:
        target_ = target_[key]
    target_[keys[-1]] = value


META_FAULTS = [  # (where in the metadata, value, what the message says)
    ((), [], "meta is .*not a JSON object"),
    ((), "text", "meta is .*not a JSON object"),
    (("param_groups",), {}, r"meta\['param_groups'\] is .*not a JSON list"),
    (("param_groups", 0), 5, r"param_groups\[0\] is 5, not a JSON object"),
    (("param_groups", 0, "hyper"), [], r"param_groups\[0\]\['hyper'\] is \[\], not a JSON object"),
    (("param_groups", 0, "params"), "2", r"param_groups\[0\]\['params'\] is '2', not a count"),
    (("param_groups", 0, "params"), 2.0, r"param_groups\[0\]\['params'\] is 2.0, not a count"),
    (("param_groups", 0, "params"), True, r"param_groups\[0\]\['params'\] is True, not a count"),
    (("param_groups", 0, "params"), -1, r"param_groups\[0\]\['params'\] is -1, not a count"),
    (("params",), {}, r"meta\['params'\] is .*not a JSON list"),
    (("params", 0), [3, 4], r"params\[0\] is \[3, 4\], not a JSON object"),
    (("params", 0, "shape"), "3", r"params\[0\]\['shape'\] is '3', not a JSON list"),
    (("params", 0, "shape"), [3.0, 4], r"params\[0\]\['shape'\] is 3.0, not a count"),
    (("params", 0, "shape"), [-3, 4], r"params\[0\]\['shape'\] is -3, not a count"),
    (("params", 0, "dtype"), 5, r"params\[0\]\['dtype'\] is 5, not a NumPy dtype"),
    (("params", 0, "dtype"), "nonsense", r"params\[0\]\['dtype'\] is 'nonsense', not a NumPy dtype"),
    (("params", 0, "dtype"), None, r"params\[0\]\['dtype'\] is None, not a NumPy dtype"),
    (("state",), [], r"meta\['state'\] is \[\], not a JSON object"),
    (("state", "0"), [1, 2], r"state\[0\] is \[1, 2\], not a JSON object"),
    (("state", "0", "step"), "2", r"state\[0\]\['step'\] must be an int"),
    (("state", "0", "step"), 2.0, r"state\[0\]\['step'\] must be an int"),
    (("state", "0", "step"), True, r"state\[0\]\['step'\] must be an int"),
    (("state", "0", "step"), None, r"state\[0\]\['step'\] must be an int"),
    (("state", "0", "step"), 2**70, r"state\[0\]\['step'\] is 1180591620717411303424, not a step count"),
    (("state", "0", "step"), 2**63 - 1, r"state\[0\]\['step'\] is 9223372036854775807, not a step count"),
    (("schedule_steps",), "0", r"meta\['schedule_steps'\] is '0', not a JSON list"),
    (("schedule_steps",), [True, 0], r"schedule_steps\[0\] is True, not a step count"),
    (("schedule_steps",), [-1, 0], r"schedule_steps\[0\] is -1, not a step count"),
    (("schedule_steps",), [2**70, 0], r"schedule_steps\[0\] is 1180591620717411303424, not a step count"),
    (("schedule_steps",), [1.5, 0], r"schedule_steps\[0\] is 1.5, not a step count"),
    (("schedule_steps",), [0], "do not give one count per param group"),
    (("param_groups", 0, "hyper", "lr"), [0.01], "param group 0: lr must be a real number"),
    (("param_groups", 0, "hyper", "lr"), None, "param group 0: lr must be a real number"),
    (("param_groups", 0, "hyper", "lr"), {"x": 1}, "param group 0's lr is .*neither a value nor a schedule"),
    (("param_groups", 0, "hyper", "lr"), {"schedule": 5}, "param group 0's lr is .*neither a value nor a schedule"),
    (("param_groups", 0, "hyper", "lr"), 10**400, "param group 0: lr must be a real number within the float range"),
    (("param_groups", 0, "hyper", "lr"), float("nan"), "param group 0: lr"),
    (("param_groups", 0, "hyper", "betas"), 0.9, r"param group 0: betas must be a pair"),
    (("param_groups", 0, "hyper", "betas"), [0.9], r"param group 0: betas must be a pair"),
    (("param_groups", 0, "hyper", "betas"), [[0.9], [0.99]], r"param group 0: betas\[0\] must be a real number"),
    (("param_groups", 0, "hyper", "amsgrad"), "yes", "param group 0: amsgrad must be a bool"),
    (("param_groups", 0, "hyper", "amsgrad"), 1, "param group 0: amsgrad must be a bool"),
    (("param_groups", 0, "hyper", "eps"), True, "param group 0: eps must be a real number"),
]


@pytest.mark.parametrize("keys,value,match", META_FAULTS,
                         ids=[f"{'.'.join(map(str, k)) or 'meta'}={str(v)[:12]}" for k, v, _ in META_FAULTS])
def test_wrong_types_in_the_metadata(tmp_path, keys, value, match):
    path = saved(tmp_path)

    def edit(members):
        meta = json.loads(str(members["meta"]))
        if keys:
            set_path(meta, keys, value)
        else:
            meta = value
        members["meta"] = np.array(json.dumps(meta))
    rewrite(path, edit)
    refused_naming_the_file(path, match)


@pytest.mark.parametrize("member,value,match", [
    ("fastopt_checkpoint", np.array([1, 1]), "'fastopt_checkpoint' is a int64 array of shape \\(2,\\)"),
    ("fastopt_checkpoint", np.array(1.7), "'fastopt_checkpoint' is a float64 array"),
    ("fastopt_checkpoint", np.array("1"), "'fastopt_checkpoint' is a <U1 array"),
    ("optimizer", np.array(5), "'optimizer' is a int64 array"),
    ("optimizer", np.array(["Adam"]), "'optimizer' is a <U4 array of shape \\(1,\\)"),
    ("meta", np.array(5), "'meta' is a int64 array"),
    ("meta", np.array(["{}", "{}"]), "'meta' is a <U2 array of shape \\(2,\\)"),
    ("meta", np.array("{not json"), "'meta' is not JSON"),
])
def test_wrong_types_in_the_header(tmp_path, member, value, match):
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({member: value}))
    refused_naming_the_file(path, "unreadable header: " + match)


# ------------------------------------------------------------------------------------ the file system

def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    """The issue's case: opt.load('m1.py') passed on NumPy's advice to use allow_pickle."""
    path = tmp_path / "m1.py"
    path.write_text("import numpy as np\nprint('hello')\n")
    opt, params = target()
    with pytest.raises(ValueError) as info:
        opt.load(path)
    message = str(info.value)
    assert str(path) in message and "is not a fastopt checkpoint" in message
    assert "pickle" not in message


def test_pickle_file_is_not_loaded_and_no_advice_is_given(tmp_path):
    import pickle

    path = tmp_path / "c.npz"
    path.write_bytes(pickle.dumps({"state": {}}))
    opt, params = target()
    with pytest.raises(ValueError, match="is not a fastopt checkpoint") as info:
        opt.load(path)
    assert "allow_pickle" not in str(info.value)


@pytest.mark.parametrize("member", ["meta", "state/0/exp_avg", "notes.txt"])
def test_a_member_that_is_not_an_array(tmp_path, member):
    """np.load hands a zip member without .npy data over as bytes: named, not an AttributeError."""
    import zipfile

    path = saved(tmp_path)
    if member.startswith("state/") or member == "meta":
        rewrite(path, lambda m: m.pop(member))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(member, b"plain bytes")
    refused_naming_the_file(path, f"member {member!r} is not a NumPy array")


def test_empty_file(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"")
    refused_naming_the_file(path, "the file is empty")


def test_save_into_a_missing_folder_names_that_folder(tmp_path):
    """The issue's case: the error named the temporary file (c.npz.tmp-<pid>), not what the user gave."""
    opt, _ = target()
    path = tmp_path / "no" / "such" / "c.npz"
    with pytest.raises(FileNotFoundError) as info:
        opt.save(path)
    message = str(info.value)
    assert str(tmp_path / "no" / "such") in message and str(path) in message and ".tmp-" not in message
    assert info.value.filename == str(path)


def test_save_over_a_folder_names_it(tmp_path):
    opt, _ = target()
    (tmp_path / "c.npz").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        opt.save(tmp_path / "c.npz")
    assert info.value.filename == str(tmp_path / "c.npz") and ".tmp-" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]
