"""Full-size decode-layer benchmark: build, run and check qwen3 decode layers on the sim platforms.

    python benchmarks/decode_layer.py                      # qwen3-32b B=16 L=4096 and qwen3-0.6b, both sims
    python benchmarks/decode_layer.py --model qwen3-0.6b --batch 4 --seq-len 128 --platform a5sim

Prints one table row per (model, platform): simulated µs, task counts, compile time, worker
peak memory, chunking, and the error against the golden. Checked runs are split into batch
chunks by the runtime (one worker process each); the timing columns come from a whole-batch
cost-model run. Writes a JSON record per run to benchmarks/results/decode_layer.jsonl.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time

from _common import record, row, table  # script-local helper module (benchmarks/_common.py)
from rich.console import Console

import qwenlayers
from qwenlayers.core.config import preset
from qwenlayers.inputs import random_inputs


def run_one(model: str, platform: str, batch: int, seq_len: int, seed: int, console: Console) -> dict:
    cfg = preset(model)
    weights = qwenlayers.LayerWeights.random(cfg, seed=seed)
    inputs = random_inputs(cfg, "decode", [seq_len] * batch, seed=seed)
    start = time.perf_counter()
    with console.status(f"{model} decode on {platform} (B={batch}, L={seq_len}) …") as status:
        result = qwenlayers.decode(cfg, weights, **inputs, platform=platform, check=True,
                                   progress=lambda msg: status.update(f"{model} on {platform}: {msg}"))
    return record("decode_layer", {"model": model, "platform": platform, "batch": batch, "seq_len": seq_len,
                                   "bench_wall_s": round(time.perf_counter() - start, 1), **result.report.as_dict()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="preset(s); default qwen3-32b and qwen3-0.6b")
    ap.add_argument("--platform", default="a2a3sim,a5sim")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console(width=200)  # tables stay whole when piped (rich would fold them to 80 columns)
    out = table("decode layer (sim)")
    for model in args.model or ["qwen3-32b", "qwen3-0.6b"]:
        for platform in args.platform.split(","):
            rec = run_one(model, platform, args.batch, args.seq_len, args.seed, console)
            out.add_row(*row(rec, f"{args.batch} x {args.seq_len}"))
            console.print(f"{model} {platform}: {rec['sim_us']:.1f} µs, tasks {rec['tasks']}, workers {len(rec['chunks'])}, "
                          f"peak {rec['peak_rss_mb']} MB, err {rec['max_abs_err']:.4f}")
    console.print(out)


if __name__ == "__main__":
    main()
