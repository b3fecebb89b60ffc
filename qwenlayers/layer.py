"""Running a whole layer on a platform: ``qwenlayers.decode`` and ``qwenlayers.prefill``.

The caller's tensors are checked once (the data contract), packed, and sent to worker
processes; nothing is written back until every worker succeeded, and then only the
documented places: ``out``, and cache row seq_len-1 of each sequence. A kernel that wrote any
other cache row is an error, not a silent corruption.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from qwenlayers.core import contract, golden, packing
from qwenlayers.core.compare import Comparison, compare, verdict
from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.tiling import TilingPlan, check_plan, fit_kv_block
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import InputError, KernelError, TilingError
from qwenlayers.registry import PlatformRegistry, get_registry
from qwenlayers.runtime.chunking import (
    Chunk,
    DecodeSplit,
    PrefillSplit,
    cache_rows_needed,
    check_reference_fits,
    phase_prefill_cost_model,
    prefill_chunks,
    prefill_fits_one_worker,
    split_decode,
    split_prefill,
)
from qwenlayers.runtime.paths import cache_dir
from qwenlayers.runtime.traces import join_traces

Progress = Callable[[str], None]

#: Schedules of both phases: the fused kernel, and the reference-schedule baseline it is measured against.
SCHEDULES = ("fused", "reference")


@dataclass
class LayerReport:
    """What one layer run cost and how it compared, for tables, JSON and benchmarks."""

    phase: Phase
    platform: str
    model: str
    arch: str  # pypto npuarch the kernel was compiled for
    cost_model_arch: str | None
    batch: int
    seq_lens: list[int]
    plan: dict[str, Any]
    sim_us: float | None
    aicore_cycles: int | None
    total_cycles: float | None
    tasks: dict[str, int]
    lanes: dict[str, int]
    pipe_usage_pct: dict[str, float]
    compile_s: float
    simulate_s: float
    wall_s: float
    peak_rss_mb: int
    verification: dict[str, Any]
    workarounds: list[str]
    chunks: list[dict[str, Any]] = field(default_factory=list)
    timing_from: str = "values run"  # or "whole-batch cost-model run" when the values came in chunks
    trace: str | None = None
    run_dir: str | None = None
    max_abs_err: float | None = None  # against the golden, when checked
    cache_max_abs_err: float | None = None
    within_tolerance: bool | None = None  # bf16 atol=rtol=1e-2 (qwenlayers.core.compare)
    outside_elementwise: int | None = None  # outputs outside the plain elementwise bar
    nonfinite: dict[str, Any] | None = None  # when checked: per tensor with NaN/Inf, its count and first positions
    check_failures: list[str] = field(default_factory=list)  # when checked and not within tolerance: why, per tensor
    schedule: str = "fused"  # or "reference": the reference-schedule baseline
    budgets: str = ""  # the budget set the plan was checked against (the plugin's own, or e.g. pypto-lib)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerResult:
    out: torch.Tensor | None  # None for a cost-model-only run (values=False)
    report: LayerReport
    k_cache: torch.Tensor | None = None  # the caches written (the caller's, or allocated by prefill)
    v_cache: torch.Tensor | None = None


def _build_report(
    phase: Phase, target: Platform, reg: PlatformRegistry, cfg: Qwen3Config, lens: list[int], plan: TilingPlan,
    timing: dict[str, Any], timing_from: str, reports: list[dict[str, Any]], summaries: list[dict[str, Any]],
    wall_total: float, kept_dir: Any, schedule: str,
) -> LayerReport:
    return LayerReport(
        phase=phase, platform=target.name, model=cfg.name, arch=str(timing.get("npuarch") or reports[0].get("npuarch")),
        cost_model_arch=timing.get("cost_model_arch"), batch=len(lens), seq_lens=lens, plan=plan.as_dict(),
        sim_us=timing.get("sim_us"), aicore_cycles=timing.get("aicore_cycles"), total_cycles=timing.get("total_cycles"),
        tasks=timing.get("tasks", {}), lanes=timing.get("lanes", {}), pipe_usage_pct=timing.get("pipe_usage_pct", {}),
        compile_s=float(timing.get("compile_s", 0.0)), simulate_s=float(timing.get("simulate_s", 0.0)),
        wall_s=round(wall_total, 2), peak_rss_mb=max(int(r.get("peak_rss_mb", 0)) for r in [*reports, timing]),
        verification=_merge_verification(reports), workarounds=reg.workarounds(target).switches(),
        chunks=summaries, timing_from=timing_from, trace=timing.get("trace"),
        run_dir=str(kept_dir) if kept_dir else timing.get("run_dir"), schedule=schedule, budgets=target.budgets.name,
    )


def _cost_model_only(phase: Phase, target: Platform, reg: PlatformRegistry, cfg: Qwen3Config, lens: list[int],
                     plan: TilingPlan, whole: Any, schedule: str) -> LayerResult:
    report = _build_report(phase, target, reg, cfg, lens, plan, whole.report, "cost-model run (no values)", [whole.report],
                           [], whole.wall_s, whole.kept_dir, schedule)
    return LayerResult(None, report)


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise InputError(f"schedule={schedule!r}; allowed: {', '.join(SCHEDULES)}")


def _record_check(report: LayerReport, comparisons: Mapping[str, Comparison]) -> None:
    """Record ``{"out", "k_cache", "v_cache"}`` comparisons: a NaN or Inf anywhere checked is a
    failure with its count and first positions, never an exact match."""
    v = verdict(comparisons)
    report.max_abs_err, report.cache_max_abs_err, report.within_tolerance = v.max_abs_err, v.cache_max_abs_err, v.ok
    report.outside_elementwise, report.nonfinite, report.check_failures = v.outside_elementwise, v.nonfinite, v.failures


def _compare_layer(
    phase: Phase, lens: list[int], out: torch.Tensor, ref: torch.Tensor, caches: tuple[torch.Tensor, torch.Tensor],
    ref_caches: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, Comparison]:
    """Output and caches against the golden; cache rows the layer must not write are compared
    bit for bit (garbage there is the caller's), the written rows must be finite and close."""
    through = contract.passthrough_rows(phase, lens, caches[0].shape[2])
    return {"out": compare(out, ref), **{name: compare(c, r, passthrough=through)
                                        for name, c, r in zip(("k_cache", "v_cache"), caches, ref_caches)}}


def random_inputs(
    config: Qwen3Config, phase: Phase, lens: list[int], *, seed: int = 0, max_seq: int | None = None
) -> dict[str, torch.Tensor]:
    """Random bf16 inputs for one ``decode`` or ``prefill`` call with sequences ``lens``: hidden
    (decode [B, H]; prefill [B, max(lens), H]), for decode caches of ``max_seq`` rows (default
    the config's), and seq_lens. Drawn in that order from one generator seeded ``seed``."""
    if not lens:
        raise InputError("no sequences to make inputs for (an empty list of lengths); give at least one length >= 1 "
                         "(CLI: --batch N with N >= 1, or --seq-lens a,b,c)")
    gen = torch.Generator().manual_seed(seed)
    n = len(lens)
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    if phase == "prefill":
        return {"hidden": torch.randn(n, max(lens), config.hidden_size, generator=gen).bfloat16(), "seq_lens": seq_lens}
    shape = (n, config.num_key_value_heads, max_seq or config.max_seq, config.head_dim)
    return {"hidden": torch.randn(n, config.hidden_size, generator=gen).bfloat16(),
            "k_cache": torch.randn(shape, generator=gen).bfloat16(), "v_cache": torch.randn(shape, generator=gen).bfloat16(),
            "seq_lens": seq_lens}


def resolve_plan(
    reg: PlatformRegistry, target: Platform, cfg: Qwen3Config, phase: Phase, plan: TilingPlan | Mapping[str, int] | None,
    lens: list[int] | None = None,
) -> TilingPlan:
    """A user plan, or the default plan (the plugin's, with a tuned plan for this call's shape
    class applied when ``qwenlayers tune`` cached one, its KV_BLOCK fitted to the longest
    sequence) plus overrides; always checked against the platform budgets before anything
    compiles."""
    if isinstance(plan, TilingPlan):
        if plan.phase != phase:
            raise TilingError(f"the plan given is a {plan.phase} plan; {phase} needs a {phase} plan (qwenlayers.plan(..., '{phase}'))")
        result = plan
    else:
        from qwenlayers.tuning import tuned_plan

        base = reg.tiling_defaults(target, cfg, phase)
        if lens:
            base = tuned_plan(target, cfg, phase, lens, base)
        result = fit_kv_block(base.with_overrides(dict(plan or {})), lens or [], cfg, target)
    check_plan(result, cfg, target)
    return result


def _merge_verification(reports: list[dict[str, Any]]) -> dict[str, Any]:
    passes: dict[str, dict[str, int]] = {}
    for r in reports:
        for name, counts in r.get("verification", {}).get("passes", {}).items():
            slot = passes.setdefault(name, {"PASS": 0, "FAILED": 0})
            for k in ("PASS", "FAILED"):
                slot[k] += counts.get(k, 0)
    exceptions = [e for r in reports for e in r.get("verification", {}).get("exceptions", [])]
    return {"passes": passes, "exceptions": exceptions}


def _chunk_summary(what: str, estimate: int, lens: list[int], report: dict[str, Any], wall: float) -> dict[str, Any]:
    return {
        "worker": what, "seq_lens": lens,
        "estimate_gb": round(estimate / 1024**3, 2), "peak_rss_mb": report.get("peak_rss_mb"),
        "sim_us": report.get("sim_us"), "compile_s": report.get("compile_s"), "simulate_s": report.get("simulate_s"),
        "wall_s": round(wall, 2),
    }


def _mlp_in_shards(
    target: Platform, reg: PlatformRegistry, cfg: Qwen3Config, plan: TilingPlan, packed: dict[str, torch.Tensor],
    resid: torch.Tensor, split: DecodeSplit, reports: list[dict[str, Any]], summaries: list[dict[str, Any]], say: Progress,
    verify_passes: bool,
) -> torch.Tensor:
    """The MLP half over the whole batch in ``split.mlp_shards`` intermediate shards; the host
    sums their fp32 partials (the all-reduce of reduction point 2), rounds once to bf16 as the
    one-program kernel does, and adds the residual."""
    from qwenlayers.runtime.worker import run_job

    inter, shards = cfg.intermediate_size, split.mlp_shards
    width = inter // shards
    total = torch.zeros(resid.shape, dtype=torch.float32)
    for k in range(shards):
        cols = slice(k * width, (k + 1) * width)
        w_gu, w_down = _mlp_shard_weights(packed, inter, cols)
        say(f"decode MLP shard {k + 1}/{shards}: intermediate columns {cols.start}..{cols.stop - 1}")
        result = run_job(target, "decode_mlp",
                         {"config": cfg, "plan": plan, "resid": resid, "w_ln2": packed["w_ln2"], "w_gu": w_gu,
                          "w_down": w_down}, registry=reg, verify_passes=verify_passes)
        total += result.outputs["part"]
        reports.append(result.report)
        summaries.append(_chunk_summary(f"mlp shard {k + 1}/{shards}", split.mlp_estimate_bytes, [], result.report, result.wall_s))
    return residual_after_reduction(resid, total)


def _mlp_shard_weights(packed: dict[str, torch.Tensor], inter: int, cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """One intermediate shard's packed weights: its gate | up columns [H, 2*w] and down rows [w, H]."""
    w_gu = torch.cat([packed["w_gu"][:, cols], packed["w_gu"][:, inter + cols.start : inter + cols.stop]], 1).contiguous()
    return w_gu, packed["w_down"][cols].contiguous()


def residual_after_reduction(x: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
    """``x + sum of partials`` the way the one-program kernel rounds at a reduction point: the
    fp32 sum rounded once to bf16 (as the unsharded projection output), then the bf16 residual."""
    return (x.float() + summed.bfloat16().float()).bfloat16()


def _trimmed(cache: torch.Tensor, rows: int) -> torch.Tensor:
    """The first ``rows`` cache rows (zero-padded past MAX_SEQ), as a new contiguous tensor."""
    out = torch.zeros(cache.shape[0], cache.shape[1], rows, cache.shape[3], dtype=cache.dtype)
    n = min(rows, cache.shape[2])
    out[:, :, :n] = cache[:, :, :n]
    return out


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, not equal in value: unused rows of a ``torch.empty`` cache may hold NaNs,
    and NaN != NaN would make an untouched row look written."""
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return a.dtype == b.dtype and torch.equal(a.view(as_int[a.element_size()]), b.view(as_int[b.element_size()]))


def _check_only_spans_written(
    phase: Phase, name: str, before: torch.Tensor, after: torch.Tensor, spans: list[tuple[int, int]], offset: int
) -> None:
    """Rows outside each sequence's span ``[start, stop)`` must come back bit-identical; a
    kernel that wrote anywhere else is a bug, caught before anything is written back."""
    keep = torch.ones(before.shape[0], before.shape[2], dtype=torch.bool)
    for i, (start, stop) in enumerate(spans):
        keep[i, start:stop] = False
    b_idx, r_idx = keep.nonzero(as_tuple=True)
    if not _same_bits(before[b_idx, :, r_idx], after[b_idx, :, r_idx]):
        allowed = "row seq_len-1" if phase == "decode" else "rows 0..seq_len-1"
        raise KernelError(f"the {phase} kernel changed {name} rows other than {allowed} (batch rows {offset}..); "
                          "nothing was written back")


def _collect_spans(
    phase: Phase, before: tuple[torch.Tensor, torch.Tensor], outputs: dict[str, torch.Tensor], spans: list[tuple[int, int]],
    offset: int, written: list[tuple[int, int, torch.Tensor, torch.Tensor]],
) -> None:
    """Check a worker's caches and keep its written rows (batch row, first row, K rows, V rows)
    for the write-back once every worker has succeeded."""
    for name, old in zip(("k_cache", "v_cache"), before):
        _check_only_spans_written(phase, name, old, outputs[name], spans, offset)
    for i, (start, stop) in enumerate(spans):
        written.append((offset + i, start, outputs["k_cache"][i, :, start:stop].clone(), outputs["v_cache"][i, :, start:stop].clone()))


def _write_back(k_cache: torch.Tensor, v_cache: torch.Tensor, written: list[tuple[int, int, torch.Tensor, torch.Tensor]]) -> None:
    for b, start, k_rows, v_rows in written:
        k_cache[b, :, start : start + k_rows.shape[1]] = k_rows
        v_cache[b, :, start : start + v_rows.shape[1]] = v_rows


def _scatter_packed(out: torch.Tensor, packed_rows: torch.Tensor, lens: list[int], first: int) -> None:
    """Packed rows [sum(lens), H] back into the caller's right-padded [B, S, H] from batch row ``first``."""
    offset = 0
    for i, n_tok in enumerate(lens):
        out[first + i, :n_tok] = packed_rows[offset : offset + n_tok]
        offset += n_tok


def _prefill_in_parts(
    target: Platform, reg: PlatformRegistry, inputs: dict[str, Any], split: PrefillSplit, reports: list[dict[str, Any]],
    summaries: list[dict[str, Any]], say: Progress, verify_passes: bool, values: bool = True, keep: bool = False,
) -> dict[str, torch.Tensor]:
    """A checked prefill of ``inputs`` (one chunk's packed tokens) as one program per loop and
    group (:class:`~qwenlayers.runtime.chunking.PrefillSplit`): loop A per group of token tiles,
    loop B per group of query tiles (each reads the K/V workspaces loop A filled and writes its
    own cache and attention rows), loop C to the first residual per group of token tiles, then
    the MLP per intermediate shard and token group, the fp32 partials summed on the host and
    rounded once (reduction point 2, as the one-program kernel rounds). Returns what the
    one-program prefill job returns: out [T, H] and the caches.

    ``values=False`` runs the same programs on the cost model only (a prefill too long for one
    cost-model run): the outputs are then meaningless, the reports are what counts; ``keep``
    keeps each program's run folder (its trace, for :func:`_phased_timing` to join)."""
    from qwenlayers.core.kernels.prefill import WORKSPACES, work_items
    from qwenlayers.runtime.worker import run_job

    cfg, plan, lens = inputs["config"], inputs["plan"], inputs["seq_lens"]
    x, tt, st = inputs["hidden"], split.token_tile, plan.seq_tile
    n_tok = x.shape[0]
    kc, vc = inputs["k_cache"], inputs["v_cache"]
    small = torch.zeros(1, cfg.num_key_value_heads, st, cfg.head_dim, dtype=kc.dtype)  # loops A and C touch no cache
    total = split.workers()
    done = 0

    def job(what: str, job_inputs: dict[str, Any], estimate: int, kind: str = "prefill") -> dict[str, torch.Tensor]:
        nonlocal done
        done += 1
        say(f"prefill in parts, {'worker' if values else 'cost-model phase'} {done}/{total}: {what}")
        result = run_job(target, kind, job_inputs, registry=reg, verify_passes=verify_passes, values=values, keep=keep)
        reports.append(result.report)
        summaries.append(_chunk_summary(what, estimate, lens, result.report, result.wall_s))
        return result.outputs

    def rows(g: Any) -> slice:
        return slice(g.start * tt, min(n_tok, g.stop * tt))

    def token_job(what: str, g: Any, part: str, extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r = rows(g)
        return job(f"{what}, tokens {r.start}..{r.stop - 1}", {
            **inputs, "part": part, "hidden": x[r].contiguous(), "cos": inputs["cos"][r].contiguous(),
            "sin": inputs["sin"][r].contiguous(), "seq_lens": [r.stop - r.start], "k_cache": small, "v_cache": small.clone(),
            **{k: v[r].contiguous() for k, v in extra.items()}}, g.estimate_bytes)

    ws = {name: torch.zeros(n_tok, width, dtype=x.dtype)
          for name, width in zip(WORKSPACES, (cfg.q_width, cfg.kv_width, cfg.kv_width, cfg.q_width))}
    for g in split.qkv:  # loop A
        o = token_job("projections", g, "qkv", {})
        for name in WORKSPACES[:3]:
            ws[name][rows(g)] = o[name]
    items = work_items(lens, st)
    k_out, v_out = kc.clone(), vc.clone()
    for g in split.attend:  # loop B
        mine = items[g.start : g.stop]
        o = job(f"attention, query tiles {g.start}..{g.stop - 1} of {len(items)}", {
            **inputs, "part": "attend", "work_items": mine, **{n: ws[n] for n in WORKSPACES[:3]}}, g.estimate_bytes)
        for b, n, offset, qt in mine:
            lo, hi = qt * st, min(n, (qt + 1) * st)
            ws["attn"][offset + lo : offset + hi] = o["attn"][offset + lo : offset + hi]
            k_out[b, :, lo:hi], v_out[b, :, lo:hi] = o["k_cache"][b, :, lo:hi], o["v_cache"][b, :, lo:hi]
    resid = torch.empty_like(x)
    for g in split.o_proj:  # loop C to the first residual
        resid[rows(g)] = token_job("o_proj + residual", g, "o_proj", {"attn": ws["attn"]})["out"]
    inter, shards = cfg.intermediate_size, split.mlp_shards
    width = inter // shards
    packed = inputs["weights"]
    summed = torch.zeros(resid.shape, dtype=torch.float32)
    for k in range(shards):
        cols = slice(k * width, (k + 1) * width)
        w_gu, w_down = _mlp_shard_weights(packed, inter, cols)
        for g in split.mlp_groups:
            r = rows(g)
            rt = resid[r]
            pad = -rt.shape[0] % tt if rt.shape[0] > tt else 0
            o = job(f"MLP shard {k + 1}/{shards} (columns {cols.start}..{cols.stop - 1}), tokens {r.start}..{r.stop - 1}",
                    {"config": cfg, "plan": plan, "resid": torch.cat([rt, torch.zeros(pad, rt.shape[1], dtype=rt.dtype)]),
                     "w_ln2": packed["w_ln2"], "w_gu": w_gu, "w_down": w_down, "token_tile": tt}, g.estimate_bytes, "decode_mlp")
            summed[r] += o["part"][: r.stop - r.start]
    return {"out": residual_after_reduction(resid, summed), "k_cache": k_out, "v_cache": v_out}


def _phased_timing(target: Platform, reg: PlatformRegistry, inputs: dict[str, Any], phases: PrefillSplit,
                   say: Progress, keep: bool = False) -> dict[str, Any]:
    """The timing of a prefill too long for one cost-model run: its phases (loop A, loop B in
    groups of query tiles, loop C, the MLP) simulated one after another, their µs, cycles and
    tasks added. In the one program the loops also run one after another (each reads what the
    previous wrote), so the sum is the one-program figure less the little overlap at the loop
    boundaries (docs/prefill.md measures it where both run). ``keep`` joins the phases' Perfetto
    traces end to end into one (runtime/traces.py) in a run folder of its own; the phases' own
    folders (~1 GB each at qwen3-32b) are then removed."""
    reports: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    _prefill_in_parts(target, reg, inputs, phases, reports, summaries, say, False, values=False, keep=keep)
    timing: dict[str, Any] = {**reports[0], "phases": summaries}
    for key in ("sim_us", "aicore_cycles", "total_cycles", "compile_s", "simulate_s"):
        timing[key] = sum(float(r.get(key) or 0) for r in reports)
    timing["tasks"] = {k: sum(int(r.get("tasks", {}).get(k, 0)) for r in reports) for k in ("AIC", "AIV", "HUB")}
    timing["peak_rss_mb"] = max(int(r.get("peak_rss_mb", 0)) for r in reports)
    timing["wall_s"] = sum(s["wall_s"] for s in summaries)
    timing["trace"], timing["run_dir"] = None, None
    if keep:
        say(f"joining the {len(reports)} phase traces into one")
        run_dir = Path(tempfile.mkdtemp(prefix=f"{target.name}-prefill-phased-", dir=cache_dir("runs")))
        parts = [(summary["worker"], Path(r["trace"])) for summary, r in zip(summaries, reports) if r.get("trace")]
        if parts:
            timing["trace"] = str(join_traces(parts, run_dir / "phased.pefetto.trace.json"))
        timing["run_dir"] = str(run_dir)
        for r in reports:
            if r.get("run_dir"):
                shutil.rmtree(r["run_dir"], ignore_errors=True)
    timing["timing_from"] = f"phased cost-model runs ({len(reports)} programs, their times added)"
    return timing


def decode(
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    platform: str | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    check: bool = False,
    keep: bool = False,
    values: bool = True,
    verify_passes: bool = False,
    schedule: str = "fused",
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    allow_nonfinite: bool = False,
) -> LayerResult:
    """One decode step of one Qwen3 layer on a platform.

    hidden [B, H] bf16 is the new token of each sequence; k_cache/v_cache [B, KVH, MAX_SEQ, D]
    bf16 are updated in place at row ``seq_lens[b]-1`` only; seq_lens int32 [B] counts the new
    token. Returns ``LayerResult(out [B, H] bf16, report)``; ``check=True`` also runs the golden
    and records the max error (it does not raise on a mismatch: ``report.within_tolerance``).

    Large checked runs are split into pieces, one worker process each, sized so every process
    stays under ``QWENLAYERS_WORKER_MEM_GB`` (default 10): batch chunks, and, when one
    sequence of the whole layer would not fit (qwen3-32b), the attention half per chunk and
    the MLP half in intermediate shards (runtime/chunking.py). The timing figures then come
    from one extra whole-batch cost-model run of the one-program layer.

    ``values=False`` runs only that cost-model run (cheap at any size): ``out`` is None and
    the caches are not touched. ``verify_passes=True`` also checks pypto's default lowered
    passes against its tensor graph (``report.verification``; slower).

    ``schedule="reference"`` runs the reference-schedule baseline instead of the fused kernel
    (:mod:`qwenlayers.core.kernels.reference`: same math, the pypto-lib reference structure),
    which is what ``qwenlayers bench`` compares against. It is one program, so a checked run
    of it is limited to sizes where one batch chunk runs the whole layer.

    Refused before any work (``InputError``, nothing changed): an empty batch, arguments that
    share memory, and a NaN or Inf in hidden, a weight or a cache row the attention reads
    (rows 0..seq_len-2; rows past seq_len may hold anything). ``allow_nonfinite=True`` runs
    such inputs anyway; a checked run then reports the non-finite outputs as a failure.
    """
    say = progress or (lambda _msg: None)
    _check_schedule(schedule)
    cfg = as_config(config)
    lens = contract.check_decode(cfg, hidden, k_cache, v_cache, seq_lens, dtypes=(torch.bfloat16,), contiguous=True)
    w = LayerWeights.coerce(weights, cfg)
    contract.check_arguments("decode", hidden, seq_lens, lens, w.tensors, k_cache=k_cache, v_cache=v_cache,
                             allow_nonfinite=allow_nonfinite)
    reg = registry or get_registry()
    target = reg.select(platform, require_available=True, budgets=budgets)
    max_seq = k_cache.shape[2]
    run_cfg = cfg.with_max_seq(max_seq)
    the_plan = resolve_plan(reg, target, run_cfg, "decode", plan, lens)
    st = the_plan.attention_block  # cache rows travel in whole attention iterations

    from qwenlayers.runtime.worker import run_job

    packed = packing.pack_layer(w)
    cos, sin = packing.rope_rows(torch.tensor(lens) - 1, cfg.head_dim, cfg.rope_theta)

    def whole_batch_cost_model_run() -> Any:
        say(f"whole-batch cost-model run ({len(lens)} sequences, no values)")
        rows = cache_rows_needed(lens, st)
        return run_job(
            target, "decode",
            {"config": run_cfg, "plan": the_plan, "hidden": hidden, "weights": packed, "cos": cos, "sin": sin,
             "k_cache": _trimmed(k_cache, rows), "v_cache": _trimmed(v_cache, rows),
             "seq_lens": torch.tensor(lens, dtype=torch.int32), "schedule": schedule},
            registry=reg, values=False, keep=keep,
        )

    if not values:
        return _cost_model_only("decode", target, reg, cfg, lens, the_plan, whole_batch_cost_model_run(), schedule)
    if schedule == "reference":  # one worker or none: its capture does not shrink with the batch
        split = DecodeSplit("layer", [Chunk(0, len(lens), check_reference_fits(run_cfg, the_plan, "decode", lens))])
    else:
        split = split_decode(run_cfg, lens, st, the_plan.mlp_out_chunk)
    chunks = split.chunks
    out = torch.empty_like(hidden)
    written: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
    reports: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    kept_dir = None
    single = len(chunks) == 1 and split.part == "layer"
    for n, chunk in enumerate(chunks, 1):
        part = lens[chunk.start : chunk.stop]
        rows = cache_rows_needed(part, st)
        kc, vc = _trimmed(k_cache[chunk.start : chunk.stop], rows), _trimmed(v_cache[chunk.start : chunk.stop], rows)
        say(f"decode {split.part} chunk {n}/{len(chunks)}: batch rows {chunk.start}..{chunk.stop - 1}, cache rows {rows}")
        sl = slice(chunk.start, chunk.stop)
        result = run_job(
            target, "decode",
            {"config": run_cfg, "plan": the_plan, "part": split.part, "hidden": hidden[sl].contiguous(), "weights": packed,
             "cos": cos[sl].contiguous(), "sin": sin[sl].contiguous(), "k_cache": kc, "v_cache": vc,
             "seq_lens": torch.tensor(part, dtype=torch.int32), "schedule": schedule},
            registry=reg, keep=keep and single, verify_passes=verify_passes,
        )
        o = result.outputs
        _collect_spans("decode", (kc, vc), o, [(n_tok - 1, n_tok) for n_tok in part], chunk.start, written)
        out[sl] = o["out"]  # the layer output, or the first residual when the MLP runs apart
        reports.append(result.report)
        summaries.append(_chunk_summary(f"{split.part} rows {chunk.start}..{chunk.stop - 1}", chunk.estimate_bytes,
                                        part, result.report, result.wall_s))
        kept_dir = result.kept_dir or kept_dir
    if split.part == "attention":
        out = _mlp_in_shards(target, reg, run_cfg, the_plan, packed, out, split, reports, summaries, say, verify_passes)
    wall_total = sum(s["wall_s"] for s in summaries)

    timing, timing_from = reports[0], "values run"
    if not single:
        whole = whole_batch_cost_model_run()
        timing, timing_from = whole.report, "whole-batch cost-model run"
        wall_total += whole.wall_s

    before = (k_cache.clone(), v_cache.clone()) if check else None
    _write_back(k_cache, v_cache, written)  # all workers succeeded: the documented rows only

    report = _build_report("decode", target, reg, cfg, lens, the_plan, timing, timing_from, reports, summaries, wall_total,
                           kept_dir, schedule)
    if check and before is not None:
        say("golden decode")
        ref, ref_k, ref_v = golden.decode(cfg, w, hidden, before[0], before[1], seq_lens)
        _record_check(report, _compare_layer("decode", lens, out, ref, (k_cache, v_cache), (ref_k, ref_v)))
    return LayerResult(out, report, k_cache, v_cache)


def prefill(
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    k_cache: torch.Tensor | None = None,
    v_cache: torch.Tensor | None = None,
    platform: str | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    check: bool = False,
    keep: bool = False,
    values: bool = True,
    verify_passes: bool = False,
    schedule: str = "fused",
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    allow_nonfinite: bool = False,
) -> LayerResult:
    """Causal prefill of one Qwen3 layer on a platform.

    hidden [B, S, H] bf16 is right-padded; seq_lens int32 [B] (1 <= L <= S). Returns
    ``LayerResult(out [B, S, H] bf16 with rows >= seq_len zero, report, k_cache, v_cache)``; the
    caches [B, KVH, MAX_SEQ, D] are the caller's (written in place at rows 0..seq_len-1 only)
    or allocated zero with the config's ``max_seq``. Only real tokens reach the kernel (the
    host packs them), so padding costs nothing. Checked runs are split by sequences into worker
    chunks under ``QWENLAYERS_WORKER_MEM_GB``. ``values=False`` runs the cost model only (out
    None, caches untouched), which is what full-size benchmarks can afford.

    ``schedule="reference"`` runs the reference-schedule baseline (as :func:`decode`); its
    checked runs go one worker per sequence chunk like the fused kernel's.

    Refused before any work as in :func:`decode`: an empty batch, arguments that share memory,
    a NaN or Inf in a weight or in hidden rows 0..seq_len-1 (padding may hold anything; no
    cache row is read) unless ``allow_nonfinite=True``.
    """
    say = progress or (lambda _msg: None)
    _check_schedule(schedule)
    cfg = as_config(config)
    if (k_cache is None) != (v_cache is None):
        raise InputError("pass both k_cache and v_cache, or neither (prefill then allocates them)")
    batch = hidden.shape[0] if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 else 0
    if k_cache is not None:
        max_seq = contract.check_caches(cfg, k_cache, v_cache, batch, torch.bfloat16, contiguous=True)
    else:
        max_seq = cfg.max_seq
    lens = contract.check_prefill(cfg, hidden, seq_lens, max_seq, dtypes=(torch.bfloat16,), contiguous=True)
    w = LayerWeights.coerce(weights, cfg)
    contract.check_arguments("prefill", hidden, seq_lens, lens, w.tensors, k_cache=k_cache, v_cache=v_cache,
                             allow_nonfinite=allow_nonfinite)
    reg = registry or get_registry()
    target = reg.select(platform, require_available=True, budgets=budgets)
    run_cfg = cfg.with_max_seq(max_seq)
    the_plan = resolve_plan(reg, target, run_cfg, "prefill", plan, lens)
    st = the_plan.attention_block  # cache rows travel in whole attention iterations
    split: PrefillSplit | None = None
    if not values:
        chunks = []
    elif schedule == "reference":  # one worker or none, as in decode
        chunks = [Chunk(0, len(lens), check_reference_fits(run_cfg, the_plan, "prefill", lens))]
    elif prefill_fits_one_worker(run_cfg, lens, st, the_plan.cube_m, kv_block=the_plan.kv_block):
        chunks = prefill_chunks(run_cfg, lens, st, the_plan.cube_m, kv_block=the_plan.kv_block)
    else:  # a sequence too big for one worker: one program per loop and group (refused up front if even that is over)
        split = split_prefill(run_cfg, lens, st, the_plan.cube_m, the_plan.mlp_out_chunk, kv_block=the_plan.kv_block)
        chunks = [Chunk(0, len(lens), 0)]

    from qwenlayers.runtime.worker import run_job

    packed = packing.pack_layer(w)
    if k_cache is None or v_cache is None:
        shape = (batch, cfg.num_key_value_heads, max_seq, cfg.head_dim)
        k_cache, v_cache = torch.zeros(shape, dtype=torch.bfloat16), torch.zeros(shape, dtype=torch.bfloat16)
    out = torch.zeros_like(hidden)
    written: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
    reports: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    kept_dir = None

    def job_inputs(start: int, stop: int) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        part = lens[start:stop]
        x = torch.cat([hidden[b, :n] for b, n in zip(range(start, stop), part)])
        cos, sin = packing.rope_rows(torch.cat([torch.arange(n) for n in part]), cfg.head_dim, cfg.rope_theta)
        rows = cache_rows_needed(part, st)
        kc, vc = _trimmed(k_cache[start:stop], rows), _trimmed(v_cache[start:stop], rows)
        return ({"config": run_cfg, "plan": the_plan, "hidden": x, "weights": packed, "cos": cos, "sin": sin,
                 "k_cache": kc, "v_cache": vc, "seq_lens": part, "schedule": schedule}, kc, vc)

    def whole_batch_cost_model_run() -> Any:
        say(f"whole-batch cost-model run ({batch} sequences, {sum(lens)} tokens, no values)")
        return run_job(target, "prefill", job_inputs(0, batch)[0], registry=reg, values=False, keep=keep)

    phases = phase_prefill_cost_model(run_cfg, lens, st, the_plan.cube_m, the_plan.mlp_out_chunk) if schedule == "fused" else None
    if not values and phases is None:
        return _cost_model_only("prefill", target, reg, cfg, lens, the_plan, whole_batch_cost_model_run(), schedule)
    if phases is not None:  # too long for one cost-model run: its timing comes from the phases
        timing_phased = _phased_timing(target, reg, job_inputs(0, batch)[0], phases, say, keep=keep and not values)
        timing = timing_phased
        if not values:
            report = _build_report("prefill", target, reg, cfg, lens, the_plan, timing, timing["timing_from"], [timing],
                                   timing["phases"], timing["wall_s"], timing["run_dir"], schedule)
            return LayerResult(None, report)

    for n, chunk in enumerate(chunks, 1):
        part = lens[chunk.start : chunk.stop]
        inputs, kc, vc = job_inputs(chunk.start, chunk.stop)
        if split is not None:
            o = _prefill_in_parts(target, reg, inputs, split, reports, summaries, say, verify_passes)
            _collect_spans("prefill", (kc, vc), o, [(0, n_tok) for n_tok in part], chunk.start, written)
            _scatter_packed(out, o["out"], part, chunk.start)
            continue
        say(f"prefill chunk {n}/{len(chunks)}: sequences {chunk.start}..{chunk.stop - 1}, {sum(part)} tokens")
        result = run_job(target, "prefill", inputs, registry=reg, keep=keep and len(chunks) == 1, verify_passes=verify_passes)
        o = result.outputs
        _collect_spans("prefill", (kc, vc), o, [(0, n_tok) for n_tok in part], chunk.start, written)
        _scatter_packed(out, o["out"], part, chunk.start)
        reports.append(result.report)
        summaries.append(_chunk_summary(f"prefill sequences {chunk.start}..{chunk.stop - 1}", chunk.estimate_bytes,
                                        part, result.report, result.wall_s))
        kept_dir = result.kept_dir or kept_dir
    wall_total = sum(s["wall_s"] for s in summaries)
    timing, timing_from = reports[0], "values run"
    if phases is not None:
        timing, timing_from = timing_phased, timing_phased["timing_from"]
        wall_total += timing_phased["wall_s"]
    elif len(chunks) > 1 or split is not None:
        whole = whole_batch_cost_model_run()
        timing, timing_from = whole.report, "whole-batch cost-model run"
        wall_total += whole.wall_s

    before = (k_cache.clone(), v_cache.clone()) if check else None
    _write_back(k_cache, v_cache, written)  # all workers succeeded: rows 0..seq_len-1 only
    report = _build_report("prefill", target, reg, cfg, lens, the_plan, timing, timing_from, reports, summaries, wall_total,
                           kept_dir, schedule)
    if check and before is not None:
        say("golden prefill")
        ref, ref_k, ref_v = golden.prefill(cfg, w, hidden, seq_lens, max_seq=max_seq)
        keep_mask = torch.ones(k_cache.shape[2], dtype=torch.bool)
        for b, n_tok in enumerate(lens):
            keep_mask[:] = True
            keep_mask[:n_tok] = False
            ref_k[b][:, keep_mask] = before[0][b][:, keep_mask]  # the golden allocates zero caches;
            ref_v[b][:, keep_mask] = before[1][b][:, keep_mask]  # rows past seq_len are the caller's
        _record_check(report, _compare_layer("prefill", lens, out, ref, (k_cache, v_cache), (ref_k, ref_v)))
    return LayerResult(out, report, k_cache, v_cache)

