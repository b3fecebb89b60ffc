"""Tensor-parallel layer runs: ``qwenlayers.decode_tp`` / ``qwenlayers.prefill_tp`` and ``run --tp N``.

Each of ``tp`` ranks holds one shard of the layer (:mod:`qwenlayers.core.sharding`) and runs
two programs built for the shard's shapes, with the plugin's tiling for the shard config:

1. attention up to reduction point 1 (its heads: norms, Q/K/V, RoPE, cache write of its KV
   heads, flash attention, the partial o_proj in fp32), then **all-reduce**; the residual;
2. post-attention RMSNorm and its intermediate columns of the MLP (partial down_proj, fp32),
   then **all-reduce**; the residual.

The collectives are ``torch.distributed`` with the backend the platform's plugin names
(``qwenlayers_collective_backend``: gloo for the sims, hccl on NPUs); qwenlayers builds no
communication layer. Every collective has the process group's timeout, so a rank that dies
cannot leave the others waiting: the launcher reports the first failing rank's error.

Ranks start as ``torch.multiprocessing`` spawns on one host (the sims), or, under
``torchrun``, as the processes torchrun started (``launcher="env"``; rank 0 gets the
result). As in :mod:`qwenlayers.layer`, the caller's caches change only after every rank
succeeded, and only at the documented rows.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from qwenlayers.call import LayerCall, check_timed, logical_caches, prepare_call
from qwenlayers.core import packing
from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.paged import CompactPools, compact
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.sharding import ShardPlan, allreduce_bytes, shard_config, shard_plan
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import InputError, KernelError
from qwenlayers.inputs import random_inputs
from qwenlayers.registry import PlatformRegistry
from qwenlayers.reports import check_against_golden
from qwenlayers.runtime.cache_rows import WrittenSlot, check_only_spans_written, collect_slots, trimmed
from qwenlayers.runtime.chunking import cache_rows_needed
from qwenlayers.runtime.exchange import read_message, write_message
from qwenlayers.runtime.host_ops import residual_after_reduction, scatter_packed
from qwenlayers.runtime.job_types import DecodeJob, MlpJob, PrefillJob
from qwenlayers.runtime.worker import exit_on_termination, run_job
from qwenlayers.target import Target

Progress = Callable[[str], None]
DEFAULT_TIMEOUT_S = 900.0  # per collective; a tiny rank program takes seconds, a 32B one minutes


@dataclass
class RankReport:
    """One rank's shard and what its two programs cost."""

    rank: int
    q_heads: tuple[int, int]
    kv_heads: tuple[int, int]
    inter: tuple[int, int]
    sim_us: float | None  # attention + MLP programs (the rank's layer time without communication)
    attention: dict[str, Any]
    mlp: dict[str, Any]
    allreduce_wall_s: float  # host wall time in the two collectives (gloo on the sims; not simulated)


@dataclass
class TPReport:
    phase: Phase
    platform: str
    model: str
    tp: int
    backend: str
    batch: int
    seq_lens: list[int]
    plan: dict[str, Any]  # the shard's tiling (plugin defaults for the shard config)
    ranks: list[RankReport]
    communication: dict[str, int]
    wall_s: float
    max_abs_err: float | None = None
    cache_max_abs_err: float | None = None
    within_tolerance: bool | None = None
    outside_elementwise: int | None = None  # as LayerReport.outside_elementwise
    nonfinite: dict[str, Any] | None = None  # as LayerReport.nonfinite
    check_failures: list[str] = field(default_factory=list)  # as LayerReport.check_failures

    @property
    def sim_us(self) -> float | None:
        """The slowest rank's simulated layer time (the collectives are not simulated)."""
        times = [r.sim_us for r in self.ranks if r.sim_us is not None]
        return max(times) if times else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sim_us": self.sim_us}


@dataclass
class TPResult:
    out: torch.Tensor | None
    report: TPReport
    k_cache: torch.Tensor | None = None
    v_cache: torch.Tensor | None = None


@dataclass(frozen=True)
class _Job:
    """What every rank needs; each rank's own weights and cache shard are cut from it. The
    target was resolved once in the caller and travels to the ranks as it is."""

    phase: Phase
    target: Target
    config: Qwen3Config  # full layer, max_seq of the caches
    tp: int
    plan: TilingPlan
    lens: list[int]
    values: bool
    timeout_s: float
    fault_rank: int | None = None  # tests: this rank raises before its first collective
    timed: bool = True  # False: the ranks' values runs run no cost model
    cache: bool | None = None  # the cost-model result cache, as in qwenlayers.decode
    block_table: torch.Tensor | None = None  # paged: the compact pools' table (core.paged.compact)

    @property
    def backend(self) -> str:
        return self.target.backend_for_tp()


