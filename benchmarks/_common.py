"""Shared by the benchmark scripts: inputs, the results file, the table. Not a test."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("model", "platform", "shape", "sim µs", "AIC/AIV/HUB tasks", "compile s", "workers", "peak RSS GB",
           "max |err|", "ok", "wall s")


def record(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    """Append one run to results/<name>.jsonl (append-only history) and return it."""
    rec = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), **rec}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f"{name}.jsonl").open("a") as f:
        f.write(json.dumps(rec, default=str) + "\n")
    return rec


def table(title: str) -> Table:
    t = Table(title=title)
    for col in COLUMNS:
        t.add_column(col)
    return t


def row(rec: dict[str, Any], shape: str) -> list[str]:
    tasks = "/".join(str(rec["tasks"].get(k, 0)) for k in ("AIC", "AIV", "HUB"))
    compile_s = max([c.get("compile_s") or 0 for c in rec["chunks"]] + [rec["compile_s"]])
    err = "-" if rec.get("max_abs_err") is None else f"{rec['max_abs_err']:.4f}"
    ok = "-" if rec.get("within_tolerance") is None else str(rec["within_tolerance"])
    return [rec["model"], rec["platform"], shape, f"{rec['sim_us']:.1f}", tasks, f"{compile_s:.1f}",
            str(max(1, len(rec["chunks"]))), f"{rec['peak_rss_mb'] / 1024:.1f}", err, ok, str(rec["bench_wall_s"])]
