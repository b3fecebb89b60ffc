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
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import qwenlayers
from qwenlayers.core.config import preset

RESULTS = Path(__file__).parent / "results" / "decode_layer.jsonl"


def run_one(model: str, platform: str, batch: int, seq_len: int, seed: int, console: Console) -> dict:
    cfg = preset(model)
    gen = torch.Generator().manual_seed(seed)
    weights = qwenlayers.LayerWeights.random(cfg, seed=seed)
    hidden = torch.randn(batch, cfg.hidden_size, generator=gen).bfloat16()
    shape = (batch, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_cache = torch.randn(shape, generator=gen).bfloat16()
    v_cache = torch.randn(shape, generator=gen).bfloat16()
    lens = torch.full((batch,), seq_len, dtype=torch.int32)
    start = time.perf_counter()
    with console.status(f"{model} decode on {platform} (B={batch}, L={seq_len}) …") as status:
        result = qwenlayers.decode(cfg, weights, hidden, k_cache, v_cache, lens, platform=platform, check=True,
                                   progress=lambda msg: status.update(f"{model} on {platform}: {msg}"))
    r = result.report
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": model, "platform": platform, "batch": batch,
              "seq_len": seq_len, "bench_wall_s": round(time.perf_counter() - start, 1), **r.as_dict()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="preset(s); default qwen3-32b and qwen3-0.6b")
    ap.add_argument("--platform", default="a2a3sim,a5sim")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console()
    table = Table(title="decode layer (sim)")
    for col in ("model", "platform", "B x L", "sim µs", "AIC/AIV/HUB tasks", "compile s", "chunks",
                "peak RSS GB", "max |err|", "ok", "wall s"):
        table.add_column(col)
    for model in args.model or ["qwen3-32b", "qwen3-0.6b"]:
        for platform in args.platform.split(","):
            rec = run_one(model, platform, args.batch, args.seq_len, args.seed, console)
            tasks = "/".join(str(rec["tasks"].get(k, 0)) for k in ("AIC", "AIV", "HUB"))
            compile_s = max([c["compile_s"] or 0 for c in rec["chunks"]] + [rec["compile_s"]])
            table.add_row(model, platform, f"{args.batch} x {args.seq_len}", f"{rec['sim_us']:.1f}", tasks, f"{compile_s:.1f}",
                          str(len(rec["chunks"])), f"{rec['peak_rss_mb'] / 1024:.1f}", f"{rec['max_abs_err']:.4f}",
                          str(rec["within_tolerance"]), str(rec["bench_wall_s"]))
            console.print(f"{model} {platform}: {rec['sim_us']:.1f} µs, tasks {tasks}, chunks {len(rec['chunks'])}, "
                          f"peak {rec['peak_rss_mb']} MB, err {rec['max_abs_err']:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
