"""Prefill-layer benchmark: build and run qwen3 prefill layers on the sim platforms.

    python benchmarks/prefill_layer.py --model qwen3-0.6b --seq-len 128,512 [--platform a5sim]
    python benchmarks/prefill_layer.py --model qwen3-32b --seq-len 4096 --cost-model-only

    python benchmarks/prefill_layer.py --model qwen3-8b --lens 1,17,700,2048 --cost-model-only

Checked runs (the default) compare with the golden; a sequence whose values do not fit one
worker runs as one program per loop and group (docs/prefill.md "Checked runs in parts"), and the
timing then comes from one whole-batch cost-model run. ``--cost-model-only`` simulates the timing
alone. ``--mixed`` adds a batch of mixed lengths up to the largest --seq-len, ``--lens`` a batch
of given lengths. Prints simulated µs, the fraction of the calibrated roofline, task counts,
compile time and peak memory; appends JSON records to benchmarks/results/prefill_layer.jsonl.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import time

from _common import record, row, table  # script-local helper module (benchmarks/_common.py)
from rich.console import Console

import qwenlayers
from qwenlayers.core.config import preset
from qwenlayers.core.work import layer_work
from qwenlayers.inputs import random_inputs
from qwenlayers.runtime.calibration import calibrate
from qwenlayers.target import resolve_target


def run_one(model: str, platform: str, lens: list[int], check: bool, console: Console, keep: bool = False) -> dict:
    cfg = preset(model).with_max_seq(max([preset(model).max_seq, *lens]))
    weights = qwenlayers.LayerWeights.random(cfg, seed=0)
    inputs = random_inputs(cfg, "prefill", lens, seed=0)
    start = time.perf_counter()
    target = resolve_target(platform)  # once: the run and the calibration
    with console.status(f"{model} prefill on {platform} ({lens}) …") as status:
        result = qwenlayers.prefill(cfg, weights, **inputs, platform=target, check=check, values=check, keep=keep,
                                    progress=lambda m: status.update(f"{model} on {platform}: {m}"))
    rep = result.report
    cal = calibrate(target)
    roof_us, bound = cal.roofline_us(layer_work(cfg, "prefill", lens))
    return record("prefill_layer", {"model": model, "platform": platform, "seq_lens": lens,
                                    "bench_wall_s": round(time.perf_counter() - start, 1),
                                    "roofline_us": roof_us, "roofline_bound": bound,
                                    "roofline_fraction": roof_us / rep.sim_us if rep.sim_us else None, **rep.as_dict()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="preset(s); default qwen3-0.6b")
    ap.add_argument("--platform", default="a2a3sim,a5sim")
    ap.add_argument("--seq-len", default="", help="comma-separated; one batch-1 run each")
    ap.add_argument("--mixed", action="store_true", help="also a mixed batch of lengths up to the largest --seq-len")
    ap.add_argument("--cost-model-only", action="store_true", help="no values, no golden check (any size)")
    ap.add_argument("--lens", action="append", default=[], help="a batch of given lengths, e.g. 1,17,700,2048 (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep each run folder (its Perfetto trace)")
    args = ap.parse_args()
    console = Console(width=200)  # tables stay whole when piped (rich would fold them to 80 columns)
    out = table("prefill layer (sim)")
    lengths = [int(v) for v in args.seq_len.split(",") if v] or ([] if args.lens else [128])
    shapes = [[n] for n in lengths] + [[int(v) for v in text.split(",")] for text in args.lens]
    if args.mixed:
        top = max(lengths)
        shapes.append(sorted({1, max(1, top // 8) + 1, top // 2 + 3, top}))
    for model in args.model or ["qwen3-0.6b"]:
        for platform in args.platform.split(","):
            for lens in shapes:
                rec = run_one(model, platform, lens, not args.cost_model_only, console, args.keep)
                out.add_row(*row(rec, "x".join(map(str, lens)) if len(lens) > 1 else f"1 x {lens[0]}"))
                console.print(f"{model} {platform} {lens}: {rec['sim_us']:.1f} µs ({100 * rec['roofline_fraction']:.1f} % of the "
                              f"calibrated {rec['roofline_bound']} roofline {rec['roofline_us']:.1f} µs), tasks {rec['tasks']}, "
                              f"compile {rec['compile_s']:.0f} s, peak {rec['peak_rss_mb']} MB")
    console.print(out)


if __name__ == "__main__":
    main()
