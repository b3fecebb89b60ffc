"""What the worker does for each job kind (:mod:`qwenlayers.runtime.job_types`): build a core
kernel for the worker's platform from the typed job, run it on the job's host tensors, return
the output tensors; the worker adds the report. Imported in the worker only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwenlayers.runtime import sim
from qwenlayers.runtime.job_types import CalibrateJob, DecodeJob, Job, MlpJob, PrefillJob, RmsNormJob, StageSweepJob

JobFn = Callable[["JobContext", Any], dict[str, Any]]
JOBS: dict[str, JobFn] = {}


@dataclass
class JobContext:
    """What a job knows about where it runs (built by the worker from the job file)."""

    run_mode: str  # the platform's: "sim" (pypto's cost model and interpreter) or "npu"
    log_path: Path
    verify_passes: bool  # run the default lowered-pass verification, not only the tensor graph
    values: bool = True  # interpret the tensor graph for output values; False = cost model only
    timed: bool = True  # also run the cost model; False with values: the compile stops at the tensor graph
    tensor_graph_values: bool = False  # workaround pypto-sim-tensor-graph-values is declared for the target

    @property
    def values_only(self) -> bool:
        """A SIM values run nobody times: pypto records and interprets the tensor graph and stops
        (no passes, no codegen, no cost model). Verifying the passes needs them, so it never is."""
        return (self.run_mode == "sim" and self.values and not self.timed and not self.verify_passes
                and self.tensor_graph_values)

    def jit_options(self) -> dict[str, Any]:
        import pypto

        mode = pypto.RunMode.SIM if self.run_mode == "sim" else pypto.RunMode.NPU
        opts: dict[str, Any] = {"runtime_options": {"run_mode": mode}}
        if mode == pypto.RunMode.SIM and self.values:
            verify: dict[str, Any] = {"enable_pass_verify": True, "pass_verify_error_tol": [1e-2, 1e-2]}
            if not self.verify_passes:
                verify["pass_verify_pass_filter"] = []  # tensor graph only: fills outputs, cheap
            opts["verify_options"] = verify
        if self.values_only:
            opts["host_options"] = {"compile_stage": pypto.CompStage.TENSOR_GRAPH}
        return opts

    def launch(self, kernel: Any, args: list[torch.Tensor], returns: tuple[torch.Tensor, ...]) -> None:
        """Run ``kernel(*args)``; ``returns`` (some of the arguments) hold its results after."""
        if self.values_only:
            sim.run_to_tensor_graph(kernel, args, returns, self.log_path)
            return
        with sim.quiet(self.log_path):
            kernel(*args)


def job(kind: type[Job]) -> Callable[[JobFn], JobFn]:
    def register(fn: JobFn) -> JobFn:
        JOBS[kind.kind] = fn
        return fn

    return register


@job(RmsNormJob)
def rmsnorm_job(ctx: JobContext, j: RmsNormJob) -> dict[str, torch.Tensor]:
    from qwenlayers.core.kernels.rmsnorm import build_rmsnorm

    x, g = j.x, j.g
    tokens, hidden = x.shape
    kernel = build_rmsnorm(tokens, hidden, j.eps, vec_tile=tuple(j.vec_tile), jit_options=ctx.jit_options())
    out = torch.zeros_like(x)
    ctx.launch(kernel, [x, g.reshape(1, hidden), out], (out,))
    return {"out": out}


def _workspaces(spec: dict[str, tuple[tuple[int, ...], str]]) -> list[torch.Tensor]:
    """Zeroed GM workspace tensors from a builder's {name: (shape, dtype)}, in its order."""
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    return [torch.zeros(shape, dtype=dtypes[dtype]) for shape, dtype in spec.values()]


