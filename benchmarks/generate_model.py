"""Whole-model benchmark: a random qwen3-0.6b-shaped checkpoint (28 layers, the real vocabulary,
written as a sharded safetensors checkpoint) through ``qwenlayers.model.generate`` on a sim:
one prefill of the prompts, then greedy decode steps, every layer checked against golden chains
in fp32 and bf16 (and transformers, when installed).

    python benchmarks/generate_model.py [--platform a5sim] [--layers 28] [--lens 20,28,36,44] [--steps 4]

Prints the per-step table and the drift table; writes benchmarks/results/generate/<name>.json
(the whole record), <name>-drift.png and <name>.txt (the tables as printed) and appends a summary
to benchmarks/results/generate_model.jsonl. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import RESULTS, record  # script-local helper module (benchmarks/_common.py)
from rich.console import Console

from qwenlayers.core.config import preset
from qwenlayers.generate_tables import agreement_table, drift_table, timing_table, tokens_table
from qwenlayers.model import generate
from qwenlayers.model.records import write_generation
from qwenlayers.model.synthetic import write_random_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen3-0.6b")
    ap.add_argument("--platform", default="a5sim")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--lens", default="20,28,36,44", help="prompt lengths (default: 4 prompts, 128 tokens)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    lens = [int(v) for v in args.lens.split(",")]
    cfg = preset(args.model)
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="qwenlayers-model-") as tmp:
        with console.status(f"writing a random {args.layers}-layer {args.model} checkpoint …"):
            ckpt = write_random_checkpoint(Path(tmp) / "ckpt", cfg, layers=args.layers, vocab_size=args.vocab, tied=False)
        prompts = [[(7 * b + 13 * i) % args.vocab for i in range(n)] for b, n in enumerate(lens)]
        with console.status("generate …") as status:
            gen = generate(ckpt, prompts, steps=args.steps, platform=args.platform, check=True,
                           progress=lambda m: status.update(f"generate: {m} …"))
    out_dir = RESULTS / "generate"
    rec_path, plot = write_generation(gen, out_dir)
    tables = [tokens_table(gen), timing_table(gen), agreement_table(gen), drift_table(gen)]
    with (out_dir / f"{rec_path.stem}.txt").open("w") as fh:
        text = Console(file=fh, width=200)
        for t in tables:
            text.print(t)
        text.print(f"ok: {gen.ok}; failures: {gen.failures() or 'none'}; wall {gen.wall_s} s")
    for t in tables:
        console.print(t)
    console.print(f"ok: {gen.ok}; failures: {gen.failures() or 'none'}; wall {gen.wall_s} s")
    console.print(f"record: {rec_path}\nplot: {plot}")
    record("generate_model", {"model": args.model, "platform": args.platform, "layers": args.layers, "lens": lens,
                              "steps": args.steps, "ok": gen.ok, "wall_s": gen.wall_s, "record": rec_path.name,
                              "step_us": [t.sim_us for t in gen.timings], "tokens_per_s": [t.tokens_per_s for t in gen.timings],
                              "max_platform_rel": max(d.platform_rel for d in gen.drift),
                              "max_bf16_rel": max(d.bf16_rel for d in gen.drift)})


if __name__ == "__main__":
    main()
