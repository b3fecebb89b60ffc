"""One Perfetto trace from the traces of programs simulated one after another.

A prefill too long for one cost-model run is timed as phases (loop A, loop B in groups of query
tiles, loop C, the MLP shards; runtime/chunking.py), each its own program with its own trace. Its
time is their sum, so its trace is theirs laid end to end: each phase's events are shifted to
start where the previous phase ended, flow ids are renumbered so arrows stay within their phase,
and a "qwenlayers phases" track names each span. The traces are read one at a time and written as
a stream, so joining a qwen3-32b 4096-token prefill needs one phase's trace in memory, not all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

#: pid of the track that names each phase (pypto's own tracks start at 1000)
PHASE_PID = 1


def _events(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ValueError(f"{path} is not a Chrome/Perfetto trace (no traceEvents list)")
    return events


def _end(events: Sequence[dict[str, Any]]) -> int:
    return max((int(e.get("ts", 0)) + int(e.get("dur", 0)) for e in events if "ts" in e), default=0)


def _shifted(events: list[dict[str, Any]], offset: int, id_base: int, seen_meta: set[str]) -> Iterator[dict[str, Any]]:
    for e in events:
        if e.get("ph") == "M":  # track names: once per track, whichever phase names it first
            key = json.dumps(e, sort_keys=True)
            if key in seen_meta:
                continue
            seen_meta.add(key)
            yield e
            continue
        if "ts" in e:
            e["ts"] = int(e["ts"]) + offset
        if e.get("ph") in ("s", "t", "f") and "id" in e:
            e["id"] = int(e["id"]) + id_base
        yield e


def _write(out: TextIO, event: dict[str, Any], first: bool) -> None:
    out.write(("" if first else ",\n") + json.dumps(event, separators=(",", ":")))


def join_traces(phases: Sequence[tuple[str, Path]], out_path: Path) -> Path:
    """Write ``out_path``: the traces of ``phases`` ((name, trace path) in run order) one after
    another on one time axis. Returns ``out_path``."""
    if not phases:
        raise ValueError("join_traces needs at least one phase trace")
    seen_meta: set[str] = set()
    offset, id_base, first = 0, 0, True
    spans: list[dict[str, Any]] = []
    with open(out_path, "w") as out:
        out.write('{"traceEvents":[\n')
        for name, path in phases:
            events = _events(Path(path))
            end = _end(events)
            ids = [int(e["id"]) for e in events if e.get("ph") in ("s", "t", "f") and "id" in e]
            for e in _shifted(events, offset, id_base, seen_meta):
                _write(out, e, first)
                first = False
            spans.append({"name": name, "cat": "phase", "ph": "X", "pid": PHASE_PID, "tid": 1, "ts": offset, "dur": end})
            offset += end
            id_base += max(ids, default=-1) + 1
            del events
        for e in [{"name": "process_name", "ph": "M", "pid": PHASE_PID, "args": {"name": "qwenlayers phases"}},
                  {"name": "process_sort_index", "ph": "M", "pid": PHASE_PID, "args": {"sort_index": -1}}, *spans]:
            _write(out, e, first)
            first = False
        out.write("\n]}\n")
    return out_path
