"""The Qwen3 prefill layer as one pypto program over packed tokens.

The host packs the valid tokens of all sequences into T = sum(seq_lens) rows (no padding
rows reach the kernel), so every stage costs in proportion to real tokens. Three loops:

A. token tiles of ``cube_m`` rows: input RMSNorm, Q, K and V projections, q_norm/k_norm,
   RoPE (cos/sin rows per token, gathered on the host from the golden's table); results go to
   GM workspaces (arguments: a tensor written in one loop and read in another must be, see
   ``pypto-loop-results-through-gm``);
B. work items, one per (sequence, query tile of SEQ_TILE tokens), listed by the host from
   ``seq_lens`` (so a short sequence in a long batch costs only its own tiles): write the
   tile's K/V rows into the cache (rows 0..seq_len-1 only, via ``valid_shape``), then causal
   GQA flash attention over key blocks of KV_BLOCK rows (whole query tiles) with online
   softmax, up to the block that holds the diagonal. Only that last block needs the causal
   mask; the host passes one mask per position of the query tile inside a key block, and a
   symbolic view offset picks it (zeros for earlier blocks). The online-softmax state is
   carried across every block up to the diagonal — the cross-block reduction that pypto-lib
   reference 004 skipped cannot be skipped here because the trip count *is* the block count.
   A key block wider than the query tile shortens that dependent chain (qt // (KV_BLOCK /
   SEQ_TILE) + 1 iterations instead of qt + 1) for a few masked columns on the diagonal block.
   Rows past seq_len are excluded by ``valid_shape`` on the key/value blocks and queries;
C. token tiles again: o_proj (reduction point 1), residual, post-attention RMSNorm, gate|up,
   SiLU·up, down_proj (reduction point 2), residual.
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

import math
from dataclasses import dataclass
from typing import Any

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.kernels import blocks
from qwenlayers.core.kernels.layer_blocks import LayerTiles, decode_weight_layout, mlp_half, o_proj_out, project_qkv
from qwenlayers.core.kernels.online_softmax import online_softmax_fn
from qwenlayers.core.parts import PREFILL_PARTS, Part
from qwenlayers.core.tiling import TilingPlan

#: The GM workspaces one loop fills and another reads, in argument order ([T, width] bf16).
WORKSPACES = ("q_ws", "k_ws", "v_ws", "attn")

#: Columns of one work item: sequence index, its length, its first packed row, query tile index.
WORK_COLUMNS = ("seq", "length", "offset", "q_tile")


@dataclass(frozen=True)
class PrefillShape:
    """Static shape of one prefill build (all derived on the host from ``seq_lens``)."""

    tokens: int  # packed rows: sum(seq_lens), padded by the host to whole token tiles
    work_items: int  # sum(ceil(seq_len / SEQ_TILE))
    batch: int
    cache_rows: int  # rows per (sequence, KV head) in the cache arguments
    block: int = 0  # a paged cache (core.paged): rows per block; 0: contiguous caches
    num_blocks: int = 0  # blocks in the pools the kernel gets
    max_blocks: int = 1  # block-table entries per sequence

    def cache_len(self, kv_heads: int) -> int:
        """Rows of the caches as the kernel sees them, [rows, D]: contiguous B*KVH*ROWS; paged,
        the pools' num_blocks*KVH*BLOCK."""
        return (self.num_blocks * self.block if self.block else self.batch * self.cache_rows) * kv_heads