def _rank_inputs(job: _Job, weights: LayerWeights, hidden: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 rank: int) -> dict[str, Any]:
    """The rank's packed weight shard, its KV heads of the caches (trimmed to the rows the
    kernel may read), the replicated activations and RoPE rows."""
    sp = shard_plan(job.config, job.tp, rank)
    kv = slice(*sp.kv_heads)
    inputs: dict[str, Any] = {"shard": sp, "weights": packing.pack_layer(weights.shard(rank, job.tp))}
    if job.block_table is not None:  # the compact pools' KV heads of every block, and their table
        inputs.update(k_cache=k_cache[:, kv].contiguous(), v_cache=v_cache[:, kv].contiguous(), block_table=job.block_table)
    else:
        rows = cache_rows_needed(job.lens, job.plan.attention_block)
        inputs.update(k_cache=trimmed(k_cache[:, kv], rows), v_cache=trimmed(v_cache[:, kv], rows))
    d, theta = job.config.head_dim, job.config.rope_theta
    if job.phase == "decode":
        inputs["hidden"] = hidden
        inputs["cos"], inputs["sin"] = packing.rope_rows(torch.tensor(job.lens) - 1, d, theta)
    else:
        inputs["hidden"] = torch.cat([hidden[b, :n] for b, n in enumerate(job.lens)])
        inputs["cos"], inputs["sin"] = packing.rope_rows(torch.cat([torch.arange(n) for n in job.lens]), d, theta)
    return inputs


def _run_rank(job: _Job, rank: int, inputs: dict[str, Any], allreduce: Callable[[torch.Tensor], float]) -> dict[str, Any]:
    """One rank: attention program, all-reduce, residual, MLP program, all-reduce, residual."""
    cfg = shard_config(job.config, job.tp)
    packed, hidden = inputs["weights"], inputs["hidden"]
    if job.fault_rank == rank:
        raise KernelError(f"injected fault on rank {rank} (fault_rank={rank})")
    common = (cfg, job.plan, hidden, packed, inputs["cos"], inputs["sin"], inputs["k_cache"], inputs["v_cache"])
    if job.phase == "decode":
        attn = run_job(job.target, DecodeJob(*common, torch.tensor(job.lens, dtype=torch.int32), part="partial_o_proj",
                                                 tilelet_bytes=job.target.platform.budgets.tilelet_bytes,
                                                 block_table=inputs.get("block_table")),
                       values=job.values, timed=job.timed, cache=job.cache)
    else:
        attn = run_job(job.target, PrefillJob(*common, job.lens, part="partial_o_proj", block_table=inputs.get("block_table")),
                       values=job.values, timed=job.timed,
                       cache=job.cache)
    o_part = attn.outputs["out"].float().contiguous()
    comm_s = allreduce(o_part)  # reduction point 1
    resid = residual_after_reduction(hidden, o_part)
    rows = resid.shape[0]
    # prefill: the packed tokens in a loop over token tiles (padded to whole tiles), as loop C of the
    # one-program prefill; decode: the batch rows as one static program
    tile = job.plan.cube_m if job.phase == "prefill" else 0
    padded = torch.cat([resid, torch.zeros(-rows % tile, resid.shape[1], dtype=resid.dtype)]) if tile and rows % tile and rows > tile else resid
    mlp = run_job(job.target, MlpJob(cfg, job.plan, padded, packed["w_ln2"], packed["w_gu"], packed["w_down"], token_tile=tile),
                  values=job.values, timed=job.timed, cache=job.cache)
    down = mlp.outputs["part"][:rows].float().contiguous()
    comm_s += allreduce(down)  # reduction point 2
    out = residual_after_reduction(resid, down)
    return {"out": out, "k_cache": attn.outputs["k_cache"], "v_cache": attn.outputs["v_cache"],
            "attention": attn.report, "mlp": mlp.report, "allreduce_wall_s": comm_s}


def _process_group(job: _Job, rank: int, init_method: str) -> Callable[[torch.Tensor], float]:
    import torch.distributed as dist

    dist.init_process_group(job.backend, init_method=init_method, rank=rank, world_size=job.tp,
                            timeout=timedelta(seconds=job.timeout_s))

    def allreduce(t: torch.Tensor) -> float:
        start = time.perf_counter()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return time.perf_counter() - start

    return allreduce


