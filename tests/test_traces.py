"""Joining the Perfetto traces of phases simulated one after another (runtime/traces.py)."""

import json

import pytest

from qwenlayers.runtime.traces import PHASE_PID, join_traces


def _trace(path, events):
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_phase_traces_are_laid_end_to_end_with_flows_kept_apart(tmp_path):
    meta = {"name": "process_name", "ph": "M", "pid": 1000, "args": {"name": "Top_Machine"}}
    a = _trace(tmp_path / "a.json", [meta, {"name": "t", "ph": "X", "pid": 30001, "tid": 1, "ts": 0, "dur": 100},
                                     {"name": "d", "ph": "s", "id": 0, "pid": 1000, "tid": 1, "ts": 10},
                                     {"name": "d", "ph": "f", "id": 0, "pid": 1000, "tid": 2, "ts": 90}])
    b = _trace(tmp_path / "b.json", [meta, {"name": "t", "ph": "X", "pid": 30001, "tid": 1, "ts": 5, "dur": 45},
                                     {"name": "d", "ph": "s", "id": 0, "pid": 1000, "tid": 1, "ts": 5},
                                     {"name": "q", "ph": "C", "pid": 2000, "tid": 2, "ts": 20, "args": {"size": 3}}])
    events = json.loads(join_traces([("loop A", a), ("MLP", b)], tmp_path / "joined.json").read_text())["traceEvents"]
    spans = [e for e in events if e["pid"] == PHASE_PID and e["ph"] == "X"]
    assert [(s["name"], s["ts"], s["dur"]) for s in spans] == [("loop A", 0, 100), ("MLP", 100, 50)]
    tasks = sorted((e["ts"], e["dur"]) for e in events if e["ph"] == "X" and e["pid"] == 30001)
    assert tasks == [(0, 100), (105, 45)]  # the second phase starts where the first ended
    assert [e["ts"] for e in events if e["ph"] == "C"] == [120]
    assert sorted(e["id"] for e in events if e["ph"] in "sf") == [0, 0, 1]  # phase b's flow 0 is renumbered
    assert sum(1 for e in events if e == meta) == 1  # a track is named once


def test_joining_nothing_or_a_non_trace_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        join_traces([], tmp_path / "out.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"traceEvents": 3}))
    with pytest.raises(ValueError, match="not a Chrome/Perfetto trace"):
        join_traces([("x", bad)], tmp_path / "out.json")
