"""The reference-schedule decode layer: the baseline every bench run is measured against.

Same math and the same rounding points as :func:`qwenlayers.core.kernels.decode.build_decode`
(so it is checked against the same golden), but the *structure* of the pypto-lib reference
kernels (``../shared/reference`` 000-003) that the fused kernel was designed to avoid:

* **separate K and V projections** (and separate gate and up), each reading the normed input
  again;
* **zero-init then add+matmul**: every projection output block starts from a zero accumulator
  and adds one ``[rows, K_CHUNK] x [K_CHUNK, OUT_CHUNK]`` matmul per reduction chunk
  (``acc = acc + matmul``) instead of letting the cube accumulate a staged reduction;
* **four attention stages with GM round trips** per key block: QK scores, softmax, PV and the
  online rescale, each writing its result to a GM workspace the next stage reads back;
* **small per-head launches**: the attention loops over (sequence, KV head), one G-row query
  group per launch, instead of all KV heads of a sequence in one batched matmul; the
  attention state starts from zero/-inf (no first-block peeling).

Tile sizes are the plan's, so a side-by-side run isolates the schedule. Arguments: as
:func:`build_decode` plus the GM workspaces the stages round-trip through (see
:func:`reference_workspaces`).
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

from typing import Any

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.kernels import blocks
from qwenlayers.core.kernels.decode import DecodeShape, LayerTiles, decode_weight_layout
from qwenlayers.core.tiling import TilingPlan

_NEG_INF = -1e30


def reference_workspaces(config: Qwen3Config, shape: DecodeShape, seq_tile: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """GM workspaces of the reference schedule, in argument order: name -> (shape, dtype)."""
    b, kvh, g, d = shape.batch, config.num_key_value_heads, config.group_size, config.head_dim
    heads = b * kvh
    return {
        "hn_ws": ((b, config.hidden_size), "bf16"),
        "q_ws": ((b, config.q_width), "bf16"),
        "k_ws": ((b, config.kv_width), "bf16"),
        "v_ws": ((b, config.kv_width), "bf16"),
        "scores": ((heads, g, seq_tile), "fp32"),
        "probs": ((heads, g, seq_tile), "bf16"),
        "pv": ((heads, g, d), "fp32"),
        "run_acc": ((heads, g, d), "fp32"),
        "run_max": ((heads, g, 1), "fp32"),
        "run_sum": ((heads, g, 1), "fp32"),
        "alpha": ((heads, g, 1), "fp32"),
        "attn": ((heads, g, d), "bf16"),
        "o_ws": ((b, config.hidden_size), "bf16"),
        "resid_ws": ((b, config.hidden_size), "bf16"),
        "gate_ws": ((b, config.intermediate_size), "bf16"),
        "up_ws": ((b, config.intermediate_size), "bf16"),
        "act_ws": ((b, config.intermediate_size), "bf16"),
    }


def _linear_fn(rows: int, k: int, n: int, col0: int, w_cols: int, k_chunk: int, out_chunk: int, m: int,
               residual: bool = False) -> Any:
    """x [rows, k] @ w[:, col0:col0+n] (w is [k, w_cols]) into out [rows, n] bf16, the reference
    way: per output block a zero accumulator and one add+matmul per K chunk. ``residual=True``
    takes ``resid [rows, n]`` before ``out`` and writes ``resid + x @ w`` (the reference adds the
    second residual as the down projection's blocks are written)."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    n_out, n_k = n // out_chunk, k // k_chunk

    if residual:
        @pypto.frontend.function
        def linear_ref_residual(
            lr_x: pypto.Tensor((rows, k), bf16),
            lr_w: pypto.Tensor((k, w_cols), bf16),
            lr_resid: pypto.Tensor((rows, n), bf16),
            lr_out: pypto.Tensor((rows, n), bf16),
        ):
            _annotation_names = (rows, k, n, bf16, w_cols)  # noqa: F841  (see decode._flash_decode_fn)
            for ob in pypto.loop(n_out, name="LOOP_ref_out", idx_name="ob"):
                acc = pypto.tensor([rows, out_chunk], fp32, "acc")
                for kb in pypto.loop(n_k, name="LOOP_ref_k", idx_name="kb"):
                    if pypto.is_loop_begin(kb):
                        pypto.set_vec_tile_shapes(min(rows, 16), out_chunk)
                        acc[:] = pypto.zeros([rows, out_chunk], dtype=fp32)  # the zero-init pass
                    else:
                        pypto.set_vec_tile_shapes(min(rows, 16), out_chunk)
                    pypto.set_cube_tile_shapes([m, m], [k_chunk, k_chunk], [out_chunk, out_chunk])
                    xk = pypto.view(lr_x, [rows, k_chunk], [0, kb * k_chunk])
                    wk = pypto.view(lr_w, [k_chunk, out_chunk], [kb * k_chunk, col0 + ob * out_chunk])
                    part = pypto.matmul(xk, wk, fp32)
                    pypto.set_vec_tile_shapes(min(rows, 16), out_chunk)
                    acc[:] = acc + part  # add+matmul, not cube accumulation
                    if pypto.is_loop_end(kb):
                        r = pypto.view(lr_resid, [rows, out_chunk], [0, ob * out_chunk])
                        pypto.assemble(blocks.residual_add(r, pypto.cast(acc, bf16)), [0, ob * out_chunk], lr_out)

        return linear_ref_residual

    @pypto.frontend.function
    def linear_ref(
        lr_x: pypto.Tensor((rows, k), bf16),
        lr_w: pypto.Tensor((k, w_cols), bf16),
        lr_out: pypto.Tensor((rows, n), bf16),
    ):
        _annotation_names = (rows, k, n, bf16, w_cols)  # noqa: F841  (see decode._flash_decode_fn)
        for ob in pypto.loop(n_out, name="LOOP_ref_out", idx_name="ob"):
            acc = pypto.tensor([rows, out_chunk], fp32, "acc")
            for kb in pypto.loop(n_k, name="LOOP_ref_k", idx_name="kb"):
                if pypto.is_loop_begin(kb):
                    pypto.set_vec_tile_shapes(min(rows, 16), out_chunk)
                    acc[:] = pypto.zeros([rows, out_chunk], dtype=fp32)  # the zero-init pass
                else:
                    pypto.set_vec_tile_shapes(min(rows, 16), out_chunk)
                pypto.set_cube_tile_shapes([m, m], [k_chunk, k_chunk], [out_chunk, out_chunk])
                xk = pypto.view(lr_x, [rows, k_chunk], [0, kb * k_chunk])
                wk = pypto.view(lr_w, [k_chunk, out_chunk], [kb * k_chunk, col0 + ob * out_chunk])
                part = pypto.matmul(xk, wk, fp32)
                pypto.set_vec_tile_shapes(min(rows, 16), out_chunk)
                acc[:] = acc + part  # add+matmul, not cube accumulation
                if pypto.is_loop_end(kb):
                    pypto.assemble(pypto.cast(acc, bf16), [0, ob * out_chunk], lr_out)

    return linear_ref


def _attention_fn(cfg: Qwen3Config, t: LayerTiles, shape: DecodeShape) -> Any:
    """Cache write, then per (sequence, KV head) and key block four stages through GM."""
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    b_rows, kvh, g, d = shape.batch, cfg.num_key_value_heads, cfg.group_size, cfg.head_dim
    st, scale = t.seq_tile, d**-0.5
    heads = b_rows * kvh

    @pypto.frontend.function
    def attention_ref(
        q_groups: pypto.Tensor((heads, g, d), bf16),
        k_new: pypto.Tensor((heads, 1, d), bf16),
        v_new: pypto.Tensor((heads, 1, d), bf16),
        k_cache: pypto.Tensor((heads, shape.max_seq, d), bf16),
        v_cache: pypto.Tensor((heads, shape.max_seq, d), bf16),
        seq_lens: pypto.Tensor((b_rows,), i32),
        scores: pypto.Tensor((heads, g, st), fp32),
        probs: pypto.Tensor((heads, g, st), bf16),
        pv: pypto.Tensor((heads, g, d), fp32),
        acc: pypto.Tensor((heads, g, d), fp32),
        m_i: pypto.Tensor((heads, g, 1), fp32),
        l_i: pypto.Tensor((heads, g, 1), fp32),
        alpha: pypto.Tensor((heads, g, 1), fp32),
        attn: pypto.Tensor((heads, g, d), bf16),
    ):
        _annotation_names = (heads, shape, bf16, fp32, i32, st)  # noqa: F841
        for b in pypto.loop(b_rows, name="LOOP_ref_seq", idx_name="b"):
            length = seq_lens[b]
            for hk in range(kvh):  # one small launch chain per KV head
                row = b * kvh + hk
                pypto.assemble(pypto.view(k_new, [1, 1, d], [row, 0, 0]), [row, length - 1, 0], k_cache)
                pypto.assemble(pypto.view(v_new, [1, 1, d], [row, 0, 0]), [row, length - 1, 0], v_cache)
                for z in pypto.loop(1, name="LOOP_ref_zero_init", idx_name="z"):  # noqa: B007  (a one-trip loop is one launch)
                    pypto.set_vec_tile_shapes(1, g, d)
                    pypto.assemble(pypto.zeros([1, g, d], dtype=fp32), [row, 0, 0], acc)
                    pypto.assemble(pypto.full([1, g, 1], _NEG_INF, fp32), [row, 0, 0], m_i)
                    pypto.assemble(pypto.zeros([1, g, 1], dtype=fp32), [row, 0, 0], l_i)
                for blk in pypto.loop((length + st - 1) // st, name="LOOP_ref_kv", idx_name="blk"):
                    valid = (length - blk * st).min(st)
                    for s1 in pypto.loop(1, name="LOOP_ref_qk", idx_name="s1"):  # noqa: B007  # stage 1: QK -> GM
                        kb = pypto.view(k_cache, [1, st, d], [row, blk * st, 0], valid_shape=[1, valid, d])
                        qg = pypto.view(q_groups, [1, g, d], [row, 0, 0])
                        pypto.set_cube_tile_shapes([g, g], [d, d], [st, st])
                        pypto.assemble(pypto.matmul(qg, kb, fp32, b_trans=True), [row, 0, 0], scores)
                    for s2 in pypto.loop(1, name="LOOP_ref_softmax", idx_name="s2"):  # noqa: B007  # stage 2: GM -> GM
                        s = pypto.view(scores, [1, g, st], [row, 0, 0], valid_shape=[1, g, valid])
                        m_old = pypto.view(m_i, [1, g, 1], [row, 0, 0])
                        l_old = pypto.view(l_i, [1, g, 1], [row, 0, 0])
                        pypto.set_vec_tile_shapes(1, g, st)
                        s = s * scale
                        m_new = pypto.maximum(m_old, pypto.amax(s, -1, keepdim=True))
                        p = pypto.exp(s - m_new)
                        a = pypto.exp(m_old - m_new)
                        pypto.assemble(pypto.cast(p, bf16), [row, 0, 0], probs)
                        pypto.assemble(a, [row, 0, 0], alpha)
                        pypto.assemble(l_old * a + pypto.sum(p, -1, keepdim=True), [row, 0, 0], l_i)
                        pypto.assemble(m_new, [row, 0, 0], m_i)
                    for s3 in pypto.loop(1, name="LOOP_ref_pv", idx_name="s3"):  # noqa: B007  # stage 3: PV -> GM
                        vb = pypto.view(v_cache, [1, st, d], [row, blk * st, 0], valid_shape=[1, valid, d])
                        pb = pypto.view(probs, [1, g, st], [row, 0, 0], valid_shape=[1, g, valid])
                        pypto.set_cube_tile_shapes([g, g], [st, st], [d, d])
                        pypto.assemble(pypto.matmul(pb, vb, fp32), [row, 0, 0], pv)
                    for s4 in pypto.loop(1, name="LOOP_ref_rescale", idx_name="s4"):  # noqa: B007  # stage 4: online rescale
                        pypto.set_vec_tile_shapes(1, g, d)
                        a_old = pypto.view(acc, [1, g, d], [row, 0, 0])
                        upd = a_old * pypto.view(alpha, [1, g, 1], [row, 0, 0]) + pypto.view(pv, [1, g, d], [row, 0, 0])
                        pypto.assemble(upd, [row, 0, 0], acc)
                for f in pypto.loop(1, name="LOOP_ref_finalize", idx_name="f"):  # noqa: B007  (a one-trip loop is one launch)
                    pypto.set_vec_tile_shapes(1, g, d)
                    res = pypto.view(acc, [1, g, d], [row, 0, 0]) / pypto.view(l_i, [1, g, 1], [row, 0, 0])
                    pypto.assemble(pypto.cast(res, bf16), [row, 0, 0], attn)

    return attention_ref


def build_decode_reference(config: Qwen3Config, shape: DecodeShape, plan: TilingPlan, *, jit_options: dict[str, Any]) -> Any:
    """A jit kernel for one decode step with the reference schedule (module docstring).

    Arguments: as :func:`~qwenlayers.core.kernels.decode.build_decode` up to seq_lens, then the
    :func:`reference_workspaces` in order, then out [B, H]."""
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    cfg, eps = config, config.rms_norm_eps
    b_rows, h, d, kvh, g = shape.batch, cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads, cfg.group_size
    nh, inter, qw, kw = cfg.num_attention_heads, cfg.intermediate_size, cfg.q_width, cfg.kv_width
    lay = decode_weight_layout(cfg)
    t = LayerTiles(plan, cfg, b_rows)
    ws = reference_workspaces(cfg, shape, plan.seq_tile)
    dt = {"bf16": bf16, "fp32": fp32}
    m = t.q_proj.m
    kc, qc, kvc, mc = plan.k_chunk, plan.q_out_chunk, plan.kv_out_chunk, plan.mlp_out_chunk
    lin_q = _linear_fn(b_rows, h, qw, 0, qw, kc, qc, m)
    lin_k = _linear_fn(b_rows, h, kw, 0, 2 * kw, kc, kvc, m)
    lin_v = _linear_fn(b_rows, h, kw, kw, 2 * kw, kc, kvc, m)
    lin_o = _linear_fn(b_rows, qw, h, 0, h, qc, kc, m)
    lin_gate = _linear_fn(b_rows, h, inter, 0, 2 * inter, kc, mc, m)
    lin_up = _linear_fn(b_rows, h, inter, inter, 2 * inter, kc, mc, m)
    lin_down = _linear_fn(b_rows, inter, h, 0, h, mc, kc, m, residual=True)
    attention = _attention_fn(cfg, t, shape)

    @pypto.frontend.jit(**jit_options)
    def qwen3_decode_reference(
        x: pypto.Tensor((b_rows, h), bf16),
        w_ln1: pypto.Tensor(lay["w_ln1"], bf16),
        w_q: pypto.Tensor(lay["w_q"], bf16),
        w_kv: pypto.Tensor(lay["w_kv"], bf16),
        w_qn: pypto.Tensor(lay["w_qn"], bf16),
        w_kn: pypto.Tensor(lay["w_kn"], bf16),
        w_o: pypto.Tensor(lay["w_o"], bf16),
        w_ln2: pypto.Tensor(lay["w_ln2"], bf16),
        w_gu: pypto.Tensor(lay["w_gu"], bf16),
        w_down: pypto.Tensor(lay["w_down"], bf16),
        cos: pypto.Tensor((b_rows, 1, d), fp32),
        sin: pypto.Tensor((b_rows, 1, d), fp32),
        k_cache: pypto.Tensor((b_rows * kvh, shape.max_seq, d), bf16),
        v_cache: pypto.Tensor((b_rows * kvh, shape.max_seq, d), bf16),
        seq_lens: pypto.Tensor((b_rows,), i32),
        hn_ws: pypto.Tensor(ws["hn_ws"][0], dt[ws["hn_ws"][1]]),
        q_ws: pypto.Tensor(ws["q_ws"][0], dt[ws["q_ws"][1]]),
        k_ws: pypto.Tensor(ws["k_ws"][0], dt[ws["k_ws"][1]]),
        v_ws: pypto.Tensor(ws["v_ws"][0], dt[ws["v_ws"][1]]),
        scores: pypto.Tensor(ws["scores"][0], dt[ws["scores"][1]]),
        probs: pypto.Tensor(ws["probs"][0], dt[ws["probs"][1]]),
        pv: pypto.Tensor(ws["pv"][0], dt[ws["pv"][1]]),
        run_acc: pypto.Tensor(ws["run_acc"][0], dt[ws["run_acc"][1]]),
        run_max: pypto.Tensor(ws["run_max"][0], dt[ws["run_max"][1]]),
        run_sum: pypto.Tensor(ws["run_sum"][0], dt[ws["run_sum"][1]]),
        alpha: pypto.Tensor(ws["alpha"][0], dt[ws["alpha"][1]]),
        attn: pypto.Tensor(ws["attn"][0], dt[ws["attn"][1]]),
        o_ws: pypto.Tensor(ws["o_ws"][0], dt[ws["o_ws"][1]]),
        resid_ws: pypto.Tensor(ws["resid_ws"][0], dt[ws["resid_ws"][1]]),
        gate_ws: pypto.Tensor(ws["gate_ws"][0], dt[ws["gate_ws"][1]]),
        up_ws: pypto.Tensor(ws["up_ws"][0], dt[ws["up_ws"][1]]),
        act_ws: pypto.Tensor(ws["act_ws"][0], dt[ws["act_ws"][1]]),
        out: pypto.Tensor((b_rows, h), bf16),
    ):
        # the vector stages between projections are one-trip loops reading and writing GM:
        # the reference's separate scopes, each a launch that talks to the next through GM
        for s0 in pypto.loop(1, name="LOOP_ref_norm1", idx_name="s0"):  # noqa: B007  (a one-trip loop is one launch)
            pypto.set_vec_tile_shapes(*t.hidden_vec)
            pypto.assemble(blocks.rms_norm_rows(pypto.cast(x, fp32), w_ln1, h, eps), [0, 0], hn_ws)
        lin_q(hn_ws, w_q, q_ws)
        lin_k(hn_ws, w_kv, k_ws)  # separate K and V: the normed input is read twice
        lin_v(hn_ws, w_kv, v_ws)
        pypto.set_vec_tile_shapes(*t.head_vec)
        q_heads = blocks.rms_norm_rows(pypto.cast(pypto.reshape(q_ws, [b_rows * nh, d]), fp32), w_qn, d, eps)
        k_heads = blocks.rms_norm_rows(pypto.cast(pypto.reshape(k_ws, [b_rows * kvh, d]), fp32), w_kn, d, eps)
        pypto.set_vec_tile_shapes(1, t.head_vec[0], d)
        q_rot = blocks.rope(pypto.reshape(q_heads, [b_rows, nh, d]), cos, sin, d)
        k_rot = blocks.rope(pypto.reshape(k_heads, [b_rows, kvh, d]), cos, sin, d)
        pypto.set_vec_tile_shapes(1, g, d)
        v_new = pypto.cast(pypto.cast(pypto.reshape(v_ws, [b_rows * kvh, 1, d]), fp32), bf16)
        attention(pypto.reshape(q_rot, [b_rows * kvh, g, d]), pypto.reshape(k_rot, [b_rows * kvh, 1, d]), v_new,
                  k_cache, v_cache, seq_lens, scores, probs, pv, run_acc, run_max, run_sum, alpha, attn)
        pypto.set_vec_tile_shapes(min(b_rows, 16), qw)
        lin_o(pypto.reshape(attn, [b_rows, qw]), w_o, o_ws)
        for s2 in pypto.loop(1, name="LOOP_ref_resid_norm2", idx_name="s2"):  # noqa: B007  (a one-trip loop is one launch)
            pypto.set_vec_tile_shapes(*t.hidden_vec)
            resid = blocks.residual_add(x, o_ws)
            pypto.assemble(resid, [0, 0], resid_ws)
            pypto.assemble(blocks.rms_norm_rows(pypto.cast(resid, fp32), w_ln2, h, eps), [0, 0], hn_ws)
        lin_gate(hn_ws, w_gu, gate_ws)  # separate gate and up
        lin_up(hn_ws, w_gu, up_ws)
        for s3 in pypto.loop(1, name="LOOP_ref_swiglu", idx_name="s3"):  # noqa: B007  (a one-trip loop is one launch)
            pypto.set_vec_tile_shapes(*t.mlp_vec)
            pypto.assemble(blocks.swiglu(gate_ws, up_ws), [0, 0], act_ws)
        lin_down(act_ws, w_down, resid_ws, out)

    return qwen3_decode_reference
