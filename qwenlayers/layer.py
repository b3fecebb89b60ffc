"""Running a whole layer on a platform: ``qwenlayers.decode`` and ``qwenlayers.prefill``.

The caller's tensors are checked once (the data contract, :mod:`qwenlayers.call`), packed, and
sent to worker processes as typed jobs; nothing is written back until every worker succeeded,
and then only the documented places: ``out``, and the cache rows the call writes. A kernel that
wrote any other cache row is an error, not a silent corruption (:mod:`qwenlayers.runtime.cache_rows`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from qwenlayers.call import LayerCall, check_timed, logical_caches, prepare_call
from qwenlayers.core import packing
from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.kernels.prefill import WORKSPACES, work_items
from qwenlayers.core.paged import compact
from qwenlayers.core.platform import Platform
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import InputError
from qwenlayers.registry import PlatformRegistry
from qwenlayers.reports import LayerReport, build_report, check_against_golden, chunk_summary
from qwenlayers.runtime.cache_rows import collect_slots, collect_spans, trimmed, write_back, write_back_slots
from qwenlayers.runtime.chunking import (
    Chunk,
    DecodeSplit,
    PrefillSplit,
    cache_rows_needed,
    check_decode_cost_model_fits,
    check_reference_fits,
    phase_prefill_cost_model,
    prefill_chunks,
    prefill_fits_one_worker,
    split_decode,
    split_prefill,
)
from qwenlayers.runtime.host_ops import mlp_shard_weights, residual_after_reduction, scatter_packed
from qwenlayers.runtime.job_types import DecodeJob, MlpJob, PrefillJob
from qwenlayers.runtime.paths import cache_dir
from qwenlayers.runtime.traces import join_traces
from qwenlayers.runtime.worker import WorkerResult, run_job
from qwenlayers.target import Target

Progress = Callable[[str], None]


@dataclass
class LayerResult:
    out: torch.Tensor | None  # None for a cost-model-only run (values=False)
    report: LayerReport
    k_cache: torch.Tensor | None = None  # the caches written (the caller's, or allocated by prefill)
    v_cache: torch.Tensor | None = None


class _Runs:
    """The workers of one call: their reports and summary lines, and the progress line."""

    def __init__(self, target: Target, say: Progress, verify_passes: bool, cache: bool | None = None,
                 timed: bool = True) -> None:
        self.target, self.say, self.verify_passes, self.cache = target, say, verify_passes, cache
        self.timed = timed  # False: the values runs run no cost model (the call's timing comes from elsewhere, or none)
        self.reports: list[dict[str, Any]] = []
        self.summaries: list[dict[str, Any]] = []
        self.kept_dirs: list[Path] = []  # every worker folder kept, in run order

    @property
    def kept_dir(self) -> Path | None:
        """The folder of the last worker kept (the one a report names)."""
        return self.kept_dirs[-1] if self.kept_dirs else None

    def run(self, what: str, job: Any, estimate: int, lens: list[int], *, values: bool = True, keep: bool = False) -> WorkerResult:
        result = run_job(self.target, job, verify_passes=self.verify_passes, values=values, timed=self.timed or not values,
                         keep=keep, progress=lambda phase: self.say(f"{what}: {phase}"), cache=self.cache)
        self.reports.append(result.report)
        self.summaries.append(chunk_summary(what, estimate, lens, result.report, result.wall_s))
        if result.kept_dir:
            self.kept_dirs.append(result.kept_dir)
        return result

    @property
    def wall_s(self) -> float:
        return sum(s["wall_s"] for s in self.summaries)


def _mlp_in_shards(runs: _Runs, cfg: Qwen3Config, plan: TilingPlan, packed: dict[str, torch.Tensor], resid: torch.Tensor,
                   split: DecodeSplit) -> torch.Tensor:
    """The MLP half over the whole batch in ``split.mlp_shards`` intermediate shards; the host
    sums their fp32 partials (the all-reduce of reduction point 2), rounds once to bf16 as the
    one-program kernel does, and adds the residual."""
    inter, shards = cfg.intermediate_size, split.mlp_shards
    width = inter // shards
    total = torch.zeros(resid.shape, dtype=torch.float32)
    for k in range(shards):
        cols = slice(k * width, (k + 1) * width)
        w_gu, w_down = mlp_shard_weights(packed, inter, cols)
        runs.say(f"decode MLP shard {k + 1}/{shards}: intermediate columns {cols.start}..{cols.stop - 1}")
        result = runs.run(f"mlp shard {k + 1}/{shards}", MlpJob(cfg, plan, resid, packed["w_ln2"], w_gu, w_down),
                          split.mlp_estimate_bytes, [])
        total += result.outputs["part"]
    return residual_after_reduction(resid, total)


def _prefill_in_parts(runs: _Runs, job: PrefillJob, split: PrefillSplit, *, values: bool = True,
                      keep: bool = False) -> dict[str, torch.Tensor]:
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
    cfg, plan, lens = job.config, job.plan, job.seq_lens
    x, tt, st = job.hidden, split.token_tile, plan.seq_tile
    n_tok = x.shape[0]
    small = torch.zeros(1, cfg.num_key_value_heads, st, cfg.head_dim, dtype=job.k_cache.dtype)  # loops A and C touch no cache
    total = split.workers()
    done = 0

    def run(what: str, part_job: Any, estimate: int) -> dict[str, torch.Tensor]:
        nonlocal done
        done += 1
        runs.say(f"prefill in parts, {'worker' if values else 'cost-model phase'} {done}/{total}: {what}")
        return runs.run(what, part_job, estimate, lens, values=values, keep=keep).outputs

    def rows(g: Any) -> slice:
        return slice(g.start * tt, min(n_tok, g.stop * tt))

    def token_job(what: str, g: Any, part: str, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
        r = rows(g)
        return run(f"{what}, tokens {r.start}..{r.stop - 1}", replace(
            job, part=part, hidden=x[r].contiguous(), cos=job.cos[r].contiguous(), sin=job.sin[r].contiguous(),
            seq_lens=[r.stop - r.start], k_cache=small, v_cache=small.clone(),
            **{k: v[r].contiguous() for k, v in extra.items()}), g.estimate_bytes)

    ws = {name: torch.zeros(n_tok, width, dtype=x.dtype)
          for name, width in zip(WORKSPACES, (cfg.q_width, cfg.kv_width, cfg.kv_width, cfg.q_width))}
    for g in split.qkv:  # loop A
        o = token_job("projections", g, "qkv")
        for name in WORKSPACES[:3]:
            ws[name][rows(g)] = o[name]
    items = work_items(lens, st)
    k_out, v_out = job.k_cache.clone(), job.v_cache.clone()
    for g in split.attend:  # loop B
        mine = items[g.start : g.stop]
        o = run(f"attention, query tiles {g.start}..{g.stop - 1} of {len(items)}", replace(
            job, part="attend", work_items=[list(i) for i in mine], **{n: ws[n] for n in WORKSPACES[:3]}), g.estimate_bytes)
        for b, n, offset, qt in mine:
            lo, hi = qt * st, min(n, (qt + 1) * st)
            ws["attn"][offset + lo : offset + hi] = o["attn"][offset + lo : offset + hi]
            k_out[b, :, lo:hi], v_out[b, :, lo:hi] = o["k_cache"][b, :, lo:hi], o["v_cache"][b, :, lo:hi]
    resid = torch.empty_like(x)
    for g in split.o_proj:  # loop C to the first residual
        resid[rows(g)] = token_job("o_proj + residual", g, "o_proj", attn=ws["attn"])["out"]
    inter, shards = cfg.intermediate_size, split.mlp_shards
    width = inter // shards
    packed = dict(job.weights)
    summed = torch.zeros(resid.shape, dtype=torch.float32)
    for k in range(shards):
        cols = slice(k * width, (k + 1) * width)
        w_gu, w_down = mlp_shard_weights(packed, inter, cols)
        for g in split.mlp_groups:
            r = rows(g)
            rt = resid[r]
            pad = -rt.shape[0] % tt if rt.shape[0] > tt else 0
            o = run(f"MLP shard {k + 1}/{shards} (columns {cols.start}..{cols.stop - 1}), tokens {r.start}..{r.stop - 1}",
                    MlpJob(cfg, plan, torch.cat([rt, torch.zeros(pad, rt.shape[1], dtype=rt.dtype)]), packed["w_ln2"], w_gu,
                           w_down, token_tile=tt), g.estimate_bytes)
            summed[r] += o["part"][: r.stop - r.start]
    return {"out": residual_after_reduction(resid, summed), "k_cache": k_out, "v_cache": v_out}


def _phased_timing(target: Target, job: PrefillJob, phases: PrefillSplit, say: Progress, keep: bool = False,
                   cache: bool | None = None) -> dict[str, Any]:
    """The timing of a prefill too long for one cost-model run: its phases (loop A, loop B in
    groups of query tiles, loop C, the MLP) simulated one after another, their µs, cycles and
    tasks added. In the one program the loops also run one after another (each reads what the
    previous wrote), so the sum is the one-program figure less the little overlap at the loop
    boundaries (docs/prefill.md measures it where both run). ``keep`` joins the phases' Perfetto
    traces end to end into one (runtime/traces.py) in a run folder of its own; the phases' own
    folders (~1 GB each at qwen3-32b) are then removed."""
    runs = _Runs(target, say, False, cache)
    _prefill_in_parts(runs, job, phases, values=False, keep=keep)
    reports, summaries = runs.reports, runs.summaries
    timing: dict[str, Any] = {**reports[0], "phases": summaries}
    for key in ("sim_us", "aicore_cycles", "total_cycles", "compile_s", "simulate_s"):
        timing[key] = sum(float(r.get(key) or 0) for r in reports)
    timing["tasks"] = {k: sum(int(r.get("tasks", {}).get(k, 0)) for r in reports) for k in ("AIC", "AIV", "HUB")}
    timing["peak_rss_mb"] = max(int(r.get("peak_rss_mb", 0)) for r in reports)
    timing["wall_s"] = runs.wall_s
    timing["trace"], timing["run_dir"] = None, None
    if keep:
        say(f"joining the {len(reports)} phase traces into one")
        run_dir = Path(tempfile.mkdtemp(prefix=f"{target.name}-prefill-phased-", dir=cache_dir("runs")))
        parts = [(summary["worker"], Path(r["trace"])) for summary, r in zip(summaries, reports) if r.get("trace")]
        if parts:
            timing["trace"] = str(join_traces(parts, run_dir / "phased.pefetto.trace.json"))
        timing["run_dir"] = str(run_dir)
        for folder in runs.kept_dirs:  # each phase's whole worker folder (the report's run_dir is only its pypto output)
            shutil.rmtree(folder, ignore_errors=True)
    timing["timing_from"] = f"phased cost-model runs ({len(reports)} programs, their times added)"
    timing["from_cache"] = all(r.get("from_cache") for r in reports)
    return timing


def _cost_model_only(call: LayerCall, whole: WorkerResult) -> LayerResult:
    report = build_report(call.phase, call.target, call.config, call.lens, call.plan, whole.report,
                          "cost-model run (no values)", [whole.report], [], whole.wall_s, whole.kept_dir, call.schedule)
    return LayerResult(None, report)


#: A report's ``timing_from`` when the call was not timed (``timed=False``).
NOT_TIMED = "not timed (timed=False: values only, no cost model)"


def _finish(call: LayerCall, runs: _Runs, out: torch.Tensor, written: list[Any], timing: dict[str, Any],
            timing_from: str, wall_total: float, check: bool, say: Progress) -> LayerResult:
    """Write back the documented cache rows or paged slots (every worker succeeded), build the
    report, check."""
    before = tuple(c.clone() for c in logical_caches(call)) if check else None
    if call.paged is not None:
        write_back_slots(call.k_cache, call.v_cache, written)
    else:
        write_back(call.k_cache, call.v_cache, written)
    report = build_report(call.phase, call.target, call.config, call.lens, call.plan, timing, timing_from, runs.reports,
                          runs.summaries, wall_total, runs.kept_dir, call.schedule)
    if before is not None:
        say(f"golden {call.phase}")
        check_against_golden(report, call.phase, call.config, call.weights, call.hidden, call.seq_lens, call.lens, before,
                             out, logical_caches(call))
    return LayerResult(out, report, call.k_cache, call.v_cache)


def decode(
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    platform: str | Platform | Target | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    check: bool = False,
    keep: bool = False,
    values: bool = True,
    timed: bool = True,
    verify_passes: bool = False,
    schedule: str = "fused",
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    allow_nonfinite: bool = False,
    cache: bool | None = None,
    block_table: torch.Tensor | None = None,
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
    the caches are not touched. ``timed=False`` is the other half: values only, no cost model
    (on a sim pypto's compile stops at the tensor graph, whose interpreter gives the values), so
    ``report.sim_us`` is None; a whole model takes its layers' values this way and each distinct
    program's timing from one ``values=False`` call. Cost-model runs answer from the result cache when the same
    program ran before (``report.from_cache``; ``cache=False`` forces a fresh run; None uses it
    unless ``keep`` asks for a run folder). ``verify_passes=True`` also checks pypto's default lowered
    passes against its tensor graph (``report.verification``; slower).

    ``schedule="reference"`` runs the reference-schedule baseline instead of the fused kernel
    (:mod:`qwenlayers.core.kernels.reference`: same math, the pypto-lib reference structure),
    which is what ``qwenlayers bench`` compares against. It is one program, so a checked run
    of it is limited to sizes where one batch chunk runs the whole layer.

    ``block_table`` (int32 [B, max_blocks]) makes k_cache/v_cache block pools [num_blocks, KVH,
    BLOCK, D] (:mod:`qwenlayers.core.paged`): the new row goes to the block and slot
    ``seq_lens[b]-1`` maps to, the attention reads the sequence's blocks in table order, and
    every other slot of the pools stays bit-identical. KV_BLOCK is then a multiple of the block
    size (whole blocks per attention iteration).

    Refused before any work (``InputError``, nothing changed): an empty batch, arguments that
    share memory, and a NaN or Inf in hidden, a weight or a cache row the attention reads
    (rows 0..seq_len-2; rows past seq_len may hold anything). ``allow_nonfinite=True`` runs
    such inputs anyway; a checked run then reports the non-finite outputs as a failure.
    """
    say = progress or (lambda _msg: None)
    check_timed(values, timed)
    call = prepare_call("decode", config, weights, hidden, seq_lens, k_cache, v_cache, platform=platform, budgets=budgets,
                        plan=plan, registry=registry, allow_nonfinite=allow_nonfinite, schedule=schedule,
                        block_table=block_table)
    lens, run_cfg, the_plan = call.lens, call.run_config, call.plan
    st = the_plan.attention_block  # cache rows travel in whole attention iterations
    packed = packing.pack_layer(call.weights)
    cos, sin = packing.rope_rows(torch.tensor(lens) - 1, run_cfg.head_dim, run_cfg.rope_theta)
    pooled: dict[int, Any] = {}  # a paged chunk's compact pools, by its first batch row

    def job_for(sl: slice, part: str = "layer") -> tuple[DecodeJob, torch.Tensor, torch.Tensor]:
        table = None
        if call.paged is not None and block_table is not None:  # the blocks the chunk reaches, renumbered (core.paged.compact)
            pools = pooled[sl.start or 0] = compact(k_cache, v_cache, block_table[sl], lens[sl], call.paged.block,
                                                    the_plan.kv_block // call.paged.block)
            kc, vc, table = pools.k, pools.v, pools.table
        else:
            rows = cache_rows_needed(lens[sl], st)
            kc, vc = trimmed(k_cache[sl], rows), trimmed(v_cache[sl], rows)
        return DecodeJob(run_cfg, the_plan, hidden[sl].contiguous(), packed, cos[sl].contiguous(), sin[sl].contiguous(),
                         kc, vc, torch.tensor(lens[sl], dtype=torch.int32), part=part, schedule=schedule,
                         tilelet_bytes=call.target.platform.budgets.tilelet_bytes, block_table=table), kc, vc

    def whole_batch_cost_model_run() -> WorkerResult:
        what = f"whole-batch cost-model run ({len(lens)} sequences, no values)"
        return run_job(call.target, job_for(slice(0, len(lens)))[0], values=False, keep=keep,
                       progress=lambda phase: say(f"{what}: {phase}"), cache=cache)

    split: DecodeSplit | None = None
    if values and schedule == "reference":  # one worker or none: its capture does not shrink with the batch
        split = DecodeSplit("layer", [Chunk(0, len(lens), check_reference_fits(run_cfg, the_plan, "decode", lens))])
    elif values:
        split = split_decode(run_cfg, lens, st, the_plan.mlp_out_chunk)
    single = split is not None and len(split.chunks) == 1 and split.part == "layer"
    if timed and schedule == "fused" and not single:  # the whole-batch cost-model run will come: refused now if it cannot fit
        check_decode_cost_model_fits(run_cfg, the_plan, lens)
    if split is None:
        return _cost_model_only(call, whole_batch_cost_model_run())
    out = torch.empty_like(hidden)
    written: list[Any] = []  # Written rows, or WrittenSlot for a paged call
    runs = _Runs(call.target, say, verify_passes, cache, timed=timed and single)  # else their timing is not the call's
    for n, chunk in enumerate(split.chunks, 1):
        sl = slice(chunk.start, chunk.stop)
        part = lens[sl]
        job, kc, vc = job_for(sl, split.part)
        say(f"decode {split.part} chunk {n}/{len(split.chunks)}: batch rows {chunk.start}..{chunk.stop - 1}, "
            f"cache rows {kc.shape[2]}")
        o = runs.run(f"{split.part} rows {chunk.start}..{chunk.stop - 1}", job, chunk.estimate_bytes, part,
                     keep=keep and single).outputs
        if call.paged is not None:
            pools = pooled[chunk.start]
            collect_slots("decode", (kc, vc), o, pools.slots("decode", part, call.paged.block), pools.ids, written)
        else:
            collect_spans("decode", (kc, vc), o, [(n_tok - 1, n_tok) for n_tok in part], chunk.start, written)
        out[sl] = o["out"]  # the layer output, or the first residual when the MLP runs apart
    if split.part == "to_residual":
        out = _mlp_in_shards(runs, run_cfg, the_plan, packed, out, split)
    wall_total = runs.wall_s
    timing, timing_from = runs.reports[0], "values run" if timed else NOT_TIMED
    if timed and not single:
        whole = whole_batch_cost_model_run()
        timing, timing_from = whole.report, "whole-batch cost-model run"
        wall_total += whole.wall_s
    return _finish(call, runs, out, written, timing, timing_from, wall_total, check, say)


def prefill(
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    k_cache: torch.Tensor | None = None,
    v_cache: torch.Tensor | None = None,
    platform: str | Platform | Target | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    check: bool = False,
    keep: bool = False,
    values: bool = True,
    timed: bool = True,
    verify_passes: bool = False,
    schedule: str = "fused",
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    allow_nonfinite: bool = False,
    cache: bool | None = None,
    block_table: torch.Tensor | None = None,
) -> LayerResult:
    """Causal prefill of one Qwen3 layer on a platform.

    hidden [B, S, H] bf16 is right-padded; seq_lens int32 [B] (1 <= L <= S). Returns
    ``LayerResult(out [B, S, H] bf16 with rows >= seq_len zero, report, k_cache, v_cache)``; the
    caches [B, KVH, MAX_SEQ, D] are the caller's (written in place at rows 0..seq_len-1 only)
    or allocated zero with the config's ``max_seq``. Only real tokens reach the kernel (the
    host packs them), so padding costs nothing. Checked runs are split by sequences into worker
    chunks under ``QWENLAYERS_WORKER_MEM_GB``. ``values=False`` runs the cost model only (out
    None, caches untouched), which is what full-size benchmarks can afford; ``timed=False`` runs
    the values only (as :func:`decode`).

    ``schedule="reference"`` runs the reference-schedule baseline (as :func:`decode`); its
    checked runs go one worker per sequence chunk like the fused kernel's.

    Refused before any work as in :func:`decode`: an empty batch, arguments that share memory,
    a NaN or Inf in a weight or in hidden rows 0..seq_len-1 (padding may hold anything; no
    cache row is read) unless ``allow_nonfinite=True``.
    """
    say = progress or (lambda _msg: None)
    check_timed(values, timed)
    call = prepare_call("prefill", config, weights, hidden, seq_lens, k_cache, v_cache, platform=platform, budgets=budgets,
                        plan=plan, registry=registry, allow_nonfinite=allow_nonfinite, schedule=schedule,
                        block_table=block_table)
    lens, run_cfg, the_plan, batch = call.lens, call.run_config, call.plan, len(call.lens)
    st = the_plan.attention_block  # cache rows travel in whole attention iterations
    split: PrefillSplit | None = None
    if not values:
        chunks = []
    elif schedule == "reference":  # one worker or none, as in decode
        chunks = [Chunk(0, batch, check_reference_fits(run_cfg, the_plan, "prefill", lens))]
    elif prefill_fits_one_worker(run_cfg, lens, st, the_plan.cube_m, kv_block=the_plan.kv_block):
        chunks = prefill_chunks(run_cfg, lens, st, the_plan.cube_m, kv_block=the_plan.kv_block)
    else:  # a sequence too big for one worker: one program per loop and group (refused up front if even that is over)
        split = split_prefill(run_cfg, lens, st, the_plan.cube_m, the_plan.mlp_out_chunk, kv_block=the_plan.kv_block)
        chunks = [Chunk(0, batch, 0)]
    packed = packing.pack_layer(call.weights)
    out = torch.zeros_like(hidden)

    pooled: dict[int, Any] = {}  # a paged chunk's compact pools, by its first sequence

    def job_for(start: int, stop: int) -> tuple[PrefillJob, torch.Tensor, torch.Tensor]:
        part = lens[start:stop]
        x = torch.cat([hidden[b, :n] for b, n in zip(range(start, stop), part)])
        cos, sin = packing.rope_rows(torch.cat([torch.arange(n) for n in part]), run_cfg.head_dim, run_cfg.rope_theta)
        table = None
        if call.paged is not None and call.block_table is not None:  # the blocks the chunk writes, renumbered
            pools = pooled[start] = compact(call.k_cache, call.v_cache, call.block_table[start:stop], part, call.paged.block)
            kc, vc, table = pools.k, pools.v, pools.table
        else:
            rows = cache_rows_needed(part, st)
            kc, vc = trimmed(call.k_cache[start:stop], rows), trimmed(call.v_cache[start:stop], rows)
        return PrefillJob(run_cfg, the_plan, x, packed, cos, sin, kc, vc, part, schedule=schedule, block_table=table), kc, vc

    def whole_batch_cost_model_run() -> WorkerResult:
        what = f"whole-batch cost-model run ({batch} sequences, {sum(lens)} tokens, no values)"
        return run_job(call.target, job_for(0, batch)[0], values=False, keep=keep,
                       progress=lambda phase: say(f"{what}: {phase}"), cache=cache)

    phases = (phase_prefill_cost_model(run_cfg, lens, st, the_plan.cube_m, the_plan.mlp_out_chunk)
              if schedule == "fused" and timed else None)
    if call.paged is not None and (phases is not None or split is not None):
        raise InputError(f"a paged prefill of {max(lens)} tokens needs the runs in parts (too long for one "
                         f"{'cost-model run' if phases is not None else 'worker'}), which paged caches do not have yet; "
                         "prefill into contiguous caches, or shorter sequences")
    if not values and phases is None:
        return _cost_model_only(call, whole_batch_cost_model_run())
    timing_phased: dict[str, Any] = {}
    if phases is not None:  # too long for one cost-model run: its timing comes from the phases
        timing_phased = _phased_timing(call.target, job_for(0, batch)[0], phases, say, keep=keep and not values, cache=cache)
        if not values:
            report = build_report("prefill", call.target, call.config, lens, the_plan, timing_phased,
                                  timing_phased["timing_from"], [timing_phased], timing_phased["phases"],
                                  timing_phased["wall_s"], timing_phased["run_dir"], schedule)
            return LayerResult(None, report)

    written: list[Any] = []  # Written rows, or WrittenSlot for a paged call
    single = phases is None and len(chunks) == 1 and split is None  # its values run is the call's timing
    runs = _Runs(call.target, say, verify_passes, cache, timed=timed and single)
    for n, chunk in enumerate(chunks, 1):
        part = lens[chunk.start : chunk.stop]
        job, kc, vc = job_for(chunk.start, chunk.stop)
        if split is not None:
            o = _prefill_in_parts(runs, job, split)
        else:
            say(f"prefill chunk {n}/{len(chunks)}: sequences {chunk.start}..{chunk.stop - 1}, {sum(part)} tokens")
            o = runs.run(f"prefill sequences {chunk.start}..{chunk.stop - 1}", job, chunk.estimate_bytes, part,
                         keep=keep and len(chunks) == 1).outputs
        if call.paged is not None:
            pools = pooled[chunk.start]
            collect_slots("prefill", (kc, vc), o, pools.slots("prefill", part, call.paged.block), pools.ids, written)
        else:
            collect_spans("prefill", (kc, vc), o, [(0, n_tok) for n_tok in part], chunk.start, written)
        scatter_packed(out, o["out"], part, chunk.start)
    wall_total = runs.wall_s
    timing, timing_from = runs.reports[0], "values run" if timed else NOT_TIMED
    if phases is not None:
        timing, timing_from = timing_phased, timing_phased["timing_from"]
        wall_total += timing_phased["wall_s"]
    elif timed and not single:
        whole = whole_batch_cost_model_run()
        timing, timing_from = whole.report, "whole-batch cost-model run"
        wall_total += whole.wall_s
    return _finish(call, runs, out, written, timing, timing_from, wall_total, check, say)
