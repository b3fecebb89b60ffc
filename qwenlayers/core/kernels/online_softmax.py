"""One key block of flash attention's online softmax, shared by the decode and prefill programs.

Both attentions run a loop over key blocks whose iterations carry a running max ``m``, sum ``l``
and accumulator ``acc``: the first block assigns them, every later block rescales and adds.
Only the shapes (decode: one sequence's KV groups [KVH, G, ...]; prefill: one KV head's query
rows of a query tile [ST*G, ...]) and the tiles differ, so the step is built per shape by
:func:`online_softmax_fn`.

It is a ``@pypto.frontend.function`` and not a plain helper because pypto 0.2.0 parses
``if pypto.is_loop_begin(...)`` only in parsed bodies (a helper fails with ``Not concrete
value``); its tensor parameters come first and the loop index last (the parser's rule for
non-tensor parameters). The caller's views keep their ``valid_shape`` through the call, so
columns past a sequence's length stay out of the max and the sum. Parameter names carry an
``os_`` prefix: an inlined function's parameter names leak into the caller's scope
(docs/decode.md, pypto 0.2.0 notes).
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in parsed functions.

from typing import Any

TileShapes = tuple[list[int], list[int], list[int]]


def online_softmax_fn(rows: tuple[int, ...], key_block: int, head_dim: int, pv_cube: TileShapes,
                      acc_vec: tuple[int, ...]) -> Any:
    """The step for scores ``rows + (key_block,)`` fp32 (scaled, masked, with their valid shape)
    against a value block ``rows[:-1] + (key_block, head_dim)`` bf16, updating ``acc`` (``rows +
    (head_dim,)``), ``m`` and ``l`` (``rows + (1,)``) fp32 in place. ``pv_cube`` are the P @ V
    cube tile shapes, ``acc_vec`` the vector tile of the accumulator's update; the scores' ops
    run in the vector tile the caller set."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    score_shape, value_shape = (*rows, key_block), (*rows[:-1], key_block, head_dim)
    acc_shape, state_shape = (*rows, head_dim), (*rows, 1)

    @pypto.frontend.function
    def online_softmax_step(
        os_s: pypto.Tensor(score_shape, fp32),
        os_v: pypto.Tensor(value_shape, bf16),
        os_acc: pypto.Tensor(acc_shape, fp32),
        os_m: pypto.Tensor(state_shape, fp32),
        os_l: pypto.Tensor(state_shape, fp32),
        os_blk,
    ):
        _annotation_names = (score_shape, value_shape, acc_shape, state_shape, bf16)  # noqa: F841 (see module doc)
        m_blk = pypto.amax(os_s, -1, keepdim=True)
        if pypto.is_loop_begin(os_blk):  # the first block assigns the running state
            p = pypto.exp(os_s - m_blk)
            os_l[:] = pypto.sum(p, -1, keepdim=True)
            os_m[:] = m_blk
            pypto.set_cube_tile_shapes(*pv_cube)
            o = pypto.matmul(pypto.cast(p, bf16), os_v, fp32)
            pypto.set_vec_tile_shapes(*acc_vec)
            os_acc[:] = o
        else:  # later blocks rescale and accumulate
            m_new = pypto.maximum(os_m, m_blk)
            p = pypto.exp(os_s - m_new)
            alpha = pypto.exp(os_m - m_new)
            os_l[:] = os_l * alpha + pypto.sum(p, -1, keepdim=True)
            os_m[:] = m_new
            pypto.set_cube_tile_shapes(*pv_cube)
            o = pypto.matmul(pypto.cast(p, bf16), os_v, fp32)
            pypto.set_vec_tile_shapes(*acc_vec)
            os_acc[:] = os_acc * alpha + o

    return online_softmax_step
