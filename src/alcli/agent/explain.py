"""What the report says per round: who won, how far the forecasts were off, what was bought.

Read from the round table and the shared head's points alone (``state.rows``,
``state.shared``), so a resumed run's report says the same as an uninterrupted one's.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alcli.agent.outputs import RoundRow
from alcli.agent.rules import paired_scores
from alcli.agent.state import SharedPoint


def round_notes(
    rows: Sequence[RoundRow],
    shared: Sequence[SharedPoint],
    *,
    head: str,
    spend: str,
    initial_by_class: Mapping[str, int],
) -> list[dict[str, Any]]:
    """One entry per round ≥ 1: the head, the round's leader (best evidence accuracy), each
    survivor's forecast for this round (made a round earlier) and its error in points, the
    returned model's accuracy, calibration error and per-class accuracy, the labels bought
    per class (in all and this round), who was eliminated, and (``pooled``) each survivor's
    paired standing (``rules.paired_scores``: sum / √rounds, the elimination's statistic)
    and, from round 3, its leave-out contribution to the returned model in points
    (``leave_out_pt``: [accuracy with its picks − without, standard error, its picks];
    ``rules.eliminate_low_yield``)."""
    by_round: dict[int, dict[str, RoundRow]] = collections.defaultdict(dict)
    for row in rows:
        by_round[row.round][row.strategy] = row
    points = {point.round: point for point in shared}
    notes: list[dict[str, Any]] = []
    before: dict[str, int] | None = dict(initial_by_class)
    for rnd in sorted(r for r in by_round if r >= 1):
        this, last = by_round[rnd], by_round.get(rnd - 1, {})
        leader = min(this, key=lambda s: (-this[s].accuracy, s))
        forecasts = {
            s: round(fc, 5)
            for s in this
            if s in last
            for fc in [last[s].forecast]
            if fc is not None
        }
        errors = {s: round(abs(fc - this[s].accuracy) * 100, 3) for s, fc in forecasts.items()}
        note: dict[str, Any] = {
            "round": rnd,
            "head": head,
            "leader": leader,
            "leader_accuracy": round(this[leader].accuracy, 5),
            "forecasts": forecasts,
            "forecast_errors_pt": errors,
            "forecast_mae_pt": round(float(np.mean(list(errors.values()))), 3) if errors else None,
            "eliminated": [s for s, row in this.items() if row.eliminated],
        }
        if spend == "pooled":
            scores = paired_scores([row for row in rows if row.round <= rnd])
            note["paired_standing"] = {
                s: round(score, 3) for s, (score, _) in scores.items() if s in this
            }
        point = points.get(rnd)
        if point is not None:
            note.update(model_accuracy=round(point.accuracy, 5), ece=point.ece)
            note.update(per_class=point.per_class, bought_by_class=point.bought_by_class)
            if point.leave_out is not None:
                note["leave_out_pt"] = {
                    s: [round(d * 100, 3), round(e * 100, 3), int(n)]
                    for s, (d, e, n) in point.leave_out.items()
                }
            # a round saved before these facts existed (a version 1 state) has none: the
            # next round's purchases are then unknown too
            bought = None if point.bought_by_class is None else dict(point.bought_by_class)
            note["bought_this_round_by_class"] = (
                None
                if bought is None or before is None
                else {k: v - before.get(k, 0) for k, v in bought.items() if v - before.get(k, 0)}
            )
            before = bought
        notes.append(note)
    return notes
