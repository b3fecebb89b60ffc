"""Prefill-layer benchmark: build and run qwen3 prefill layers on the sim platforms.

    python benchmarks/prefill_layer.py --model qwen3-0.6b --seq-len 128,512 [--platform a5sim]
    python benchmarks/prefill_layer.py --model qwen3-32b --seq-len 4096 --cost-model-only

Checked runs (the default) compare with the golden and need every sequence's values to fit
one worker (pypto 0.2.0 keeps each loop call's inputs); ``--cost-model-only`` simulates the
timing at any size. ``--mixed`` adds a batch of mixed lengths up to the largest --seq-len.
Prints simulated µs, task counts, compile time and peak memory; appends JSON records to
benchmarks/results/prefill_layer.jsonl. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time

from _common import record, row, table  # script-local helper module (benchmarks/_common.py)
from rich.console import Console

import qwenlayers
from qwenlayers.core.config import preset
from qwenlayers.layer import random_inputs


def run_one(model: str, platform: str, lens: list[int], check: bool, console: Console) -> dict:
    cfg = preset(model)
    weights = qwenlayers.LayerWeights.random(cfg, seed=0)
    inputs = random_inputs(cfg, "prefill", lens, seed=0)
    start = time.perf_counter()
    with console.status(f"{model} prefill on {platform} ({lens}) …") as status:
        result = qwenlayers.prefill(cfg, weights, **inputs, platform=platform, check=check, values=check, progress=lambda m: status.update(f"{model} on {platform}: {m}"))
    return record("prefill_layer", {"model": model, "platform": platform, "seq_lens": lens,
                                    "bench_wall_s": round(time.perf_counter() - start, 1), **result.report.as_dict()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="preset(s); default qwen3-0.6b")
    ap.add_argument("--platform", default="a2a3sim,a5sim")
    ap.add_argument("--seq-len", default="128", help="comma-separated; one batch-1 run each")
    ap.add_argument("--mixed", action="store_true", help="also a mixed batch of lengths up to the largest --seq-len")
    ap.add_argument("--cost-model-only", action="store_true", help="no values, no golden check (any size)")
    args = ap.parse_args()
    console = Console()
    out = table("prefill layer (sim)")
    lengths = [int(v) for v in args.seq_len.split(",")]
    shapes = [[n] for n in lengths]
    if args.mixed:
        top = max(lengths)
        shapes.append(sorted({1, max(1, top // 8) + 1, top // 2 + 3, top}))
    for model in args.model or ["qwen3-0.6b"]:
        for platform in args.platform.split(","):
            for lens in shapes:
                rec = run_one(model, platform, lens, not args.cost_model_only, console)
                out.add_row(*row(rec, "x".join(map(str, lens)) if len(lens) > 1 else f"1 x {lens[0]}"))
                console.print(f"{model} {platform} {lens}: {rec['sim_us']:.1f} µs, tasks {rec['tasks']}, peak {rec['peak_rss_mb']} MB")
    console.print(out)


if __name__ == "__main__":
    main()
