"""`fastopt bench --compare OLD.json`: each figure of a run against a saved run, flagged when it moved
beyond the two runs' spreads. The saved runs here are written by a real (tiny) bench run; the second
file is that run with some times changed, so that what must be flagged is known."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from fastopt.bench.compare import MIN_CHANGE, compare, format_comparison, load_run, CompareError

HERE = os.path.dirname(__file__)
# (with the NumPy reference: without torch it is the one peer a run has)
TINY = ("bench", "--part", "optimizers", "--optimizers", "sgd", "adamw", "--sizes", "1K", "--rounds", "3",
        "--no-cuda")


def run(*args):
    return subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True, cwd=HERE,
                          timeout=600)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "old.json"
    out = run(*TINY, "--json", str(path))
    assert out.returncode == 0, out.stderr
    return path


def changed(doc: dict, impl: str, factor: float, spread: float = 0.0) -> dict:
    """doc with every row of `impl` taking `factor` times as long, with the given spread."""
    doc = copy.deepcopy(doc)
    for row in doc["results"]:
        if row["impl"] == impl:
            row["seconds"] *= factor
            row["spread"] = spread
    return doc


def test_a_run_against_itself_moves_nothing(saved_run):
    doc = load_run(str(saved_run))
    changes, only_old, only_new = compare(doc, doc)
    assert len(changes) == len(doc["results"]) > 0
    assert not only_old and not only_new
    assert all(c.verdict == "" and c.ratio == 1 for c in changes)


def test_a_slower_fastopt_row_beyond_its_noise_is_a_regression(saved_run):
    old = changed(load_run(str(saved_run)), "fastopt", 1.0, spread=0.02)
    new = changed(old, "fastopt", 1.5, spread=0.02)
    changes, _, _ = compare(old, new)
    fastopt_rows = [c for c in changes if c.key[3] == "fastopt"]
    assert fastopt_rows and all(c.verdict == "slower" and c.regression for c in fastopt_rows)
    assert all(c.verdict == "" for c in changes if c.key[3] != "fastopt")
    text = "\n".join(format_comparison(changes, [], [], "old.json"))
    assert "SLOWER (regression)" in text


def test_a_change_within_the_spreads_is_not_flagged(saved_run):
    old = changed(load_run(str(saved_run)), "fastopt", 1.0, spread=0.15)
    new = changed(old, "fastopt", 1.25, spread=0.15)  # 25% < 15% + 15%
    changes, _, _ = compare(old, new)
    assert all(c.verdict == "" for c in changes)
    # ... but beyond them it is, both ways, and a peer's slower row is no regression of fastopt's.
    assert all(c.verdict == "slower" for c in compare(old, changed(old, "fastopt", 1.4, 0.15))[0]
               if c.key[3] == "fastopt")
    faster = compare(old, changed(old, "fastopt", 1 / 1.4, 0.15))[0]
    assert all(c.verdict == "faster" and not c.regression for c in faster if c.key[3] == "fastopt")
    # (torch's fused row where torch is installed; otherwise the NumPy reference's)
    peers = sorted({row["impl"] for row in old["results"]} - {"fastopt"})
    assert peers, "a run has at least the NumPy reference beside fastopt"
    peer_impl = "torch-fused" if "torch-fused" in peers else peers[0]
    peer = compare(old, changed(old, peer_impl, 2.0, 0.0))[0]
    assert any(c.verdict == "slower" for c in peer) and not any(c.regression for c in peer)


def test_small_changes_are_never_flagged_even_with_no_spread(saved_run):
    old = changed(load_run(str(saved_run)), "fastopt", 1.0, spread=0.0)
    new = changed(old, "fastopt", 1 + MIN_CHANGE / 2, spread=0.0)
    assert all(c.verdict == "" for c in compare(old, new)[0])


def test_rows_in_one_run_only_are_listed(saved_run):
    old = load_run(str(saved_run))
    new = copy.deepcopy(old)
    gone = new["results"].pop()
    changes, only_old, only_new = compare(old, new)
    assert len(only_old) == 1 and only_old[0][3] == gone["impl"] and not only_new
    assert "rows only in old.json" in "\n".join(format_comparison(changes, only_old, only_new, "old.json"))


@pytest.fixture(scope="module")
def rule_rows(tmp_path_factory):
    """The rows of a real tiny run of two optimizers described as rules (fastopt.rules.SPECS)."""
    from fastopt.bench.workloads import RULE_OPTIMIZERS

    names = list(RULE_OPTIMIZERS[:2])
    path = tmp_path_factory.mktemp("bench") / "rules.json"
    out = run("bench", "--part", "optimizers", "--optimizers", *names, "--sizes", "1K", "--rounds", "2",
              "--no-gpt2", "--no-cuda", "--json", str(path))
    assert out.returncode == 0, out.stderr
    rows = load_run(str(path))["results"]
    assert {r["case"] for r in rows} == set(names)
    return rows


def test_a_run_saved_before_the_rule_rows_still_compares(saved_run, rule_rows, tmp_path):
    """A saved run without the rules' rows against one with them (and the other way round): the rows both
    have are compared, the others listed per case as in one run only; no error, no regression."""
    before = load_run(str(saved_run))
    after = copy.deepcopy(before)
    after["results"] += copy.deepcopy(rule_rows)
    new_cases = sorted({r["case"] for r in rule_rows})
    changes, only_old, only_new = compare(before, after)
    assert len(changes) == len(before["results"]) and not only_old
    assert sorted({k[1] for k in only_new}) == new_cases and len(only_new) == len(rule_rows)
    old_path, new_path = tmp_path / "before.json", tmp_path / "after.json"
    old_path.write_text(json.dumps(before))
    new_path.write_text(json.dumps(after))
    for old, new, line in ((old_path, new_path, "rows not in"), (new_path, old_path, "rows only in")):
        out = run("bench", "--compare", str(old), "--against", str(new))
        assert out.returncode == 0, out.stdout + out.stderr
        listed = next(text for text in out.stdout.splitlines() if line in text)
        assert listed.startswith(f"{len(rule_rows)} rows") and all(f"{case} (fastopt" in listed for case in new_cases), listed
        assert f"0 of {len(before['results'])} figures moved" in out.stdout


def test_cli_compares_two_saved_runs_and_exits_1_on_a_regression(saved_run, tmp_path):
    slower = tmp_path / "new.json"
    slower.write_text(json.dumps(changed(load_run(str(saved_run)), "fastopt", 2.0)))
    out = run("bench", "--compare", str(saved_run), "--against", str(slower))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "SLOWER (regression)" in out.stdout and "fastopt" in out.stdout
    same = run("bench", "--compare", str(saved_run), "--against", str(saved_run))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "0 of" in same.stdout and "moved beyond their noise" in same.stdout


def test_cli_runs_then_compares(saved_run, tmp_path):
    out = run(*TINY, "--json", str(tmp_path / "now.json"), "--compare", str(saved_run))
    assert out.returncode in (0, 1), out.stderr  # 1 only if this machine's load made fastopt slower
    assert "against " + str(saved_run) in out.stdout
    assert "moved beyond their noise" in out.stdout
    assert (tmp_path / "now.json").exists()


@pytest.mark.parametrize("content, message", [
    (None, "cannot read it"),
    ("not json", "not JSON"),
    (json.dumps({"results": [{"case": "x"}]}), "not a fastopt bench run"),
    (json.dumps([1, 2]), "not a fastopt bench run"),
])
def test_cli_refuses_a_bad_old_file_before_running_anything(tmp_path, content, message):
    old = tmp_path / "old.json"
    if content is not None:
        old.write_text(content)
    out = run(*TINY, "--json", str(tmp_path / "now.json"), "--compare", str(old))
    assert out.returncode == 2
    assert "--compare" in out.stderr and message in out.stderr
    assert not (tmp_path / "now.json").exists()


def test_against_needs_compare(tmp_path):
    out = run("bench", "--against", str(tmp_path / "x.json"))
    assert out.returncode == 2 and "--against NEW.json needs --compare" in out.stderr


def test_load_run_names_the_file(tmp_path):
    with pytest.raises(CompareError, match="missing.json"):
        load_run(str(tmp_path / "missing.json"))
