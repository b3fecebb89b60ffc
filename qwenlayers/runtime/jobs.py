"""Jobs the worker can run, by name. Each takes host tensors, builds a core kernel for the
worker's platform, runs it, and returns the output tensors; the worker adds the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

JobFn = Callable[["JobContext", dict[str, Any]], dict[str, torch.Tensor]]
JOBS: dict[str, JobFn] = {}


@dataclass
class JobContext:
    """What a job knows about where it runs (built by the worker from the job file)."""

    platform: dict[str, Any]  # name, arch, run_mode, ... of the selected Platform
    log_path: Path
    verify_passes: bool  # run the default lowered-pass verification, not only the tensor graph
    values: bool = True  # interpret the tensor graph for output values; False = cost model only

    def jit_options(self) -> dict[str, Any]:
        import pypto

        mode = pypto.RunMode.SIM if self.platform["run_mode"] == "sim" else pypto.RunMode.NPU
        opts: dict[str, Any] = {"runtime_options": {"run_mode": mode}}
        if mode == pypto.RunMode.SIM and self.values:
            verify: dict[str, Any] = {"enable_pass_verify": True, "pass_verify_error_tol": [1e-2, 1e-2]}
            if not self.verify_passes:
                verify["pass_verify_pass_filter"] = []  # tensor graph only: fills outputs, cheap
            opts["verify_options"] = verify
        return opts


def job(name: str) -> Callable[[JobFn], JobFn]:
    def register(fn: JobFn) -> JobFn:
        JOBS[name] = fn
        return fn

    return register


@job("rmsnorm")
def rmsnorm_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    from qwenlayers.core.kernels.rmsnorm import build_rmsnorm
    from qwenlayers.runtime import sim

    x, g = inputs["x"], inputs["g"]
    tokens, hidden = x.shape
    kernel = build_rmsnorm(tokens, hidden, inputs["eps"], vec_tile=inputs["vec_tile"], jit_options=ctx.jit_options())
    out = torch.zeros_like(x)
    with sim.quiet(ctx.log_path):
        kernel(x, g.reshape(1, hidden), out)
    return {"out": out}


def _workspaces(spec: dict[str, tuple[tuple[int, ...], str]]) -> list[torch.Tensor]:
    """Zeroed GM workspace tensors from a builder's {name: (shape, dtype)}, in its order."""
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    return [torch.zeros(shape, dtype=dtypes[dtype]) for shape, dtype in spec.values()]


@job("decode")
def decode_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One decode step. Inputs: config, plan, hidden [B, H], packed weights, cos/sin, caches
    [B, KVH, MAX_SEQ, D], seq_lens, and ``part``: ``layer`` (the whole layer, returns out),
    ``attention`` (up to the first residual, returns resid) or ``attention_partial`` (a TP
    rank: returns its fp32 partial o_proj). Returns the caches as the kernel left them too. ``schedule="reference"`` builds the reference-schedule baseline
    (:mod:`qwenlayers.core.kernels.reference`; whole layer only) instead of the fused kernel."""
    from qwenlayers.core.kernels.decode import (
        DecodeShape,
        build_decode,
        build_decode_attention,
        cache_write_index,
        decode_weight_layout,
    )
    from qwenlayers.runtime import sim

    cfg, plan, part = inputs["config"], inputs["plan"], inputs.get("part", "layer")
    x, k_cache, v_cache = inputs["hidden"], inputs["k_cache"], inputs["v_cache"]
    batch, kvh, max_seq, d = k_cache.shape
    w = inputs["weights"]
    out = torch.zeros(x.shape, dtype=torch.float32 if part == "attention_partial" else x.dtype)
    attn = torch.zeros(batch * kvh, cfg.group_size, d, dtype=x.dtype)
    kc, vc = k_cache.view(batch * kvh, max_seq, d), v_cache.view(batch * kvh, max_seq, d)
    weights = [w[name] for name in decode_weight_layout(cfg)]  # the kernels' argument order
    tail = [inputs["cos"], inputs["sin"], kc, vc, inputs["seq_lens"], *cache_write_index(inputs["seq_lens"], kvh), attn, out]
    shape = DecodeShape(batch, max_seq)
    if inputs.get("schedule", "fused") == "reference":
        from qwenlayers.core.kernels.reference import build_decode_reference, reference_workspaces

        if part != "layer":
            raise ValueError("the reference schedule is built as the whole layer only (part=layer)")
        kernel = build_decode_reference(cfg, shape, plan, jit_options=ctx.jit_options())
        ws = _workspaces(reference_workspaces(cfg, shape, plan.seq_tile))
        args = [x, *weights, *tail[:5], *ws, out]
    elif part == "layer":
        kernel = build_decode(cfg, shape, plan, jit_options=ctx.jit_options())
        args = [x, *weights, *tail]
    elif part in ("attention", "attention_partial"):  # the weights up to w_o: the MLP's three come last
        kernel = build_decode_attention(cfg, shape, plan, jit_options=ctx.jit_options(), residual=part == "attention")
        args = [x, *weights[:-3], *tail]
    else:
        raise ValueError(f"decode job part={part!r}; allowed: layer, attention, attention_partial")
    with sim.quiet(ctx.log_path):
        kernel(*args)
    return {"out": out, "k_cache": k_cache, "v_cache": v_cache}


@job("decode_mlp")
def decode_mlp_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Post-attention norm and one intermediate shard of the MLP. Inputs: config, plan, resid
    [R, H], w_ln2, w_gu [H, 2*inter] (the shard's gate | up columns), w_down [inter, H], and
    optionally token_tile (prefill rows: a loop over tiles of that many tokens; R a multiple of it).
    Returns the fp32 partial down projection [R, H]."""
    from qwenlayers.core.kernels.decode import build_decode_mlp
    from qwenlayers.runtime import sim

    resid, w_down = inputs["resid"], inputs["w_down"]
    kernel = build_decode_mlp(inputs["config"], resid.shape[0], w_down.shape[0], inputs["plan"], jit_options=ctx.jit_options(),
                              token_tile=inputs.get("token_tile", 0))
    part = torch.zeros(resid.shape, dtype=torch.float32)
    with sim.quiet(ctx.log_path):
        kernel(resid, inputs["w_ln2"], inputs["w_gu"], w_down, part)
    return {"part": part}


