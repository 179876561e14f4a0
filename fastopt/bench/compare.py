"""``fastopt bench --compare OLD.json``: every figure of a run against the same figure of a saved run,
flagging the ones that moved beyond their noise.

Rows are matched by (part, case, label, implementation, size, device). A row's figure is its median
seconds per call; its noise is the spread of its rounds (interquartile range / median, stored in
every row). A figure has moved when new / old leaves 1 by more than the two runs' spreads together,
and never by less than MIN_CHANGE (medians of a quiet machine still drift a few percent between
runs). fastopt's rows that got slower beyond that are regressions: the command then exits with
status 1, so a script can stop on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

#: The smallest change ever flagged, whatever the spreads say.
MIN_CHANGE = 0.05

RowKey = Tuple[str, str, str, str, Optional[int], str]


class CompareError(ValueError):
    """A file that is not a saved run of fastopt bench; the message names the file."""


def load_run(path: str) -> dict:
    """A saved run (the JSON fastopt bench writes); CompareError when it cannot be one."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as error:
        raise CompareError(f"--compare {path}: cannot read it: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CompareError(f"--compare {path}: not JSON ({error})") from None
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("seconds"), (int, float))
                                             and "impl" in r and "case" in r for r in rows):
        raise CompareError(f"--compare {path}: not a fastopt bench run (no 'results' rows with 'case', "
                           f"'impl' and 'seconds')")
    return doc


def row_key(row: dict) -> RowKey:
    return (row.get("part", ""), row["case"], row.get("label", ""), row["impl"], row.get("n"),
            row.get("device", "cpu"))


@dataclass
class Change:
    key: RowKey
    old_seconds: float
    new_seconds: float
    tolerance: float  # the relative change beyond which the figure moved

    @property
    def ratio(self) -> float:
        return self.new_seconds / self.old_seconds if self.old_seconds > 0 else float("inf")

    @property
    def verdict(self) -> str:
        """'slower', 'faster' or '' (within the noise)."""
        if self.ratio > 1 + self.tolerance:
            return "slower"
        if self.ratio < 1 / (1 + self.tolerance):
            return "faster"
        return ""

    @property
    def regression(self) -> bool:
        return self.verdict == "slower" and self.key[3].startswith("fastopt")


def tolerance(old: dict, new: dict) -> float:
    spreads = [r.get("spread") for r in (old, new)]
    return max(MIN_CHANGE, sum(s for s in spreads if isinstance(s, (int, float)) and s > 0))


def compare(old_doc: dict, new_doc: dict) -> Tuple[List[Change], List[RowKey], List[RowKey]]:
    """(changes of the rows in both runs, in the new run's order; keys only in the old run; keys only
    in the new one)."""
    old_rows: Dict[RowKey, dict] = {row_key(r): r for r in old_doc["results"]}
    new_rows: Dict[RowKey, dict] = {row_key(r): r for r in new_doc["results"]}
    changes = [Change(k, old_rows[k]["seconds"], r["seconds"], tolerance(old_rows[k], r))
               for k, r in new_rows.items() if k in old_rows]
    return changes, [k for k in old_rows if k not in new_rows], [k for k in new_rows if k not in old_rows]


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:7.2f} {unit}"
    return f"{seconds / 1e-9:7.1f} ns"


def format_comparison(changes: List[Change], only_old: List[RowKey], only_new: List[RowKey],
                      old_name: str) -> List[str]:
    lines = [f"against {old_name}: new / old time per call; moved = beyond both runs' spreads together "
             f"(at least {100 * MIN_CHANGE:.0f}%)",
             f"{'case':34s} {'implementation':22s} {'old':>10s} {'new':>10s} {'new/old':>8s} {'noise':>6s}  moved"]
    for c in changes:
        part, case, label, impl, _, device = c.key
        name = f"{case} {label}".strip() + ("" if device == "cpu" else f" [{device}]")
        flag = {"slower": "SLOWER", "faster": "faster", "": ""}[c.verdict]
        if c.regression:
            flag += " (regression)"
        lines.append(f"{name[:34]:34s} {impl[:22]:22s} {_fmt_time(c.old_seconds):>10s} {_fmt_time(c.new_seconds):>10s} "
                     f"{c.ratio:8.2f} {100 * c.tolerance:5.0f}%  {flag}")
    moved = [c for c in changes if c.verdict]
    lines.append(f"{len(moved)} of {len(changes)} figures moved beyond their noise "
                 f"({sum(c.verdict == 'slower' for c in moved)} slower, {sum(c.verdict == 'faster' for c in moved)} "
                 f"faster; {sum(c.regression for c in changes)} of fastopt's slower)")
    if only_old:
        lines.append(f"{len(only_old)} rows only in {old_name} (not run now, nothing to compare): "
                     + _by_case(only_old))
    if only_new:
        lines.append(f"{len(only_new)} rows not in {old_name} (new rows, or not run then; nothing to compare): "
                     + _by_case(only_new))
    return lines


def _by_case(keys: List[RowKey]) -> str:
    """Every case of the keys once, with its implementations ("lion (fastopt, numpy); nadam (...)"): a run
    saved before an optimizer had rows lacks all of them, which one name says better than a row each."""
    impls: Dict[str, List[str]] = {}
    for _, case, _, impl, _, device in keys:
        name = case + ("" if device == "cpu" else f" [{device}]")
        seen = impls.setdefault(name, [])
        if impl not in seen:
            seen.append(impl)
    return "; ".join(f"{name} ({', '.join(names)})" for name, names in impls.items())
