"""The Qwen3 decode layer as one pypto program, specialised at build time by a TilingPlan.

Data flow of one step for B sequences (all shapes static except the attention trip counts):

1. input RMSNorm of hidden [B, H] (with rsqrt; fp32 statistics);
2. Q, K and V projections (K and V over column views of the packed K|V weight, see project_qkv);
3. per-head q_norm / k_norm, RoPE at position seq_len-1 (cos/sin rows gathered on the host);
4. the cache write: every sequence's new K/V row (at row seq_len-1) in one ``index_put_``
   scatter; then per sequence (a dynamic ``pypto.loop`` over B) flash-decode over
   ceil(seq_len / KV_BLOCK) iterations with online softmax, each iteration split into
   SEQ_TILE-wide cube and vector tiles. All KV heads of one sequence go through one batched
   matmul, each KV group's query heads as one [G, D] operand (no padding to 16 rows). QK,
   softmax, PV and the rescale live in one loop body, so nothing goes back to GM between the
   attention stages. The first block assigns the running state, later blocks accumulate (no
   zero-init pass);
5. o_proj, then **reduction point 1** (tensor parallel: all-reduce of the partial o_proj);
6. residual, post-attention RMSNorm, gate|up fused in one matmul, SiLU·up, down_proj, then
   **reduction point 2** (all-reduce of the partial down_proj), residual.

The two reduction points are where :func:`build_decode_attention` and :func:`build_decode_mlp`
meet: a sharded build (one program per half and rank, a collective between) composes the
same blocks. Hidden size and heads x head_dim are separate throughout (32B: 5120 vs 8192).
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

from dataclasses import dataclass
from typing import Any

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.kernels import blocks
from qwenlayers.core.kernels.layer_blocks import (
    LayerTiles,
    decode_weight_layout,
    mlp_half,
    o_proj_out,
    project_qkv,
)
from qwenlayers.core.kernels.online_softmax import online_softmax_fn
from qwenlayers.core.kernels.paged_decode import paged_flash_decode_fn
from qwenlayers.core.tiling import TilingPlan, batch_tile_rows


@dataclass(frozen=True)
class DecodeShape:
    """Static shape of one decode build: the batch rows it is compiled for, the cache length,
    and the TILELET of the budget set in use (0: no bound), which bounds the tiles the batch
    sizes (``core.tiling.batch_tile_rows``).

    The cache write is a [rows, head_dim] bf16 vector tile over the B*KVH new K/V rows, so unlike
    the plan's tiles it grows with the batch. Unbounded, tiny at B=1,024 (2,048 rows x 64, 256 KB)
    failed pypto's UB check (``checkOpBufferSize``: over a 248 KB UB) inside its compile."""

    batch: int
    max_seq: int
    tilelet_bytes: int = 0
    block: int = 0  # a paged cache (core.paged): rows per block; 0: contiguous caches
    num_blocks: int = 0  # blocks in the pools the kernel gets
    max_blocks: int = 1  # table entries per row: paged, the head table's width (whole iterations of blocks)

    def table_dims(self, kv_heads: int) -> tuple[int, int]:
        """The table argument: paged, the head table [B*KVH, max_blocks]
        (:func:`~qwenlayers.core.kernels.paged_decode.paged_head_table`); contiguous, a [B, 1]
        table the kernel never reads."""
        return (self.batch * kv_heads, self.max_blocks) if self.block else (self.batch, self.max_blocks)

    def cache_shape(self, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        """The caches as the kernel sees them: contiguous [B*KVH, MAX_SEQ, D]; paged, the pools'
        rows [num_blocks*KVH*BLOCK, D], the form the table gathers read (core.kernels.paged_decode)."""
        if self.block:
            return (self.num_blocks * kv_heads * self.block, head_dim)
        return (self.batch * kv_heads, self.max_seq, head_dim)


def paged_write_index(seq_lens: Any, block_table: Any, kv_heads: int, block: int) -> tuple[Any, Any]:
    """(pool rows, slots) int32 [B*KVH]: the row of the pools viewed [num_blocks*KVH*BLOCK, D]
    where each head's new row goes, ``(block_table[b, (seq_len-1) // BLOCK] * KVH + h) * BLOCK
    + (seq_len-1) % BLOCK``, and that slot. The paged kernel's scatter reads the rows only."""
    import torch

    lens = torch.as_tensor(seq_lens, dtype=torch.int64)
    last = lens - 1
    blocks = torch.as_tensor(block_table)[torch.arange(lens.numel()), last // block].to(torch.int64)
    heads = (blocks[:, None] * kv_heads + torch.arange(kv_heads)).reshape(-1)
    slots = (last % block).repeat_interleave(kv_heads)
    return (heads * block + slots).to(torch.int32).contiguous(), slots.to(torch.int32).contiguous()


def cache_write_index(seq_lens: Any, kv_heads: int) -> tuple[Any, Any]:
    """(write_heads, write_rows) int32 [B*KVH]: cache head row b*KVH+h gets its new K/V at row
    seq_len[b]-1. Host-side, from the same seq_lens the kernel gets."""
    import torch

    lens = torch.as_tensor(seq_lens, dtype=torch.int32)
    heads = torch.arange(lens.numel() * kv_heads, dtype=torch.int32)
    return heads, (lens - 1).repeat_interleave(kv_heads).to(torch.int32).contiguous()


def _flash_decode_fn(cfg: Qwen3Config, t: LayerTiles, shape: DecodeShape) -> Any:
    """The cache write and flash-decode loop as a pypto inline function (``@pypto.frontend.function``):
    pypto's frontend parses loops and ``if`` on loop state only in parsed bodies, and this one
    body is shared by every program that runs the attention. A paged cache gets its own loop
    (:mod:`qwenlayers.core.kernels.paged_decode`) with the same arguments."""
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    b_rows, kvh, g, d = shape.batch, cfg.num_key_value_heads, cfg.group_size, cfg.head_dim
    st, kb, qhb, scale = t.seq_tile, t.kv_block, t.q_head_batch, d**-0.5
    pv_l1, qk, qk_k0 = t.pv_k_l1, t.qk_cols, t.qk_k_l0
    heads = b_rows * kvh
    cache_dims, table_dims = shape.cache_shape(kvh, d), shape.table_dims(kvh)
    write_tile = batch_tile_rows(2 * d, shape.tilelet_bytes, heads)  # not "write_rows": that name is an argument below
    if shape.block:
        if kb % shape.block:
            raise ValueError(f"a paged decode reads whole blocks per attention iteration: kv_block {kb} is not a multiple of "
                             f"block {shape.block}")
        return paged_flash_decode_fn((b_rows, kvh, g, d), t, (cache_dims[0], shape.block, table_dims[1]), write_tile)
    softmax_step = online_softmax_fn((kvh, g), kb, d, ([g, g], [st, pv_l1], [d, d]), (1, qhb, d))

    @pypto.frontend.function
    def flash_decode(
        q_groups: pypto.Tensor((heads, g, d), bf16),
        k_new: pypto.Tensor((heads, 1, d), bf16),
        v_new: pypto.Tensor((heads, 1, d), bf16),
        k_cache: pypto.Tensor(cache_dims, bf16),
        v_cache: pypto.Tensor(cache_dims, bf16),
        block_table: pypto.Tensor(table_dims, i32),
        seq_lens: pypto.Tensor((b_rows,), i32),
        write_heads: pypto.Tensor((heads,), i32),
        write_rows: pypto.Tensor((heads,), i32),
        attn: pypto.Tensor((heads, g, d), bf16),
    ):
        # pypto re-reads the annotations from the closure when inlining; names only used there
        # are not closure cells unless the body mentions them
        _annotation_names = (heads, bf16, i32, cache_dims, table_dims)  # noqa: F841
        # The cache write: every sequence's new row in one scatter before the attention loop.
        # Written per sequence inside the loop (pypto-lib's and the spike's shape), each write
        # orders all later cache reads behind it and the sequences run one after another:
        # 0.6B, 16 x 16 tokens simulated 1008 us that way, 394 us with the one scatter.
        pypto.set_vec_tile_shapes(write_tile, d)
        pypto.index_put_(k_cache, (write_heads, write_rows), pypto.reshape(k_new, [heads, d]))
        pypto.index_put_(v_cache, (write_heads, write_rows), pypto.reshape(v_new, [heads, d]))
        for b in pypto.loop(b_rows, name="LOOP_seq", idx_name="b"):
            length = seq_lens[b]
            qg = pypto.view(q_groups, [kvh, g, d], [b * kvh, 0, 0])
            acc = pypto.tensor([kvh, g, d], fp32, "acc")
            m_i = pypto.tensor([kvh, g, 1], fp32, "m_i")
            l_i = pypto.tensor([kvh, g, 1], fp32, "l_i")
            # KV_BLOCK rows per iteration (seq_tile-wide tiles inside it): the online-softmax
            # chain is ceil(L / KV_BLOCK) long, not ceil(L / SEQ_TILE). The iteration's rows are
            # a view taken here, straight from the full cache (a view taken in an outer body is
            # materialised as a copy, spike: 5.6x more tasks).
            for blk in pypto.loop((length + kb - 1) // kb, name="LOOP_kv", idx_name="blk"):
                valid = (length - blk * kb).min(kb)
                # QK_COLS cache rows per cube step in one copy, head_dim split to keep the L0 tile
                pypto.set_cube_tile_shapes([g, g], [qk_k0, d], [qk, qk])
                k_blk = pypto.view(k_cache, [kvh, kb, d], [b * kvh, blk * kb, 0], valid_shape=[kvh, valid, d])
                s = pypto.matmul(qg, k_blk, fp32, b_trans=True)  # [KVH, G, KB]
                s = pypto.view(s, [kvh, g, kb], [0, 0, 0], valid_shape=[kvh, g, valid])
                pypto.set_vec_tile_shapes(1, qhb, t.score_cols)
                s = s * scale
                v_blk = pypto.view(v_cache, [kvh, kb, d], [b * kvh, blk * kb, 0], valid_shape=[kvh, valid, d])
                softmax_step(s, v_blk, acc, m_i, l_i, blk)
                if pypto.is_loop_end(blk):
                    pypto.assemble(pypto.cast(acc / l_i, bf16), [b * kvh, 0, 0], attn)

    return flash_decode


def build_decode(config: Qwen3Config, shape: DecodeShape, plan: TilingPlan, *, jit_options: dict[str, Any]) -> Any:
    """A jit kernel for one decode step of ``shape.batch`` sequences: the whole layer.

    Arguments, in order: hidden [B, H], the :func:`decode_weight_layout` tensors, cos/sin
    [B, 1, D] fp32 (RoPE rows at position seq_len-1), k_cache/v_cache [B*KVH, MAX_SEQ, D]
    (written at row seq_len-1 only), seq_lens [B] int32, write_heads/write_rows [B*KVH] int32
    (:func:`cache_write_index`: where each head's new row goes), attn [B*KVH, G, D]
    (workspace the attention loop writes and o_proj reads), out [B, H].

    The attention output goes through a GM workspace argument, not a ``pypto.tensor``: a local
    tensor assembled inside a ``pypto.loop`` and read after it crashes pypto 0.2.0's runtime
    (SIGSEGV in ``DeviceSlotContext::FillInputOutputSlot``; workaround
    ``pypto-loop-results-through-gm``), the failure class reference 002 hit as lost elements.
    """
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    cfg, eps = config, config.rms_norm_eps
    b_rows, h, d, kvh, g = shape.batch, cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads, cfg.group_size
    lay = decode_weight_layout(cfg)
    t = LayerTiles(plan, cfg, b_rows)
    flash_decode = _flash_decode_fn(cfg, t, shape)

    @pypto.frontend.jit(**blocks.plan_jit_options(plan, jit_options))
    def qwen3_decode_layer(
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
        k_cache: pypto.Tensor(shape.cache_shape(kvh, d), bf16),
        v_cache: pypto.Tensor(shape.cache_shape(kvh, d), bf16),
        block_table: pypto.Tensor(shape.table_dims(kvh), i32),
        seq_lens: pypto.Tensor((b_rows,), i32),
        write_heads: pypto.Tensor((b_rows * kvh,), i32),
        write_rows: pypto.Tensor((b_rows * kvh,), i32),
        attn: pypto.Tensor((b_rows * kvh, g, d), bf16),
        out: pypto.Tensor((b_rows, h), bf16),
    ):
        blocks.merge_tasks(t.pass_options)
        w = {"w_ln1": w_ln1, "w_q": w_q, "w_kv": w_kv, "w_qn": w_qn, "w_kn": w_kn, "w_o": w_o,
             "w_ln2": w_ln2, "w_gu": w_gu, "w_down": w_down}
        q_groups, k_new, v_new = project_qkv(cfg, t, b_rows, eps, x, w, cos, sin)
        flash_decode(q_groups, k_new, v_new, k_cache, v_cache, block_table, seq_lens, write_heads, write_rows, attn)
        # reduction point 1 (a tensor-parallel rank stops before the residual: residual=False)
        resid = o_proj_out(t, x, pypto.reshape(attn, [b_rows, cfg.q_width]), w_o, True)
        down_part = mlp_half(cfg, t, eps, resid, w, cfg.intermediate_size)
        # reduction point 2: a tensor-parallel run all-reduces the MLP partials (build_decode_mlp)
        pypto.set_vec_tile_shapes(*t.hidden_vec)
        out[:] = blocks.residual_add(resid, down_part)

    return qwen3_decode_layer


def build_decode_attention(
    config: Qwen3Config, shape: DecodeShape, plan: TilingPlan, *, jit_options: dict[str, Any], residual: bool = True
) -> Any:
    """The layer up to reduction point 1 plus the residual: ``resid = x + o_proj(attention)``.

    Arguments as :func:`build_decode` without the MLP weights; the last is resid [B, H]. With
    :func:`build_decode_mlp` this is the layer in two programs, the split the runtime uses when
    one program's values would not fit a worker. ``residual=False`` stops *at* reduction point
    1: the last argument is the fp32 partial o_proj [B, H] of this rank's heads, which a
    tensor-parallel run all-reduces before the residual.
    """
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    cfg, eps = config, config.rms_norm_eps
    b_rows, h, d, kvh, g = shape.batch, cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads, cfg.group_size
    lay = decode_weight_layout(cfg)
    t = LayerTiles(plan, cfg, b_rows)
    flash_decode = _flash_decode_fn(cfg, t, shape)
    out_dtype = bf16 if residual else fp32

    @pypto.frontend.jit(**blocks.plan_jit_options(plan, jit_options))
    def qwen3_decode_attention(
        x: pypto.Tensor((b_rows, h), bf16),
        w_ln1: pypto.Tensor(lay["w_ln1"], bf16),
        w_q: pypto.Tensor(lay["w_q"], bf16),
        w_kv: pypto.Tensor(lay["w_kv"], bf16),
        w_qn: pypto.Tensor(lay["w_qn"], bf16),
        w_kn: pypto.Tensor(lay["w_kn"], bf16),
        w_o: pypto.Tensor(lay["w_o"], bf16),
        cos: pypto.Tensor((b_rows, 1, d), fp32),
        sin: pypto.Tensor((b_rows, 1, d), fp32),
        k_cache: pypto.Tensor(shape.cache_shape(kvh, d), bf16),
        v_cache: pypto.Tensor(shape.cache_shape(kvh, d), bf16),
        block_table: pypto.Tensor(shape.table_dims(kvh), i32),
        seq_lens: pypto.Tensor((b_rows,), i32),
        write_heads: pypto.Tensor((b_rows * kvh,), i32),
        write_rows: pypto.Tensor((b_rows * kvh,), i32),
        attn: pypto.Tensor((b_rows * kvh, g, d), bf16),
        resid: pypto.Tensor((b_rows, h), out_dtype),
    ):
        blocks.merge_tasks(t.pass_options)
        w = {"w_ln1": w_ln1, "w_q": w_q, "w_kv": w_kv, "w_qn": w_qn, "w_kn": w_kn}
        q_groups, k_new, v_new = project_qkv(cfg, t, b_rows, eps, x, w, cos, sin)
        flash_decode(q_groups, k_new, v_new, k_cache, v_cache, block_table, seq_lens, write_heads, write_rows, attn)
        resid[:] = o_proj_out(t, x, pypto.reshape(attn, [b_rows, cfg.q_width]), w_o, residual)

    return qwen3_decode_attention


def build_decode_mlp(config: Qwen3Config, rows: int, inter: int, plan: TilingPlan, *, jit_options: dict[str, Any],
                     token_tile: int = 0) -> Any:
    """Post-attention RMSNorm and the MLP over ``inter`` intermediate columns (one shard of
    them), up to reduction point 2: ``(resid [R, H], w_ln2 [1, H], w_gu [H, 2*inter],
    w_down [inter, H], part [R, H] fp32)``. The shards' fp32 parts sum to the down projection.

    ``token_tile`` > 0 (prefill: R packed tokens, a multiple of it) runs the rows in a
    ``pypto.loop`` over tiles of that many tokens, as the prefill program's loop C does, so
    the program (its compile and its tasks) grows with the tokens instead of being one static
    graph of all of them; 0 (decode: R is the batch) is one static program."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    cfg, eps, h = config, config.rms_norm_eps, config.hidden_size
    tt = token_tile if 0 < token_tile < rows else rows
    if rows % tt:
        raise ValueError(f"build_decode_mlp: rows={rows} is not a multiple of token_tile={tt}")
    t = LayerTiles(plan, cfg, tt)

    @pypto.frontend.jit(**blocks.plan_jit_options(plan, jit_options))
    def qwen3_decode_mlp(
        resid: pypto.Tensor((rows, h), bf16),
        w_ln2: pypto.Tensor((1, h), bf16),
        w_gu: pypto.Tensor((h, 2 * inter), bf16),
        w_down: pypto.Tensor((inter, h), bf16),
        part: pypto.Tensor((rows, h), fp32),
    ):
        blocks.merge_tasks(t.pass_options)
        w = {"w_ln2": w_ln2, "w_gu": w_gu, "w_down": w_down}
        if tt == rows:
            part[:] = mlp_half(cfg, t, eps, resid, w, inter, True)
        else:
            for i in pypto.loop(rows // tt, name="LOOP_tok_mlp", idx_name="i"):
                rt = pypto.view(resid, [tt, h], [i * tt, 0])
                pypto.assemble(mlp_half(cfg, t, eps, rt, w, inter, True), [i * tt, 0], part)

    return qwen3_decode_mlp
