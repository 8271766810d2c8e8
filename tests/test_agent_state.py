"""The run state: typed, versioned, migrated from version 1; phases reported to a hook only."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from alcli.agent import STATE_VERSION, load_state, run_auto
from alcli.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures"
#: A run of state version 1, killed after round 2's picks were saved (see its README).
V1_RUN = FIXTURES / "agent-state-v1"

_spec = importlib.util.spec_from_file_location("make_v1", FIXTURES / "make_agent_state_v1.py")
assert _spec is not None
assert _spec.loader is not None
make_v1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_v1)


class RecordingOracle:
    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth
        self.asked: list[str] = []

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        self.asked.extend(uris)
        return {uri: self.truth[uri] for uri in uris}


#: Per-round facts a version 1 state never recorded (issue 18): None for its rounds.
NEW_IN_POINTS = ("ece", "per_class", "bought_by_class", "leader")


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if k not in ("timings", "strategy_seconds", "out_dir")}
    out["shared_accuracy"] = [
        {k: v for k, v in point.items() if k not in NEW_IN_POINTS}
        for point in out.get("shared_accuracy", [])
    ]
    out["round_notes"] = [
        {k: v for k, v in note.items() if k not in (*NEW_IN_POINTS, "bought_this_round_by_class")}
        for note in out.get("round_notes", [])
    ]
    return out


def test_a_version_1_state_reads_as_the_typed_state() -> None:
    raw = json.loads((V1_RUN / "state.json").read_text())
    assert raw["version"] == 1
    state = load_state(V1_RUN)
    assert state.config == make_v1.CONFIG.checked()
    assert state.labels == raw["labels"]
    assert state.sets == raw["sets"]
    assert state.pending is not None
    assert (state.pending.round, state.pending.picks) == (2, raw["pending"]["picks"])
    # what version 2 derives from the round table equals what version 1 stored
    for name, points in raw["history"].items():
        assert [list(p) for p in state.history(name)] == points
    assert state.best() == raw["best"]
    forecasts = {k: asdict(v) for k, v in state.forecasts().items()}
    # the fields version 1 stored (model, origin, shift came later, with their old defaults)
    assert {k: {f: fc[f] for f in raw["forecasts"][k]} for k, fc in forecasts.items()} == raw[
        "forecasts"
    ]
    assert all(fc["model"] == "exp" for fc in forecasts.values())


def test_a_version_1_run_resumes_to_the_uninterrupted_report(tmp_path) -> None:
    uris, X, truth, eval_set = make_v1.pool()
    direct = run_auto(
        uris, X, RecordingOracle(truth), make_v1.CONFIG, out_dir=tmp_path / "a", eval_set=eval_set
    )
    folder = tmp_path / "v1"
    shutil.copytree(V1_RUN, folder)
    bought_before = set(json.loads((folder / "state.json").read_text())["labels"])
    oracle = RecordingOracle(truth)
    resumed = run_auto(
        uris, X, oracle, make_v1.CONFIG, out_dir=folder, eval_set=eval_set, resume=True
    )
    assert comparable(resumed.as_dict()) == comparable(direct.as_dict())
    assert not bought_before & set(oracle.asked)  # nothing bought twice
    assert len(bought_before) + len(oracle.asked) == resumed.labels_bought
    saved = json.loads((folder / "state.json").read_text())
    assert saved["version"] == STATE_VERSION == 2
    assert not {"history", "best", "forecasts"} & set(saved)


def test_the_state_round_trips_through_its_file(tmp_path) -> None:
    uris, X, truth, eval_set = make_v1.pool()
    run_auto(uris, X, RecordingOracle(truth), make_v1.CONFIG, out_dir=tmp_path, eval_set=eval_set)
    state = load_state(tmp_path)
    assert state.stop_reason == "budget"
    assert state.as_json() == json.loads((tmp_path / "state.json").read_text())
    assert type(state).from_json(state.as_json()) == state


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": 99}', "state version 99 is not supported"),
        ('{"version": 2, "round": 3}', "unreadable run state"),
        ('{"version": 1, "config": {}}', "unreadable run state"),
        ("[1, 2]", "state version None is not supported"),
        ("{not json", "unreadable run state"),
    ],
)
def test_a_bad_state_file_is_a_usage_error(tmp_path, content: str, message: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(UsageError, match=message):
        load_state(tmp_path)


def test_every_phase_is_reported_to_the_hook_in_order(tmp_path) -> None:
    uris, X, truth, _ = make_v1.pool()
    config = make_v1.CONFIG.checked()
    phases: list[str] = []
    cfg = type(config)(**{**asdict(config), "eval_frac": 0.2, "max_rounds": 2, "budget": 400})
    report = run_auto(
        uris, X, RecordingOracle(truth), cfg, out_dir=tmp_path, on_phase=phases.append
    )
    assert report.stop_reason == "max_rounds"
    rounds = [
        f"round{r}:{phase}"
        for r in (1, 2)
        for phase in ("after_select", "after_oracle", "after_train", "after_round")
    ]
    assert phases == [
        "eval:after_oracle",
        "initial:after_oracle",
        "initial:after_round",
        *rounds,
        "final:before_outputs",
    ]


def test_production_runs_ignore_the_old_crash_variable(tmp_path) -> None:
    """The kill switch lives in the tests' hook now: the environment cannot reach it.

    The same command that made the version 1 fixture (and died) now runs to the end.
    """
    env = {**os.environ, "ALCLI_TEST_CRASH_AT": "round2:after_select"}
    done = subprocess.run(
        [sys.executable, str(FIXTURES / "make_agent_state_v1.py"), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.json").exists()