def _spawned_rank(rank: int, job: _Job, spec_dir: str, init_method: str) -> None:
    """Entry point of a spawned rank: inputs from, and results to, ``spec_dir``."""
    import torch.distributed as dist

    (Path(spec_dir) / f"started{rank}").touch()  # it got past importing the caller's script
    allreduce = _process_group(job, rank, init_method)
    try:
        inputs = read_message(Path(spec_dir) / f"rank{rank}")
        write_message(Path(spec_dir) / f"result{rank}", _run_rank(job, rank, inputs, allreduce))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RANK_POLL_S = 0.5
RANK_GRACE_S = 15.0


def _stop_ranks(processes: list[Any]) -> None:
    """SIGTERM every live rank (each then stops its own pypto worker group and removes its run
    folder, see runtime/worker.run_job), wait, and SIGKILL what is left."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + RANK_GRACE_S
    for proc in processes:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def _launch_spawn(job: _Job, per_rank: Callable[[int], dict[str, Any]], say: Progress) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="qwenlayers-tp-") as spec_dir:
        for rank in range(job.tp):
            write_message(Path(spec_dir) / f"rank{rank}", per_rank(rank))
        init = f"tcp://127.0.0.1:{_free_port()}"
        say(f"{job.tp} ranks ({job.backend}) running their shards")
        ranks = mp.start_processes(_spawned_rank, args=(job, spec_dir, init), nprocs=job.tp, join=False, start_method="spawn")
        try:
            with exit_on_termination():
                while not ranks.join(timeout=RANK_POLL_S):
                    pass
        except mp.ProcessRaisedException as exc:  # the other ranks were terminated, none waits
            raise KernelError(f"tensor-parallel rank {exc.error_index} of {job.tp} failed; the run was stopped:\n{exc}") from None
        except mp.ProcessExitedException as exc:
            how = f"was killed by {exc.signal_name}" if exc.signal_name else f"exited with code {exc.exit_code}"
            if not (Path(spec_dir) / f"started{exc.error_index}").exists():
                raise KernelError(
                    f"tensor-parallel rank {exc.error_index} of {job.tp} {how} before it started its shard (its traceback "
                    "is printed above). Ranks start with the spawn method, which imports the calling script again in "
                    "every rank: a script that calls decode_tp or prefill_tp at its top level must do it under "
                    "`if __name__ == \"__main__\":`. Under torchrun, pass launcher=\"env\" instead."
                ) from None
            raise KernelError(f"tensor-parallel rank {exc.error_index} of {job.tp} {how} while running its shard; the "
                              "other ranks were stopped. Its output is above; rerun with keep=True (--keep) to keep its "
                              "pypto run folder") from None
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: no rank (nor its pypto worker) left behind
            _stop_ranks(ranks.processes)
            raise
        return [read_message(Path(spec_dir) / f"result{rank}") for rank in range(job.tp)]


def _launch_env(job: _Job, per_rank: Callable[[int], dict[str, Any]], say: Progress) -> list[dict[str, Any]] | None:
    """Under torchrun: this process is rank $RANK; rank 0 gathers every rank's result."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != job.tp:
        raise InputError(f"tp={job.tp} but torchrun started WORLD_SIZE={world} processes; pass --nproc-per-node {job.tp}")
    allreduce = _process_group(job, rank, "env://")
    try:
        say(f"rank {rank} of {world} ({job.backend}) running its shard")
        result = _run_rank(job, rank, per_rank(rank), allreduce)
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(result, gathered, dst=0)
        return gathered
    finally:
        dist.destroy_process_group()


def _run(job: _Job, weights: LayerWeights, hidden: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
         launcher: str, say: Progress) -> list[dict[str, Any]] | None:
    def per_rank(rank: int) -> dict[str, Any]:
        return _rank_inputs(job, weights, hidden, k_cache, v_cache, rank)

    if launcher == "env":
        return _launch_env(job, per_rank, say)
    if launcher != "spawn":
        raise InputError(f"launcher={launcher!r}; allowed: spawn (one host), env (under torchrun)")
    return _launch_spawn(job, per_rank, say)


def _prepare(call: LayerCall, tp: int, values: bool, timeout_s: float, fault_rank: int | None, timed: bool = True,
             cache: bool | None = None) -> _Job:
    check_timed(values, timed)
    return _Job(call.phase, call.target, call.run_config, tp, call.plan, call.lens, values, timeout_s, fault_rank, timed,
                cache)


