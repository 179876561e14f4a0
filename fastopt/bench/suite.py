"""Running the cases: build one, time it (probe included), print its rows, drop it, go on."""

from __future__ import annotations

import gc
from typing import List, Optional, Sequence

from fastopt.bench.cases import PendingCase
from fastopt.bench.progress import Progress
from fastopt.bench.report import case_rows, format_case, group_header, busy_note, per_call_lines
from fastopt.bench.timing import ROUND_SECONDS, plan_rounds, time_all


def run(pending: Sequence[PendingCase], quick: bool = False, rounds: Optional[int] = None,
        progress: Optional[Progress] = None) -> List[dict]:
    """Time every pending case in order; print a table per size as it goes; return all rows."""
    plan = [(p, rounds if rounds is not None else plan_rounds(p.n, quick)) for p in pending]
    if progress is None:
        progress = Progress(sum(r for _, r in plan))
    round_seconds = ROUND_SECONDS[1] if quick else ROUND_SECONDS[0]
    rows: List[dict] = []
    group = None
    for index, (p, n_rounds) in enumerate(plan):
        where = f"{index + 1}/{len(plan)} {p.name} @ {p.label.split(':')[0]}"
        progress.set_status(f"{where}: preparing")
        case = p.build()
        fns = dict(case.impls)
        if case.probe is not None:
            fns[case.probe_name] = case.probe
        progress.set_status(f"{where}: warm-up and calibration")
        done = [0]

        def tick() -> None:
            done[0] += 1
            progress.status = f"{where}: round {done[0]}/{n_rounds}"
            progress.advance()

        timings = time_all(fns, n_rounds, round_seconds, progress=tick, sync=case.sync)
        new_rows = case_rows(case, timings, n_rounds)
        rows.extend(new_rows)
        if (case.part, case.label) != group:
            group = (case.part, case.label)
            for line in group_header(case):
                progress.print(line)
        for line in format_case(case, new_rows, timings):
            progress.print(line)
        note = busy_note(case, timings)
        if note:
            progress.print(note)
        del case, fns, timings  # free the arrays before the next (maybe bigger) case
        gc.collect()
        last_of_size = index + 1 == len(plan) or plan[index + 1][0].label != p.label
        if last_of_size:
            for line in per_call_lines([r for r in rows if r["label"] == p.label]):
                progress.print(line)
    return rows