@job(DecodeJob)
def decode_job(ctx: JobContext, j: DecodeJob) -> dict[str, torch.Tensor]:
    """One decode step of ``j.part``: ``layer`` returns the layer output, ``to_residual`` the
    first residual, ``partial_o_proj`` a TP rank's fp32 partial o_proj; the caches as the kernel
    left them too. ``schedule="reference"`` builds the reference-schedule baseline
    (:mod:`qwenlayers.core.kernels.reference`; whole layer only) instead of the fused kernel."""
    from qwenlayers.core.kernels.decode import (
        DecodeShape,
        build_decode,
        build_decode_attention,
        cache_write_index,
        paged_write_index,
    )
    from qwenlayers.core.kernels.layer_blocks import decode_weight_layout
    from qwenlayers.core.kernels.paged_decode import paged_head_table

    cfg, plan, part = j.config, j.plan, j.part
    x, k_cache, v_cache = j.hidden, j.k_cache, j.v_cache
    batch = x.shape[0]
    w = j.weights
    out = torch.zeros(x.shape, dtype=torch.float32 if part == "partial_o_proj" else x.dtype)
    attn = torch.zeros(batch * cfg.num_key_value_heads, cfg.group_size, cfg.head_dim, dtype=x.dtype)
    weights = [w[name] for name in decode_weight_layout(cfg)]  # the kernels' argument order
    if j.block_table is not None:  # pools [num_blocks, KVH, BLOCK, D] and their table (core.paged)
        blocks, kvh, block, d = k_cache.shape
        table = paged_head_table(j.block_table, kvh, plan.kv_block // block)  # whole iterations wide
        width = table.shape[1]
        where = paged_write_index(j.seq_lens, j.block_table, kvh, block)
        shape = DecodeShape(batch, width * block, j.tilelet_bytes, block, blocks, width)
        kc, vc = k_cache.view(blocks * kvh * block, d), v_cache.view(blocks * kvh * block, d)
    else:
        _, kvh, max_seq, d = k_cache.shape
        table = torch.zeros(batch, 1, dtype=torch.int32)  # not read by a contiguous build
        where = cache_write_index(j.seq_lens, kvh)
        shape = DecodeShape(batch, max_seq, j.tilelet_bytes)
        kc, vc = k_cache.view(batch * kvh, max_seq, d), v_cache.view(batch * kvh, max_seq, d)
    tail = [j.cos, j.sin, kc, vc, table, j.seq_lens, *where, attn, out]
    if j.schedule == "reference":
        from qwenlayers.core.kernels.reference import build_decode_reference, reference_workspaces

        kernel = build_decode_reference(cfg, shape, plan, jit_options=ctx.jit_options())
        ws = _workspaces(reference_workspaces(cfg, shape, plan.seq_tile))
        args = [x, *weights, j.cos, j.sin, kc, vc, j.seq_lens, *ws, out]
    elif part == "layer":
        kernel = build_decode(cfg, shape, plan, jit_options=ctx.jit_options())
        args = [x, *weights, *tail]
    else:  # to_residual, partial_o_proj: the weights up to w_o (the MLP's three come last)
        kernel = build_decode_attention(cfg, shape, plan, jit_options=ctx.jit_options(), residual=part == "to_residual")
        args = [x, *weights[:-3], *tail]
    ctx.launch(kernel, args, (out, kc, vc))
    return {"out": out, "k_cache": k_cache, "v_cache": v_cache}


@job(MlpJob)
def mlp_job(ctx: JobContext, j: MlpJob) -> dict[str, torch.Tensor]:
    """Post-attention norm and one intermediate shard of the MLP; returns the fp32 partial down
    projection [R, H]."""
    from qwenlayers.core.kernels.decode import build_decode_mlp

    kernel = build_decode_mlp(j.config, j.resid.shape[0], j.w_down.shape[0], j.plan, jit_options=ctx.jit_options(),
                              token_tile=j.token_tile)
    part = torch.zeros(j.resid.shape, dtype=torch.float32)
    ctx.launch(kernel, [j.resid, j.w_ln2, j.w_gu, j.w_down, part], (part,))
    return {"part": part}


@job(PrefillJob)
def prefill_job(ctx: JobContext, j: PrefillJob) -> dict[str, torch.Tensor]:
    """Prefill of packed tokens, ``j.part`` of the program (``partial_o_proj``: out is a TP
    rank's fp32 partial o_proj; a split part returns its q/k/v/attn workspaces too).
    Returns out [T, H] and the caches as the kernel left them."""
    from qwenlayers.core.kernels.layer_blocks import decode_weight_layout
    from qwenlayers.core.kernels.prefill import WORKSPACES, PrefillShape, build_prefill, causal_mask, padded_tokens, work_items
    from qwenlayers.core.parts import SPLIT_PARTS

    cfg, plan, lens, part = j.config, j.plan, j.seq_lens, j.part
    x, k_cache, v_cache = j.hidden, j.k_cache, j.v_cache
    batch = len(lens)
    reference = j.schedule == "reference"
    if reference:
        from qwenlayers.core.kernels.reference import build_prefill_reference, prefill_reference_workspaces, reference_work_items

        work = torch.tensor(reference_work_items(lens), dtype=torch.int32)  # one row per token
    else:
        work = torch.tensor(j.work_items or work_items(lens, plan.seq_tile), dtype=torch.int32)  # a split run's share
    n_real = x.shape[0]
    n_tok = padded_tokens(plan, lens)
    pad = n_tok - n_real
    x = torch.cat([x, torch.zeros(pad, x.shape[1], dtype=x.dtype)])
    cos, sin = (torch.cat([c, c[:1].expand(pad, -1, -1)]) for c in (j.cos, j.sin))
    if j.block_table is not None:  # pools [num_blocks, KVH, BLOCK, D] and their table (core.paged)
        blocks, kvh, block, d = k_cache.shape
        table = j.block_table
        shape = PrefillShape(n_tok, work.shape[0], batch, table.shape[1] * block, block, blocks, table.shape[1])
    else:
        _, kvh, rows, d = k_cache.shape
        table = torch.zeros(batch, 1, dtype=torch.int32)  # not read by a contiguous build
        shape = PrefillShape(tokens=n_tok, work_items=work.shape[0], batch=batch, cache_rows=rows)
    out = torch.zeros(x.shape, dtype=torch.float32 if part == "partial_o_proj" else x.dtype)
    kc, vc = k_cache.view(-1, d), v_cache.view(-1, d)
    head = [x, *(j.weights[name] for name in decode_weight_layout(cfg)), cos.contiguous(), sin.contiguous(), kc, vc,
            *([] if reference else [table]), work,
            causal_mask(plan.seq_tile, cfg.group_size, None if reference else plan.kv_block)]
    if reference:
        kernel = build_prefill_reference(cfg, shape, plan, jit_options=ctx.jit_options())
        ws = _workspaces(prefill_reference_workspaces(cfg, shape, plan.seq_tile))
    else:
        kernel = build_prefill(cfg, shape, plan, jit_options=ctx.jit_options(), part=part, only_part=ctx.values)
        ws = []
        for name, width in zip(WORKSPACES, (cfg.q_width, cfg.kv_width, cfg.kv_width, cfg.q_width)):
            given = getattr(j, name)  # a split run hands loop B the workspaces loop A filled, loop C its attn
            ws.append(torch.zeros(n_tok, width, dtype=x.dtype) if given is None else
                      torch.cat([given, torch.zeros(n_tok - given.shape[0], width, dtype=x.dtype)]))
    ctx.launch(kernel, [*head, *ws, out], (out, kc, vc, *(ws if part in SPLIT_PARTS else ())))
    result = {"out": out[:n_real], "k_cache": k_cache, "v_cache": v_cache}
    if part in SPLIT_PARTS:
        result.update({name: w[:n_real] for name, w in zip(WORKSPACES, ws)})
    return result


@job(CalibrateJob)
def calibrate_job(ctx: JobContext, j: CalibrateJob) -> dict[str, Any]:
    """Run the micro-kernels (cost model only) and return {name: {"sim_us", "bytes", "flops" or "ops"}}."""
    from qwenlayers.core.kernels.micro import (
        VECTOR_OPS_PER_ELEMENT,
        build_cube,
        build_stream,
        build_vector,
        build_weight_stream,
    )

    rows, cols = j.stream_shape
    m, k, n = j.matmul_shape
    vr, vc = j.vector_shape
    wr, wk, wn = j.weight_stream_shape
    opts = ctx.jit_options()
    runs = (
        ("stream", build_stream(rows, cols, jit_options=opts),
         (torch.zeros(rows, cols, dtype=torch.bfloat16), torch.zeros(rows, cols, dtype=torch.bfloat16)), {"bytes": 2 * rows * cols * 2}),
        ("weight_stream", build_weight_stream(wr, wk, wn, jit_options=opts),
         (torch.zeros(wr, wk, dtype=torch.bfloat16), torch.zeros(wk, wn, dtype=torch.bfloat16), torch.zeros(wr, wn)),
         {"bytes": 2 * (wr * wk + wk * wn) + 4 * wr * wn}),
        ("cube", build_cube(m, k, n, jit_options=opts),
         (torch.zeros(m, k, dtype=torch.bfloat16), torch.zeros(k, n, dtype=torch.bfloat16), torch.zeros(m, n)), {"flops": 2 * m * k * n}),
        ("vector", build_vector(vr, vc, jit_options=opts), (torch.zeros(vr, vc), torch.zeros(vr, vc)),
         {"ops": VECTOR_OPS_PER_ELEMENT * vr * vc}),
    )
    measured: dict[str, Any] = {}
    for name, kernel, args, work in runs:
        with sim.quiet(ctx.log_path):
            kernel(*args)
        measured[name] = {"sim_us": sim.sim_report(sim.last_run_dir())["sim_us"], **work}
    return {"measured": measured}


@job(StageSweepJob)
def stage_sweep_job(ctx: JobContext, j: StageSweepJob) -> dict[str, Any]:
    """Time layer stages at tile budgets on the cost model (no values). Inputs: ``points``, a list
    of ``{"stage", "rows", "width", "out", "heads", "tile_bytes"}``. Returns, per point, its
    simulated µs and tasks, or the compile error (a tile too big for a buffer fails there); one
    failing point does not stop the others."""
    from qwenlayers.core.kernels.sweep import StageShape, build_stage

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    results: list[dict[str, Any]] = []
    for point in j.points:
        shape = StageShape(point["stage"], point["rows"], point["width"], point.get("out", 0), point.get("heads", 0))
        try:
            kernel, args = build_stage(shape, point["tile_bytes"], jit_options=ctx.jit_options())
            with sim.quiet(ctx.log_path):
                kernel(*(torch.zeros(s, dtype=dtypes[d]) for s, d in args))
            rep = sim.sim_report(sim.last_run_dir())
            results.append({**point, "sim_us": rep.get("sim_us"), "tasks": rep.get("tasks", {})})
        except Exception as exc:  # noqa: BLE001 - an oversized tile is a result of the sweep, not a failure of it
            results.append({**point, "sim_us": None, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    return {"points": results}
