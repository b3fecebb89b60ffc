"""Tensor-parallel decode benchmark: per-rank simulated µs and the bytes all-reduced per layer.

    python benchmarks/tp_decode.py                                   # qwen3-32b B=16 L=4096, tp 2,4,8, a5sim
    python benchmarks/tp_decode.py --model qwen3-0.6b --tp 2,4 --platform a2a3sim
    python benchmarks/tp_decode.py --phase prefill --batch 1 --seq-len 4096 --tp 4,8    # one 4096-token prefill

For each TP degree, rank 0's two programs (attention to reduction point 1, MLP shard) run on
the cost model at full size (``qwenlayers.tensor_parallel.rank_cost``): every rank compiles the
same shapes, so one rank stands for all, and the machine does not need tp copies of a 32B
shard in memory at once. The collectives are not simulated; their volume is reported. A
checked multi-rank run at tiny size is what the tests do (tests/test_tensor_parallel.py).
Writes a JSON record per point to benchmarks/results/tp_decode.jsonl. Not a test.
"""

from __future__ import annotations

import argparse
import time

from _common import record  # script-local helper module (benchmarks/_common.py)
from rich.console import Console
from rich.table import Table

from qwenlayers.core.config import preset
from qwenlayers.core.sharding import allreduce_bytes, shard_config
from qwenlayers.tensor_parallel import rank_cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen3-32b")
    ap.add_argument("--tp", default="2,4,8")
    ap.add_argument("--platform", default="a5sim")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--phase", default="decode", choices=("decode", "prefill"))
    args = ap.parse_args()
    console = Console(width=200)  # tables stay whole when piped (rich would fold them to 80 columns)
    cfg = preset(args.model)
    lens = [args.seq_len] * args.batch
    out = Table(title=f"{cfg.name} {args.phase} B={args.batch} L={args.seq_len}, tensor parallel on {args.platform} (rank 0, cost model)")
    for col in ("tp", "rank shard", "attention µs", "MLP µs", "rank µs", "AIC/AIV tasks", "compile s", "peak GB",
                "all-reduce payload", "ring bytes / rank"):
        out.add_column(col, justify="right")
    for tp in (int(t) for t in args.tp.split(",")):
        start = time.perf_counter()
        with console.status(f"tp={tp}: rank 0 of {cfg.name} …"):
            rank = rank_cost(cfg, args.phase, lens, tp=tp, platform=args.platform)
        comm = allreduce_bytes(args.batch if args.phase == "decode" else sum(lens), cfg, tp)
        sc = shard_config(cfg, tp)
        a, m = rank.attention, rank.mlp
        rec = record("tp_decode", {"model": cfg.name, "phase": args.phase, "platform": args.platform, "batch": args.batch, "seq_len": args.seq_len,
                                   "tp": tp, "rank": rank.rank, "q_heads": rank.q_heads, "kv_heads": rank.kv_heads,
                                   "inter": rank.inter, "sim_us": rank.sim_us, "attention": a, "mlp": m,
                                   "communication": comm, "bench_wall_s": round(time.perf_counter() - start, 1)})
        tasks = "/".join(str(a["tasks"].get(k, 0) + m["tasks"].get(k, 0)) for k in ("AIC", "AIV"))
        out.add_row(str(tp), f"{sc.num_attention_heads} q / {sc.num_key_value_heads} kv heads, inter {sc.intermediate_size}",
                    f"{a['sim_us']:.1f}", f"{m['sim_us']:.1f}", f"{rank.sim_us:.1f}", tasks,
                    f"{a['compile_s'] + m['compile_s']:.1f}", f"{max(a['peak_rss_mb'], m['peak_rss_mb']) / 1024:.1f}",
                    f"{comm['payload_bytes']:,} B", f"{comm['ring_bytes_per_rank']:,} B")
        console.print(f"tp={tp}: {rec['sim_us']:.1f} µs per rank ({rec['bench_wall_s']} s)")
    console.print(out)


if __name__ == "__main__":
    main()
