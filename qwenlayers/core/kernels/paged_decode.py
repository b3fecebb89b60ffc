"""The flash-decode loop over paged KV caches: keys and values gathered through the block table
straight into the cube's L1.

A pool [num_blocks, KVH, BLOCK, D] seen as rows [num_blocks*KVH*BLOCK, D] holds token ``r`` of
sequence ``b``, head ``h`` at row ``(table[b, r // BLOCK] * KVH + h) * BLOCK + r % BLOCK``. The
host turns the block table into a *head table* [B*KVH, W] of ``table[b, j] * KVH + h``
(:func:`paged_head_table`), so that one table row and ``BLOCK`` name every row of one
(sequence, head): the form ``pypto.experimental.gather_in_l1`` reads. Each attention iteration
then gathers its KV_BLOCK rows of K (as the transposed B operand) and of V into L1, tile by
cube tile, and runs Q @ Kᵀ and P @ V as one matmul each, with the contiguous kernel's tiles.
The tiles need not fit inside a block: a gather tile's rows may come from several blocks.

How it is laid out, and what each choice measured (qwen3-0.6b decode 16 x 4096, 128-row
blocks, cost model, docs/paged.md):

* The first paged kernel read the blocks as views, one Q @ Kᵀ and one P @ V per block, the
  scores assembled in a GM workspace: its per-block tasks fanned out from the cache scatter by
  the thousand and the AICPU scheduler set its time, 2,326 µs against 437 µs contiguous.
* The pools come in as rows [num_blocks*KVH*BLOCK, D] (the cache write is a one-index scatter
  into them): a ``pypto.reshape`` of a three-dimensional pool argument is materialised as a
  copy of the whole pool, 989 µs instead of 196 µs at one sequence.
* A sequence's KV heads are unrolled inside its attention iteration, each a [G, ...] chain of
  its own (a gather is two-dimensional, so the contiguous kernel's [KVH, G, ...] batched matmul
  cannot take it): 16 loop bodies, as the contiguous kernel has. With the heads as a loop of
  their own, the 128 bodies (and their end-of-loop branches) ran in several of the runtime's
  stitched batches: 570 µs; unrolled, 436.4 µs.
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in parsed functions.

from typing import Any

from qwenlayers.core.kernels.online_softmax import online_softmax_fn


def paged_head_table(block_table: Any, kv_heads: int, per_iteration: int) -> Any:
    """int32 [B*KVH, W]: row ``b*KVH + h`` holds ``block_table[b, j] * KVH + h``, the pool's
    [BLOCK, D] tile of head ``h`` in block ``table[b, j]``. W is the caller's table width rounded
    up to whole attention iterations of ``per_iteration`` entries (KV_BLOCK / BLOCK), so every
    iteration's view of a row stays inside it. Entries past the caller's table and negative
    entries (serving stacks pad unused ones with -1) become block 0: they are never inside a
    sequence's length, but the gather's index tiles may name them."""
    import torch

    table = torch.as_tensor(block_table).to(torch.int64).clamp(min=0)
    batch, entries = table.shape
    per = max(1, per_iteration)
    width = -(-entries // per) * per
    padded = torch.zeros(batch, width, dtype=torch.int64)
    padded[:, :entries] = table
    heads = padded[:, None, :] * kv_heads + torch.arange(kv_heads)[None, :, None]
    return heads.reshape(batch * kv_heads, width).to(torch.int32).contiguous()


def paged_flash_decode_fn(dims: tuple[int, int, int, int], tiles: Any, pool: tuple[int, int, int], write_tile: int) -> Any:
    """The paged cache write and flash-decode loop as a pypto inline function.

    ``dims`` = (B, KVH, G, D); ``tiles`` the :class:`~qwenlayers.core.kernels.layer_blocks.LayerTiles`
    of the plan; ``pool`` = (pool rows ``num_blocks*KVH*BLOCK``, BLOCK, head-table width). Arguments
    as the contiguous loop's (:func:`qwenlayers.core.kernels.decode._flash_decode_fn`), with the
    pools as rows [num_blocks*KVH*BLOCK, D], ``write_heads`` their rows to write
    (:func:`~qwenlayers.core.kernels.decode.paged_write_index`; ``write_rows`` is not read) and
    the head table in place of the block table; ``write_tile`` rows per tile of the cache write."""
    import pypto

    bf16, fp32, i32 = pypto.DT_BF16, pypto.DT_FP32, pypto.DT_INT32
    b_rows, kvh, g, d = dims
    pool_rows, blk_rows, width = pool
    st, kb, qhb, scale = tiles.seq_tile, tiles.kv_block, tiles.q_head_batch, d**-0.5
    pv_l1, qk, qk_k0, score_cols = tiles.pv_k_l1, tiles.qk_cols, tiles.qk_k_l0, tiles.score_cols
    heads, per_iter = b_rows * kvh, kb // blk_rows
    qk_cube, pv_cube = ([g, g], [qk_k0, d], [qk, qk]), ([g, g], [st, pv_l1], [d, d])
    softmax_step = online_softmax_fn((g,), kb, d, pv_cube, (qhb, d))

    def head_states() -> tuple[list[Any], list[Any], list[Any]]:
        """Each KV head's running accumulator, max and sum, for one sequence's loop."""
        return ([pypto.tensor([g, d], fp32, "acc") for _ in range(kvh)], [pypto.tensor([g, 1], fp32, "m_i") for _ in range(kvh)],
                [pypto.tensor([g, 1], fp32, "l_i") for _ in range(kvh)])

    @pypto.frontend.function
    def paged_flash_decode(
        q_groups: pypto.Tensor((heads, g, d), bf16),
        k_new: pypto.Tensor((heads, 1, d), bf16),
        v_new: pypto.Tensor((heads, 1, d), bf16),
        k_cache: pypto.Tensor((pool_rows, d), bf16),
        v_cache: pypto.Tensor((pool_rows, d), bf16),
        head_table: pypto.Tensor((heads, width), i32),
        seq_lens: pypto.Tensor((b_rows,), i32),
        write_heads: pypto.Tensor((heads,), i32),
        write_rows: pypto.Tensor((heads,), i32),
        attn: pypto.Tensor((heads, g, d), bf16),
    ):
        # pypto re-reads the annotations from the closure when inlining, and an inlined body's
        # names leak into the caller's scope (a local "out" replaced the layer's output
        # argument): every local here carries a pd_ prefix (online_softmax module doc)
        _annotation_names = (heads, g, d, pool_rows, width, b_rows, bf16, i32, head_states)  # noqa: F841
        pypto.set_vec_tile_shapes(write_tile, d)
        pypto.index_put_(k_cache, (write_heads,), pypto.reshape(k_new, [heads, d]))
        pypto.index_put_(v_cache, (write_heads,), pypto.reshape(v_new, [heads, d]))
        pd_q_rows = pypto.reshape(q_groups, [heads * g, d])
        # token offsets 0..KV_BLOCK-1 inside one iteration's table entries
        pypto.set_vec_tile_shapes(kb)
        pd_positions = pypto.reshape(pypto.arange(kb), [1, kb])
        for b in pypto.loop(b_rows, name="LOOP_seq", idx_name="b"):
            pd_length = seq_lens[b]
            pd_acc, pd_m_i, pd_l_i = head_states()
            for blk in pypto.loop((pd_length + kb - 1) // kb, name="LOOP_kv", idx_name="blk"):
                pd_valid = (pd_length - blk * kb).min(kb)
                pd_rows = pypto.view(pd_positions, [1, kb], [0, 0], valid_shape=[1, pd_valid])
                for hd in range(kvh):
                    pd_bh = b * kvh + hd
                    pd_qg = pypto.view(pd_q_rows, [g, d], [pd_bh * g, 0])
                    pd_entries = pypto.view(head_table, [1, per_iter], [pd_bh, blk * per_iter])
                    pypto.set_cube_tile_shapes(*qk_cube)
                    pd_k_t = pypto.experimental.gather_in_l1(k_cache, pd_rows, pd_entries, blk_rows, d, True, True)
                    pd_s = pypto.matmul(pd_qg, pd_k_t, fp32, b_trans=True)
                    pd_s = pypto.view(pd_s, [g, kb], [0, 0], valid_shape=[g, pd_valid])
                    pypto.set_vec_tile_shapes(qhb, score_cols)
                    pd_s = pd_s * scale
                    pypto.set_cube_tile_shapes(*pv_cube)
                    pd_vb = pypto.experimental.gather_in_l1(v_cache, pd_rows, pd_entries, blk_rows, d, True, False)
                    softmax_step(pd_s, pd_vb, pd_acc[hd], pd_m_i[hd], pd_l_i[hd], blk)
                if pypto.is_loop_end(blk):
                    for hd in range(kvh):
                        pd_out = pypto.reshape(pypto.cast(pd_acc[hd] / pd_l_i[hd], bf16), [1, g, d])
                        pypto.assemble(pd_out, [b * kvh + hd, 0, 0], attn)

    return paged_flash_decode
