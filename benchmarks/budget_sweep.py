"""Tile-budget sweep: time the layer's stages at qwen3-32b shapes on each sim's cost model, one
tile size at a time, so each plugin's TILELET / TILE budgets are its own measured choice.

    python benchmarks/budget_sweep.py [--platform a2a3sim,a5sim] [--stage rmsnorm,softmax]

Stages (qwenlayers.core.kernels.sweep): RMSNorm, q/k norm + RoPE, the prefill softmax, SwiGLU
(vector tiles of 2-64 KB) and a projection (cube L0 operand tiles of 16-64 KB), at decode rows
(16) and prefill token-tile rows (128). A tile that does not fit its buffer fails at compile:
that is recorded as the limit. Appends to benchmarks/results/budget_sweep.jsonl and prints a
table of simulated µs per stage and budget. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import record  # script-local helper module (benchmarks/_common.py)
from rich.console import Console
from rich.table import Table

from qwenlayers.core.config import preset
from qwenlayers.registry import get_registry
from qwenlayers.runtime.job_types import StageSweepJob
from qwenlayers.runtime.worker import run_job
from qwenlayers.target import resolve_target

KB = 1024
VECTOR_BUDGETS = (2 * KB, 8 * KB, 16 * KB, 32 * KB, 64 * KB)
CUBE_BUDGETS = (16 * KB, 32 * KB, 64 * KB)


def points(model: str, stages: list[str]) -> list[dict[str, Any]]:
    """The sweep's points at one model's shapes: each stage at decode and prefill rows."""
    cfg = preset(model)
    h, d, inter = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    shapes = {
        "rmsnorm": [dict(rows=r, width=h) for r in (16, 128)],
        "qk_norm_rope": [dict(rows=r, width=d, heads=cfg.num_attention_heads) for r in (16, 128)],
        "softmax": [dict(rows=128 * cfg.group_size, width=128)],  # one 128-token query tile's scores, 128-key block
        "swiglu": [dict(rows=r, width=inter) for r in (16, 128)],
        "projection": [dict(rows=r, width=h, out=cfg.q_width) for r in (16, 128)],
    }
    out = []
    for stage in stages:
        budgets = CUBE_BUDGETS if stage == "projection" else VECTOR_BUDGETS
        out += [{"stage": stage, **s, "tile_bytes": b} for s in shapes[stage] for b in budgets]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", default="a2a3sim,a5sim")
    ap.add_argument("--model", default="qwen3-32b")
    ap.add_argument("--stage", default="rmsnorm,qk_norm_rope,softmax,swiglu,projection")
    args = ap.parse_args()
    console = Console(width=160)
    reg = get_registry()
    rows: list[dict[str, Any]] = []
    for name in args.platform.split(","):
        target = resolve_target(name, registry=reg)
        for stage in args.stage.split(","):
            todo = points(args.model, [stage])
            start = time.perf_counter()
            with console.status(f"{stage} on {name}: {len(todo)} points …"):
                result = run_job(target, StageSweepJob(todo), values=False)
            wall = round(time.perf_counter() - start, 1)
            for p in result.outputs["points"]:
                rows.append(record("budget_sweep", {"platform": name, "model": args.model, **p, "stage_wall_s": wall}))
            console.print(f"{stage} on {name}: {wall} s")
    table = Table(title=f"{args.model} stages by tile budget (simulated µs; AIV+AIC tasks)")
    for col in ("platform", "stage", "rows x width", "budget KB", "sim µs", "tasks", "note"):
        table.add_column(col)
    for r in rows:
        tasks = r.get("tasks") or {}
        table.add_row(r["platform"], r["stage"], f"{r['rows']} x {r['width']}", str(r["tile_bytes"] // KB),
                      "-" if r["sim_us"] is None else f"{r['sim_us']:.1f}", str(tasks.get("AIV", 0) + tasks.get("AIC", 0)),
                      r.get("error", ""))
    console.print(table)


if __name__ == "__main__":
    main()
