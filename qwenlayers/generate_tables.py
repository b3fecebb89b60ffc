"""The tables ``qwenlayers generate`` prints: tokens, per-step timing, and (checked) token
agreement and drift per layer. Built from a :class:`~qwenlayers.model.Generation` only, so what
the table says and what ``--json`` says are the same figures."""

from __future__ import annotations

from rich.table import Table

from qwenlayers.model.generation import Generation
from qwenlayers.model.host import NEAR_TIE_SIGMAS


def tokens_table(gen: Generation) -> Table:
    table = Table(title=f"{gen.model}: {gen.layers} layers on {gen.platform}" + (f", tp={gen.tp}" if gen.tp > 1 else ""))
    table.add_column("sequence", justify="right")
    table.add_column("prompt tokens", justify="right")
    table.add_column("generated (prefill, then one per decode step)")
    for b, (prompt, new) in enumerate(zip(gen.prompts, gen.tokens)):
        table.add_row(str(b), str(len(prompt)), ", ".join(map(str, new)))
    return table


def timing_table(gen: Generation) -> Table:
    table = Table(title="simulated time per pass (every layer on the platform; embeddings, norm, lm_head on the host)")
    for col in ("step", "phase", "tokens", "µs per layer (min..max)", "step µs", "tasks AIC / AIV / HUB", "tokens/s (simulated)",
                "programs compiled", "compile s", "peak GB"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for t in gen.timings:
        per = [x.sim_us for x in t.layers if x.sim_us is not None]
        tasks = t.tasks()
        table.add_row(str(t.step), t.phase, str(t.tokens), f"{min(per):.1f}..{max(per):.1f}" if per else "-",
                      f"{t.sim_us:.1f}" if t.sim_us is not None else "-",
                      " / ".join(str(tasks.get(k, 0)) for k in ("AIC", "AIV", "HUB")),
                      f"{t.tokens_per_s:,.0f}" if t.tokens_per_s else "-", str(t.programs_compiled),
                      f"{sum(x.compile_s for x in t.layers):.1f}", f"{max(x.peak_rss_mb for x in t.layers) / 1024:.1f}")
    return table


def _marked(ids: list[int], near_tie: list[bool]) -> str:
    return ", ".join(f"{i}{'*' if tie else ''}" for i, tie in zip(ids, near_tie))


def agreement_table(gen: Generation) -> Table:
    table = Table(title="greedy tokens of each chain, all given the platform's prefix (* near tie: fp32 top-2 margin "
                        f"within {NEAR_TIE_SIGMAS:g} sigma of bf16 logit noise)")
    table.add_column("step", justify="right")
    table.add_column("platform")
    table.add_column("golden fp32")
    table.add_column("golden bf16")
    if gen.transformers_version:
        table.add_column(f"transformers {gen.transformers_version} fp32")
    table.add_column("fp32 margin (min)", justify="right")
    for t in gen.token_checks:
        row = [str(t.step), *(_marked(ids, t.near_tie) for ids in (t.platform, t.golden_fp32, t.golden_bf16))]
        if gen.transformers_version:
            row.append(_marked(t.transformers or [], t.near_tie))
        row.append(f"{min(t.fp32_margin):.3g}")
        table.add_row(*row)
    return table


def drift_table(gen: Generation) -> Table:
    """One row per layer, one column per step: the platform's relative error against the fp32
    chain, and the bf16 golden chain's own in brackets."""
    steps = sorted({d.step for d in gen.drift})
    table = Table(title="drift: relative RMS error of each layer's output against the fp32 chain, platform (bf16 golden)")
    table.add_column("layer", justify="right")
    for s in steps:
        table.add_column("prefill" if s == 0 else f"step {s}", justify="right")
    by = {(d.step, d.layer): d for d in gen.drift}
    for layer in range(gen.layers):
        row = [str(layer)]
        for s in steps:
            d = by.get((s, layer))
            row.append("-" if d is None else f"{'' if d.within else '[red]'}{d.platform_rel:.2e} ({d.bf16_rel:.2e})"
                       f"{'' if d.within else '[/]'}")
        table.add_row(*row)
    return table