def build_prefill(
    config: Qwen3Config, shape: PrefillShape, plan: TilingPlan, *, jit_options: dict[str, Any], part: Part = "layer",
    only_part: bool = True,
) -> Any:
    """A jit kernel for the prefill of packed tokens.

    ``part="partial_o_proj"`` stops at reduction point 1 (a tensor-parallel rank): loop C computes
    only this rank's fp32 partial o_proj into ``out`` [T, H] fp32 (the MLP weights are still
    arguments, unused), and the MLP runs as :func:`~qwenlayers.core.kernels.decode.build_decode_mlp`
    after the all-reduce.

    The parts of a checked run that does not fit one worker (``core.parts.SPLIT_PARTS``), each one loop
    of the same program with the same arguments: ``"qkv"`` is loop A alone (its results are the
    q/k/v workspaces), ``"attend"`` loop B alone (reads the workspaces, writes the caches and
    ``attn``), ``"o_proj"`` loop C up to the residual (``out`` is ``x + o_proj(attn)``, bf16);
    the MLP then runs in token-tiled intermediate shards (``build_decode_mlp``).

    ``only_part`` (checked runs): a part's program holds only its own loop; the others are not
    built at all (pypto would still build a zero-trip loop's body, every weight's cube tiles
    included: qwen3-0.6b / 1,024 tokens, projections worker 1,711 -> 1,443 MB). ``False``
    (cost-model phases) keeps the other loops at zero trips, because the cost model times the
    attention loop differently without them (0.6B / 4,096 tokens, query tiles 0-30: 7,811 us
    with them, 16,091 us alone), and the phases stand for the one program.

    Arguments: x [T, H], the :func:`decode_weight_layout` tensors, cos/sin [T, 1, D] fp32,
    k_cache/v_cache [B*KVH*ROWS, D] (row (b*KVH + h)*ROWS + i holds token i of sequence b) or,
    paged, the pools [num_blocks*KVH*BLOCK, D] with block_table [B, max_blocks] int32 (token i of
    sequence b at row (table[b, i // BLOCK]*KVH + h)*BLOCK + i % BLOCK; a contiguous build gets a
    [B, 1] table it never reads), work [NW, 4] int32 (:data:`WORK_COLUMNS`), mask [(1 + KB/ST)*ST*G, KB] fp32
    (:func:`causal_mask`), workspaces q [T, NH*D],
    k [T, KVH*D], v [T, KVH*D], attn [T, NH*D], and out [T, H].
    """
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    cfg, eps = config, config.rms_norm_eps
    n_tok, nw, b_rows, rows = shape.tokens, shape.work_items, shape.batch, shape.cache_rows
    h, d, kvh, g = cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads, cfg.group_size
    qw, kw = cfg.q_width, cfg.kv_width
    lay = decode_weight_layout(cfg)
    tt = token_tile(plan, n_tok)  # tokens per projection tile
    n_tiles = n_tok // tt
    t = LayerTiles(plan, cfg, tt)
    st, qhb, scale = plan.seq_tile, plan.q_head_batch, d**-0.5
    kb = plan.kv_block  # key rows per attention iteration: whole query tiles (per_blk of them)
    per_blk = kb // st
    qrows = st * g  # query rows of one KV head in one query tile, ordered (token, group head)
    cube_m = min(plan.cube_m, qrows)
    # Attention vector tiles: the softmax runs in [srows, SEQ_TILE] tiles of the elements of the
    # plan's "softmax scores" tile, the accumulator in [Q_HEAD_BATCH, D] ("attn acc"); rows are
    # (token, head) pairs here, not one KV group's heads. qwen3-0.6b, 128 tokens: [2, 64] and
    # [2, 128] tiles simulated 1,610 us; [8, 64] and [4, 128], 1,344 us (512 tokens: 10,630 -> 6,926).
    srows = math.gcd(qhb * plan.score_cols // st, qrows)
    softmax_step = online_softmax_fn((qrows,), kb, d, ([cube_m, cube_m], [st, st], [d, d]), (qhb, d))
    if part not in PREFILL_PARTS:
        raise ValueError(f"build_prefill part={part!r}; allowed: {', '.join(PREFILL_PARTS)}")
    whole = ("layer", "partial_o_proj")
    loop_a, loop_b, loop_c = part in (*whole, "qkv"), part in (*whole, "attend"), part in (*whole, "o_proj")
    build_a, build_b, build_c = (loop_a, loop_b, loop_c) if only_part else (True, True, True)
    out_dtype = fp32 if part == "partial_o_proj" else bf16
    paged, blk_rows = shape.block > 0, shape.block
    if paged and blk_rows % st:
        raise ValueError(f"a paged prefill writes whole query tiles into blocks: seq_tile {st} must divide block {blk_rows}")
    tiles_per_block = blk_rows // st if paged else 1

    def cache_row(table: Any, b: Any, hk: int, qt: Any) -> Any:
        """The cache row query tile ``qt`` of sequence ``b``, KV head ``hk`` starts at: in the
        contiguous caches, or in the block its table names (a tile never crosses a block)."""
        if paged:
            j = qt // tiles_per_block
            return (table[b, j] * kvh + hk) * blk_rows + (qt - j * tiles_per_block) * st
        return (b * kvh + hk) * rows + qt * st

    @pypto.frontend.jit(**blocks.plan_jit_options(plan, jit_options))
    def qwen3_prefill_layer(
        x: pypto.Tensor((n_tok, h), bf16),
        w_ln1: pypto.Tensor(lay["w_ln1"], bf16),
        w_q: pypto.Tensor(lay["w_q"], bf16),
        w_kv: pypto.Tensor(lay["w_kv"], bf16),
        w_qn: pypto.Tensor(lay["w_qn"], bf16),
        w_kn: pypto.Tensor(lay["w_kn"], bf16),
        w_o: pypto.Tensor(lay["w_o"], bf16),
        w_ln2: pypto.Tensor(lay["w_ln2"], bf16),
        w_gu: pypto.Tensor(lay["w_gu"], bf16),
        w_down: pypto.Tensor(lay["w_down"], bf16),
        cos: pypto.Tensor((n_tok, 1, d), fp32),
        sin: pypto.Tensor((n_tok, 1, d), fp32),
        k_cache: pypto.Tensor((shape.cache_len(kvh), d), bf16),
        v_cache: pypto.Tensor((shape.cache_len(kvh), d), bf16),
        block_table: pypto.Tensor((b_rows, shape.max_blocks), i32),
        work: pypto.Tensor((nw, len(WORK_COLUMNS)), i32),
        mask: pypto.Tensor(((1 + per_blk) * qrows, kb), fp32),
        q_ws: pypto.Tensor((n_tok, qw), bf16),
        k_ws: pypto.Tensor((n_tok, kw), bf16),
        v_ws: pypto.Tensor((n_tok, kw), bf16),
        attn: pypto.Tensor((n_tok, qw), bf16),
        out: pypto.Tensor((n_tok, h), out_dtype),
    ):
        blocks.merge_tasks(t.pass_options)
        w = {"w_ln1": w_ln1, "w_q": w_q, "w_kv": w_kv, "w_qn": w_qn, "w_kn": w_kn, "w_o": w_o,
             "w_ln2": w_ln2, "w_gu": w_gu, "w_down": w_down}
        # A. projections, norms and RoPE per token tile
        if build_a:  # see only_part
            for i in pypto.loop(n_tiles if loop_a else 0, name="LOOP_tok_qkv", idx_name="i"):
                xt = pypto.view(x, [tt, h], [i * tt, 0])
                ct = pypto.view(cos, [tt, 1, d], [i * tt, 0, 0])
                sn = pypto.view(sin, [tt, 1, d], [i * tt, 0, 0])
                q_groups, k_new, v_new = project_qkv(cfg, t, tt, eps, xt, w, ct, sn)
                pypto.set_vec_tile_shapes(t.rows, d)
                pypto.assemble(pypto.cast(pypto.cast(pypto.reshape(q_groups, [tt, qw]), fp32), bf16), [i * tt, 0], q_ws)
                pypto.assemble(pypto.cast(pypto.cast(pypto.reshape(k_new, [tt, kw]), fp32), bf16), [i * tt, 0], k_ws)
                pypto.assemble(pypto.cast(pypto.cast(pypto.reshape(v_new, [tt, kw]), fp32), bf16), [i * tt, 0], v_ws)
        if build_b:
            # B. cache write and causal flash attention per (sequence, query tile)
            for wi in pypto.loop(nw if loop_b else 0, name="LOOP_work", idx_name="wi"):
                b = work[wi, 0]
                length = work[wi, 1]
                off = work[wi, 2]
                qt = work[wi, 3]
                qvalid = (length - qt * st).min(st)
                n_blk = qt // per_blk + 1  # key blocks up to and including the one holding the diagonal
                # mask block of the last key block: 1 + the query tile's position inside it (0 elsewhere)
                diag = 1 + qt - (qt // per_blk) * per_blk
                for hk in range(kvh):
                    row = cache_row(block_table, b, hk, qt)
                    pypto.assemble(pypto.view(k_ws, [st, d], [off + qt * st, hk * d], valid_shape=[qvalid, d]), [row, 0], k_cache)
                    pypto.assemble(pypto.view(v_ws, [st, d], [off + qt * st, hk * d], valid_shape=[qvalid, d]), [row, 0], v_cache)
                    pypto.set_vec_tile_shapes(qhb, d)
                    qv = pypto.reshape(pypto.view(q_ws, [st, g * d], [off + qt * st, hk * g * d]), [qrows, d])
                    qv = pypto.cast(pypto.cast(qv, fp32), bf16)  # materialise the strided tile (a real op)
                    acc = pypto.tensor([qrows, d], fp32, "acc")
                    m_i = pypto.tensor([qrows, 1], fp32, "m_i")
                    l_i = pypto.tensor([qrows, 1], fp32, "l_i")
                    for blk in pypto.loop(n_blk, name="LOOP_kv", idx_name="blk"):
                        kvalid = (length - blk * kb).min(kb)
                        kv_k = pypto.view(k_ws, [kb, d], [off + blk * kb, hk * d], valid_shape=[kvalid, d])
                        kv_v = pypto.view(v_ws, [kb, d], [off + blk * kb, hk * d], valid_shape=[kvalid, d])
                        pypto.set_cube_tile_shapes([cube_m, cube_m], [d, d], [st, st])
                        s = pypto.matmul(qv, kv_k, fp32, b_trans=True)  # [ST*G, KB]
                        s = pypto.view(s, [qrows, kb], [0, 0], valid_shape=[qrows, kvalid])
                        pypto.set_vec_tile_shapes(srows, st)
                        # (blk + 1) // n_blk is 1 on the last block only: its causal mask, zeros before it
                        mk = pypto.view(mask, [qrows, kb], [((blk + 1) // n_blk) * diag * qrows, 0], valid_shape=[qrows, kvalid])
                        s = s * scale + mk
                        softmax_step(s, kv_v, acc, m_i, l_i, blk)
                        if pypto.is_loop_end(blk):
                            res = pypto.reshape(acc / l_i, [st, g * d])
                            pypto.set_vec_tile_shapes(t.rows, d)
                            res = pypto.cast(pypto.view(res, [st, g * d], [0, 0], valid_shape=[qvalid, g * d]), bf16)
                            pypto.assemble(res, [off + qt * st, hk * g * d], attn)
        if build_c:
            # C. o_proj, residual, MLP, residual per token tile
            for i in pypto.loop(n_tiles if loop_c else 0, name="LOOP_tok_mlp", idx_name="i"):
                xt = pypto.view(x, [tt, h], [i * tt, 0])
                at = pypto.view(attn, [tt, qw], [i * tt, 0])
                pypto.assemble(_tail(cfg, t, eps, xt, at, w, part), [i * tt, 0], out)

    return qwen3_prefill_layer


def _tail(cfg: Qwen3Config, t: LayerTiles, eps: float, xt: Any, at: Any, w: dict[str, Any], part: str) -> Any:
    """Loop C's body for one token tile: the layer's output rows, or a TP rank's fp32 partial
    o_proj (reduction point 1; the all-reduce, residual and MLP happen after the program)."""
    import pypto

    if part == "partial_o_proj":
        return o_proj_out(t, xt, at, w["w_o"], residual=False)
    resid = o_proj_out(t, xt, at, w["w_o"], residual=True)
    if part == "o_proj":
        return resid
    down_part = mlp_half(cfg, t, eps, resid, w, cfg.intermediate_size)  # reduction point 2 when sharded
    pypto.set_vec_tile_shapes(*t.hidden_vec)
    return blocks.residual_add(resid, down_part)


def token_tile(plan: TilingPlan, tokens: int) -> int:
    """Tokens per projection tile: the cube's M tile, or all tokens when there are fewer."""
    return min(plan.cube_m, tokens)


def padded_tokens(plan: TilingPlan, lens: list[int]) -> int:
    """Packed rows the host passes: enough that every query tile and key block view of the last
    sequence stays inside the workspaces (views are SEQ_TILE or KV_BLOCK rows; ``valid_shape``
    marks the real ones), rounded up to whole token tiles so loops A and C need no partial
    tiles. The padding rows are computed and dropped."""
    need, offset = 0, 0
    block = max(plan.seq_tile, plan.kv_block)
    for n in lens:
        need = max(need, offset + -(-n // block) * block)
        offset += n
    tt = token_tile(plan, need)
    return -(-need // tt) * tt


def work_items(lens: list[int], seq_tile: int) -> list[list[int]]:
    """One row per (sequence, query tile): :data:`WORK_COLUMNS`."""
    items, offset = [], 0
    for b, n in enumerate(lens):
        items.extend([b, n, offset, qt] for qt in range(-(-n // seq_tile)))
        offset += n
    return items


def causal_mask(seq_tile: int, group: int, key_block: int | None = None) -> Any:
    """[(1 + KB/ST) * ST*G, KB] fp32, rows ordered (token, group head): zeros (a key block before
    the diagonal), then for each position j of the query tile inside a key block (its first
    token at key column j*ST) the mask of that block: key column c is kept for token t when
    c <= j*ST + t. ``key_block`` defaults to the query tile (the reference schedule's [2*ST*G, ST])."""
    import torch

    kb = key_block or seq_tile
    t = torch.arange(seq_tile).repeat_interleave(group)[:, None]
    c = torch.arange(kb)[None, :]
    parts = [torch.zeros(seq_tile * group, kb)]
    parts += [torch.where(c <= j * seq_tile + t, 0.0, -1e30) for j in range(kb // seq_tile)]
    return torch.cat(parts).float().contiguous()