@job("prefill")
def prefill_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Prefill of packed tokens. Inputs: config, plan, x [T, H] (valid tokens of every sequence,
    in order), packed weights, cos/sin [T, 1, D], caches [B, KVH, ROWS, D], seq_lens (list),
    and ``part``: ``layer``, ``attention`` (a TP rank: out is its fp32 partial o_proj) or a split
    part (``qkv``, ``attend``, ``o_proj``: one loop each; q/k/v/attn workspaces may be given and
    are returned, ``work_items`` may list the query tiles of this worker).
    ``schedule="reference"`` builds the reference-schedule baseline (whole layer only).
    Returns out [T, H] and the caches as the kernel left them."""
    from qwenlayers.core.kernels.decode import decode_weight_layout
    from qwenlayers.core.kernels.prefill import (
        SPLIT_PARTS,
        WORKSPACES,
        PrefillShape,
        build_prefill,
        causal_mask,
        padded_tokens,
        work_items,
    )
    from qwenlayers.runtime import sim

    cfg, plan, lens = inputs["config"], inputs["plan"], inputs["seq_lens"]
    x, k_cache, v_cache = inputs["hidden"], inputs["k_cache"], inputs["v_cache"]
    batch, kvh, rows, d = k_cache.shape
    reference = inputs.get("schedule", "fused") == "reference"
    if reference:
        from qwenlayers.core.kernels.reference import build_prefill_reference, prefill_reference_workspaces, reference_work_items

        work = torch.tensor(reference_work_items(lens), dtype=torch.int32)  # one row per token
    else:
        items = inputs.get("work_items") or work_items(lens, plan.seq_tile)  # a split run's share of the query tiles
        work = torch.tensor(items, dtype=torch.int32)
    n_real = x.shape[0]
    n_tok = padded_tokens(plan, lens)
    pad = n_tok - n_real
    x = torch.cat([x, torch.zeros(pad, x.shape[1], dtype=x.dtype)])
    cos, sin = (torch.cat([c, c[:1].expand(pad, -1, -1)]) for c in (inputs["cos"], inputs["sin"]))
    shape = PrefillShape(tokens=n_tok, work_items=work.shape[0], batch=batch, cache_rows=rows)
    part = inputs.get("part", "layer")
    w = inputs["weights"]
    out = torch.zeros(x.shape, dtype=torch.float32 if part == "attention" else x.dtype)
    kc, vc = k_cache.view(batch * kvh * rows, d), v_cache.view(batch * kvh * rows, d)
    head = [x, *(w[name] for name in decode_weight_layout(cfg)),
            cos.contiguous(), sin.contiguous(), kc, vc, work,
            causal_mask(plan.seq_tile, cfg.group_size, None if reference else plan.kv_block)]
    if reference:
        if part != "layer":
            raise ValueError("the reference schedule is built as the whole layer only (part=layer)")
        kernel = build_prefill_reference(cfg, shape, plan, jit_options=ctx.jit_options())
        ws = _workspaces(prefill_reference_workspaces(cfg, shape, plan.seq_tile))
    else:
        kernel = build_prefill(cfg, shape, plan, jit_options=ctx.jit_options(), part=part, only_part=ctx.values)
        ws = []
        for name, width in zip(WORKSPACES, (cfg.q_width, cfg.kv_width, cfg.kv_width, cfg.q_width)):
            given = inputs.get(name)  # a split run hands loop B the workspaces loop A filled, loop C its attn
            ws.append(torch.zeros(n_tok, width, dtype=x.dtype) if given is None else
                      torch.cat([given, torch.zeros(n_tok - given.shape[0], width, dtype=x.dtype)]))
    args = [*head, *ws, out]
    with sim.quiet(ctx.log_path):
        kernel(*args)
    result = {"out": out[:n_real], "k_cache": k_cache, "v_cache": v_cache}
    if part in SPLIT_PARTS:
        result.update({name: w[:n_real] for name, w in zip(WORKSPACES, ws)})
    return result


@job("calibrate")
def calibrate_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run the micro-kernels (cost model only) and return {name: {"sim_us", "bytes", "flops" or "ops"}}."""
    from qwenlayers.core.kernels.micro import (
        VECTOR_OPS_PER_ELEMENT,
        build_cube,
        build_stream,
        build_vector,
        build_weight_stream,
    )
    from qwenlayers.runtime import sim

    rows, cols = inputs["stream_shape"]
    m, k, n = inputs["matmul_shape"]
    vr, vc = inputs["vector_shape"]
    wr, wk, wn = inputs["weight_stream_shape"]
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


@job("stage_sweep")
def stage_sweep_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Time layer stages at tile budgets on the cost model (no values). Inputs: ``points``, a list
    of ``{"stage", "rows", "width", "out", "heads", "tile_bytes"}``. Returns, per point, its
    simulated µs and tasks, or the compile error (a tile too big for a buffer fails there); one
    failing point does not stop the others."""
    from qwenlayers.core.kernels.sweep import StageShape, build_stage
    from qwenlayers.runtime import sim

    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    results: list[dict[str, Any]] = []
    for point in inputs["points"]:
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