def _finish_paged(job: _Job, results: list[dict[str, Any]], k_pool: torch.Tensor, v_pool: torch.Tensor,
                  pools: CompactPools, block: int) -> None:
    """Every rank's pool shard changed only the call's slots; then they go into the caller's
    pools, one replica per KV head."""
    slots = pools.slots(job.phase, job.lens, block)
    for sp, res in zip([shard_plan(job.config, job.tp, r) for r in range(job.tp)], results):
        kv = slice(*sp.kv_heads)
        written: list[WrittenSlot] = []
        collect_slots(job.phase, (pools.k[:, kv], pools.v[:, kv]), res, slots, pools.ids, written)
        if sp.owns_kv:
            for blk, slot, k_row, v_row in written:
                k_pool[blk, kv, slot] = k_row
                v_pool[blk, kv, slot] = v_row


def _finish(job: _Job, results: list[dict[str, Any]], k_cache: torch.Tensor, v_cache: torch.Tensor,
            spans: list[tuple[int, int]], wall: float) -> tuple[torch.Tensor, TPReport]:
    """Check every rank's cache shard, write back the documented rows, build the report."""
    rows = cache_rows_needed(job.lens, job.plan.attention_block)
    shards = [shard_plan(job.config, job.tp, r) for r in range(job.tp)]
    if job.values and job.block_table is None:
        for sp, res in zip(shards, results):
            kv = slice(*sp.kv_heads)
            for name, full in (("k_cache", k_cache), ("v_cache", v_cache)):
                check_only_spans_written(job.phase, f"{name} (rank {sp.rank})", trimmed(full[:, kv], rows), res[name], spans, 0)
        for sp, res in zip(shards, results):  # every rank succeeded: write back, one replica per KV head
            if not sp.owns_kv:
                continue
            kv = slice(*sp.kv_heads)
            for b, (start, stop) in enumerate(spans):
                k_cache[b, kv, start:stop] = res["k_cache"][b, :, start:stop]
                v_cache[b, kv, start:stop] = res["v_cache"][b, :, start:stop]
    ranks = [_rank_report(sp, res) for sp, res in zip(shards, results)]
    tokens = len(job.lens) if job.phase == "decode" else sum(job.lens)
    report = TPReport(job.phase, job.target.name, job.config.name, job.tp, job.backend, len(job.lens), job.lens,
                      job.plan.as_dict(), ranks, allreduce_bytes(tokens, job.config, job.tp), round(wall, 2))
    return results[0]["out"], report


def _rank_report(sp: ShardPlan, res: dict[str, Any]) -> RankReport:
    def part(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r.get(k) for k in ("sim_us", "tasks", "compile_s", "simulate_s", "peak_rss_mb", "from_cache")}

    a, m = res["attention"], res["mlp"]
    total = a["sim_us"] + m["sim_us"] if a.get("sim_us") is not None and m.get("sim_us") is not None else None
    return RankReport(sp.rank, sp.q_heads, sp.kv_heads, sp.inter, total, part(a), part(m), round(res["allreduce_wall_s"], 3))


