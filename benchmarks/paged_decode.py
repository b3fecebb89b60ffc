"""Paged against contiguous KV caches at full size, on the cost model.

    python benchmarks/paged_decode.py                                   # qwen3-32b and qwen3-0.6b, 16 x 4096, a5sim
    python benchmarks/paged_decode.py --model qwen3-0.6b --platform a2a3sim --block 64

For each (model, platform): one decode step of B sequences of L tokens with the caches as
block pools (BLOCK rows, shuffled block tables, as an allocator leaves them), the same call on
contiguous caches at the same plan (the cost of the table itself), and on contiguous caches at
their own default plan (what paging costs a user: a paged plan has a KV_BLOCK of whole blocks).
When the two plans are the same program (the default KV_BLOCK is a whole number of blocks), the
contiguous call runs once and fills both columns. Appends a JSON record per row to
benchmarks/results/paged_decode.jsonl. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time

from _common import record  # script-local helper module (benchmarks/_common.py)
from rich.console import Console
from rich.table import Table

import qwenlayers
from qwenlayers.core.config import preset
from qwenlayers.inputs import cost_model_inputs, paged


def plan_values(report) -> dict:
    return {k: v for k, v in report.plan.items() if k not in ("phase", "source", "origin")}


def run_one(model: str, platform: str, batch: int, seq_len: int, block: int, seed: int, console: Console) -> dict:
    cfg = preset(model)
    weights = qwenlayers.LayerWeights.zeros(cfg)  # the cost model reads no values
    lens = [seq_len] * batch
    args = cost_model_inputs(cfg, "decode", lens, max_seq=max(cfg.max_seq, seq_len))
    runs = {}
    with console.status(f"{model} decode {batch} x {seq_len} on {platform} …") as status:
        for name, inputs, plan in (("paged", paged(args, cfg, "decode", block, seed=seed), None),
                                   ("contiguous, its default plan", args, None), ("contiguous, same plan", args, "paged")):
            if plan and plan_values(runs["paged"]) == plan_values(runs["contiguous, its default plan"]):
                runs[name] = runs["contiguous, its default plan"]  # the same program: one run answers both
                continue
            start = time.perf_counter()
            rep = qwenlayers.decode(cfg, weights, **inputs, platform=platform, values=False,
                                    plan=plan_values(runs["paged"]) if plan else None,
                                    progress=lambda m, n=name: status.update(f"{model} {n}: {m}")).report
            runs[name] = rep
            console.print(f"{model} {name}: {rep.sim_us:.1f} µs, kv_block {rep.plan['kv_block']}, compile {rep.compile_s:.0f} s, "
                          f"peak {rep.peak_rss_mb} MB, wall {time.perf_counter() - start:.0f} s")
    p, same, own = (runs[k] for k in ("paged", "contiguous, same plan", "contiguous, its default plan"))
    return record("paged_decode", {
        "model": model, "platform": platform, "batch": batch, "seq_len": seq_len, "block": block,
        **{f"{key}_sim_us": r.sim_us for key, r in (("paged", p), ("contiguous_same_plan", same), ("contiguous_default", own))},
        **{f"{key}_kv_block": r.plan["kv_block"] for key, r in (("paged", p), ("contiguous_default", own))},
        "paged_over_same_plan": p.sim_us / same.sim_us, "paged_over_default": p.sim_us / own.sim_us,
        "tasks": {"paged": p.tasks, "contiguous_same_plan": same.tasks, "contiguous_default": own.tasks},
        "compile_s": {"paged": p.compile_s, "contiguous_same_plan": same.compile_s, "contiguous_default": own.compile_s},
        "peak_rss_mb": max(r.peak_rss_mb for r in (p, same, own)),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="preset(s); default qwen3-32b and qwen3-0.6b")
    ap.add_argument("--platform", default="a5sim")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console(width=200)  # tables stay whole when piped
    out = Table(title=f"paged ({args.block}-row blocks, shuffled) against contiguous KV caches, decode (cost model)")
    for col in ("model", "platform", "B x L", "paged µs", "contiguous, same plan µs", "paged / same plan",
                "contiguous, default plan µs (KV_BLOCK)", "paged / default"):
        out.add_column(col, justify="left" if col in ("model", "platform") else "right")
    for model in args.model or ["qwen3-32b", "qwen3-0.6b"]:
        for platform in args.platform.split(","):
            r = run_one(model, platform, args.batch, args.seq_len, args.block, args.seed, console)
            out.add_row(model, platform, f"{args.batch} x {args.seq_len}", f"{r['paged_sim_us']:.1f}",
                        f"{r['contiguous_same_plan_sim_us']:.1f}", f"{r['paged_over_same_plan']:.3f}",
                        f"{r['contiguous_default_sim_us']:.1f} ({r['contiguous_default_kv_block']})", f"{r['paged_over_default']:.3f}")
    console.print(out)


if __name__ == "__main__":
    main()