def decode_tp(
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    tp: int,
    platform: str | Platform | Target | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    check: bool = False,
    values: bool = True,
    timed: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    launcher: str = "spawn",
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    fault_rank: int | None = None,
    allow_nonfinite: bool = False,
    cache: bool | None = None,
    block_table: torch.Tensor | None = None,
) -> TPResult | None:
    """One decode step of one layer split over ``tp`` ranks (same contract as
    :func:`qwenlayers.decode`: caches [B, KVH, MAX_SEQ, D] written at row seq_len-1 only; the
    same refusals, ``allow_nonfinite`` included).

    ``plan`` is the shard's plan (default: the plugin's tiling for the shard config). Under
    torchrun pass ``launcher="env"``: every process calls this with the same arguments and
    rank 0 gets the result (the others None). ``fault_rank`` makes that rank fail (tests).
    ``values``, ``timed`` and ``cache`` are :func:`qwenlayers.decode`'s, for every rank's programs.
    """
    say = progress or (lambda _m: None)
    call = prepare_call("decode", config, weights, hidden, seq_lens, k_cache, v_cache, platform=platform, budgets=budgets,
                        plan=plan, registry=registry, allow_nonfinite=allow_nonfinite, tp=tp,
                        block_table=block_table)
    job = _prepare(call, tp, values, timeout_s, fault_rank, timed, cache)
    pools = None
    if call.paged is not None and call.block_table is not None:  # the blocks the call reaches, renumbered
        pools = compact(k_cache, v_cache, call.block_table, call.lens, call.paged.block,
                        call.plan.kv_block // call.paged.block)
        job = replace(job, block_table=pools.table)
    start = time.perf_counter()
    before = tuple(c.clone() for c in logical_caches(call)) if check else None
    results = _run(job, call.weights, hidden, *((pools.k, pools.v) if pools else (k_cache, v_cache)), launcher, say)
    if results is None:
        return None
    if pools is not None and values and call.paged is not None:
        _finish_paged(job, results, k_cache, v_cache, pools, call.paged.block)
    out, report = _finish(job, results, k_cache, v_cache, [(n - 1, n) for n in call.lens], time.perf_counter() - start)
    if before is not None and values:
        say("golden decode")
        check_against_golden(report, "decode", call.config, call.weights, hidden, seq_lens, call.lens, before, out,
                             logical_caches(call))
    return TPResult(out if values else None, report, k_cache, v_cache)


def prefill_tp(
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    tp: int,
    k_cache: torch.Tensor | None = None,
    v_cache: torch.Tensor | None = None,
    platform: str | Platform | Target | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    check: bool = False,
    values: bool = True,
    timed: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    launcher: str = "spawn",
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    fault_rank: int | None = None,
    allow_nonfinite: bool = False,
    cache: bool | None = None,
    block_table: torch.Tensor | None = None,
) -> TPResult | None:
    """Causal prefill of one layer split over ``tp`` ranks (same contract as
    :func:`qwenlayers.prefill`: out [B, S, H] with padding rows zero; caches the caller's,
    written at rows 0..seq_len-1, or allocated; the same refusals, ``allow_nonfinite`` included)."""
    say = progress or (lambda _m: None)
    call = prepare_call("prefill", config, weights, hidden, seq_lens, k_cache, v_cache, platform=platform, budgets=budgets,
                        plan=plan, registry=registry, allow_nonfinite=allow_nonfinite, tp=tp,
                        block_table=block_table)
    k_cache, v_cache = call.k_cache, call.v_cache
    job = _prepare(call, tp, values, timeout_s, fault_rank, timed, cache)
    pools = None
    if call.paged is not None and call.block_table is not None:  # the blocks the call reaches, renumbered
        pools = compact(k_cache, v_cache, call.block_table, call.lens, call.paged.block)
        job = replace(job, block_table=pools.table)
    start = time.perf_counter()
    before = tuple(c.clone() for c in logical_caches(call)) if check else None
    results = _run(job, call.weights, hidden, *((pools.k, pools.v) if pools else (k_cache, v_cache)), launcher, say)
    if results is None:
        return None
    if pools is not None and values and call.paged is not None:
        _finish_paged(job, results, k_cache, v_cache, pools, call.paged.block)
    packed_out, report = _finish(job, results, k_cache, v_cache, [(0, n) for n in call.lens], time.perf_counter() - start)
    out = torch.zeros_like(hidden)
    scatter_packed(out, packed_out, call.lens)
    if before is not None and values:
        say("golden prefill")
        check_against_golden(report, "prefill", call.config, call.weights, hidden, seq_lens, call.lens, before, out,
                             logical_caches(call))
    return TPResult(out if values else None, report, k_cache, v_cache)


def rank_cost(
    config: Qwen3Config | Mapping[str, Any] | str,
    phase: Phase,
    lens: list[int],
    *,
    tp: int,
    rank: int = 0,
    platform: str | Platform | Target | None = None,
    budgets: str | None = None,
    plan: TilingPlan | Mapping[str, int] | None = None,
    seed: int = 0,
    registry: PlatformRegistry | None = None,
) -> RankReport:
    """One rank's two programs on the cost model (no values, no collectives): its simulated
    layer time at full size, cheaply. Every rank of a TP group compiles the same shapes, so
    rank 0 stands for all of them (``benchmarks/tp_decode.py``)."""
    cfg = as_config(config)
    max_seq = max(cfg.max_seq, max(lens))
    w = LayerWeights.random(cfg, seed=seed)
    inputs = random_inputs(cfg, phase, lens, seed=seed, max_seq=max_seq)
    k_cache, v_cache = (inputs["k_cache"], inputs["v_cache"]) if phase == "decode" else (None, None)
    if phase == "prefill":
        shape = (len(lens), cfg.num_key_value_heads, max_seq, cfg.head_dim)
        k_cache, v_cache = torch.zeros(shape, dtype=torch.bfloat16), torch.zeros(shape, dtype=torch.bfloat16)
    call = prepare_call(phase, cfg, w, inputs["hidden"], inputs["seq_lens"], k_cache, v_cache, platform=platform,
                        budgets=budgets, plan=plan, registry=registry, allow_nonfinite=False, tp=tp)
    job = _prepare(call, tp, False, DEFAULT_TIMEOUT_S, None)
    res = _run_rank(job, rank, _rank_inputs(job, w, inputs["hidden"], call.k_cache, call.v_cache, rank), lambda _t: 0.0)
    return _rank_report(shard_plan(job.config, tp, rank), res)
