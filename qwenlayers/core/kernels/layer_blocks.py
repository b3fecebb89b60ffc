"""The layer blocks both phases build from: the packed weight order, the plan's tile shapes
(:class:`LayerTiles`), and the norm + Q/K/V projections + q/k norm + RoPE front, o_proj with its
residual, and the MLP half. ``decode.py`` and ``prefill.py`` compose them around their own
attention; the reference-schedule baseline reuses the front's q/k norm + RoPE."""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

from typing import Any

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.kernels import blocks
from qwenlayers.core.kernels.blocks import CubeTiles
from qwenlayers.core.tiling import TilingPlan


def decode_weight_layout(config: Qwen3Config) -> dict[str, tuple[int, ...]]:
    """Kernel-side weight tensors (see :func:`qwenlayers.core.packing.pack_layer`) and their shapes,
    in the order every layer kernel takes them."""
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    return {
        "w_ln1": (1, h),
        "w_q": (h, config.q_width),
        "w_kv": (h, 2 * config.kv_width),
        "w_qn": (1, d),
        "w_kn": (1, d),
        "w_o": (config.q_width, h),
        "w_ln2": (1, h),
        "w_gu": (h, 2 * i),
        "w_down": (i, h),
    }


def _row_tile(width: int, unit: int, units: int) -> int:
    """The widest multiple of ``unit``, at most ``units`` of them, that divides ``width``."""
    return max(f * unit for f in range(1, units + 1) if width % (f * unit) == 0)


class LayerTiles:
    """The plan's values turned into pypto tile shapes for one build."""

    def __init__(self, plan: TilingPlan, config: Qwen3Config, rows: int) -> None:
        self.rows = min(plan.tok_tile, rows)
        p, m, h = plan, min(plan.cube_m, rows), config.hidden_size
        self.q_proj = CubeTiles(m, p.k_chunk, p.q_out_chunk, min(p.k_l1, h))
        self.kv_proj = CubeTiles(m, p.k_chunk, p.kv_out_chunk, min(p.k_l1, h))
        self.o_proj = CubeTiles(m, p.q_out_chunk, p.k_chunk, min(p.k_l1, config.q_width))
        self.gate_up = CubeTiles(m, p.k_chunk, p.mlp_out_chunk, min(p.k_l1, h))
        self.down = CubeTiles(m, p.mlp_out_chunk, p.k_chunk, min(p.k_l1, config.intermediate_size))
        # The [rows, H] ops (RMSNorm, residuals) run in one-row tiles of the same bytes as the
        # plan's [tok_tile, k_chunk] tile: pypto gives each row its own task instead of one task
        # per tok_tile rows, and a row's reduction still stays in one task. qwen3-8b 16 x 4096
        # (cost model): the input RMSNorm went from 4 tasks of 47k cycles to 16 of 12k, the step
        # from 1,201 to 1,147 us. SwiGLU (elementwise) gained nothing from it at 8B and lost at a
        # tp=8 32B shard (3,200 columns: 142 -> 151 us, compile 15 -> 23 s), so it keeps its tile.
        # Where whole rows fit the tile, it holds as many as fit (prefill token tiles: 128 one-row
        # tasks of the final residual took 60k cycles of a 0.6B 128-token prefill, bound by the
        # scheduler's dispatch rate); decode's [tok_tile, k_chunk] is below one row, so it keeps one-row tiles.
        cols = _row_tile(h, p.k_chunk, self.rows)
        fit = p.tok_tile * p.k_chunk // h if cols == h else 1
        self.hidden_vec = (max(r for r in range(1, max(1, min(fit, self.rows)) + 1) if self.rows % r == 0), cols)
        self.mlp_vec = (self.rows, p.mlp_out_chunk)
        self.head_vec = (p.q_head_batch, config.head_dim)  # per-head rows [R, D]
        self.seq_tile = p.seq_tile
        self.kv_block = p.kv_block
        self.score_cols = p.score_cols  # decode softmax vector tile columns (SEQ_TILE-wide cube tiles)
        self.pv_k_l1 = p.pv_k_l1  # P @ V stages this many of the KV_BLOCK rows in L1, as the projections stage K
        self.qk_cols, self.qk_k_l0 = p.qk_cols, p.qk_k_l0(config.head_dim)  # Q @ K^T: L1 rows, L0 head_dim split
        self.q_head_batch = p.q_head_batch
        self.pass_options = p.pass_options()


def project_qkv(cfg: Qwen3Config, t: LayerTiles, b_rows: int, eps: float, x: Any, w: dict[str, Any], cos: Any, sin: Any) -> Any:
    """Steps 1-3: returns (q_groups [B*KVH, G, D], k_new [B*KVH, 1, D], v_new [B*KVH, 1, D]), bf16."""
    import pypto

    fp32 = pypto.DT_FP32
    kvh, d, g, kw = cfg.num_key_value_heads, cfg.head_dim, cfg.group_size, cfg.kv_width
    pypto.set_vec_tile_shapes(*t.hidden_vec)
    h = blocks.rms_norm_rows(pypto.cast(x, fp32), w["w_ln1"], cfg.hidden_size, eps)
    q = blocks.linear(h, w["w_q"], t.q_proj)  # [B, NH*D]
    # K and V as two matmuls over column views of the packed weight, not one matmul and two
    # views of its output: a view of a matmul output that is then reshaped gets materialised
    # by 32-byte copies (qwen3-0.6b, 16 rows: 8,192 copies, ~30 % of the step's simulated time)
    hidden = cfg.hidden_size
    k = blocks.linear(h, pypto.view(w["w_kv"], [hidden, kw], [0, 0]), t.kv_proj)  # [B, KVH*D]
    v = blocks.linear(h, pypto.view(w["w_kv"], [hidden, kw], [0, kw]), t.kv_proj)

    q_rot, k_rot = qk_norm_rope(cfg, t, b_rows, eps, q, k, w["w_qn"], w["w_kn"], cos, sin)
    q_groups = pypto.reshape(q_rot, [b_rows * kvh, g, d])  # the G query heads of each KV head
    k_new = pypto.reshape(k_rot, [b_rows * kvh, 1, d])
    v_new = pypto.reshape(v, [b_rows * kvh, 1, d])
    return q_groups, k_new, v_new


def qk_norm_rope(cfg: Qwen3Config, t: LayerTiles, rows: int, eps: float, q: Any, k: Any, w_qn: Any, w_kn: Any,
                 cos: Any, sin: Any) -> tuple[Any, Any]:
    """Step 3: per-head q_norm / k_norm and RoPE of q [rows, NH*D] and k [rows, KVH*D] (bf16);
    returns (q [rows, NH, D], k [rows, KVH, D]), bf16."""
    import pypto

    fp32 = pypto.DT_FP32
    nh, kvh, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    pypto.set_vec_tile_shapes(*t.head_vec)
    q_heads = blocks.rms_norm_rows(pypto.cast(pypto.reshape(q, [rows * nh, d]), fp32), w_qn, d, eps)
    k_heads = blocks.rms_norm_rows(pypto.cast(pypto.reshape(k, [rows * kvh, d]), fp32), w_kn, d, eps)
    out = []
    for heads, normed in ((nh, q_heads), (kvh, k_heads)):
        # RoPE tiles of Q_HEAD_BATCH head rows: [1, Q_HEAD_BATCH, D], or whole tokens' heads when a
        # token has fewer (0.6B prefill, 16 query heads: [4, 16, D] instead of [1, 16, D], a quarter of the tasks)
        per = max(r for r in range(1, max(1, min(t.head_vec[0] // heads, rows)) + 1) if rows % r == 0)
        pypto.set_vec_tile_shapes(per, min(t.head_vec[0], heads), d)
        out.append(blocks.rope(pypto.reshape(normed, [rows, heads, d]), cos, sin, d))
    return out[0], out[1]


def mlp_half(cfg: Qwen3Config, t: LayerTiles, eps: float, residual: Any, w: dict[str, Any], inter: int, fp32_out: bool = False) -> Any:
    """Step 6 up to reduction point 2 over ``inter`` intermediate columns (all of them, or one
    shard's): the (partial) down_proj output [rows, H]."""
    import pypto

    rows = residual.shape[0]
    pypto.set_vec_tile_shapes(*t.hidden_vec)
    h = blocks.rms_norm_rows(pypto.cast(residual, pypto.DT_FP32), w["w_ln2"], cfg.hidden_size, eps)
    gu = blocks.linear(h, w["w_gu"], t.gate_up)  # [rows, 2*inter]: gate | up
    pypto.set_vec_tile_shapes(*t.mlp_vec)
    act = blocks.swiglu(pypto.view(gu, [rows, inter], [0, 0]), pypto.view(gu, [rows, inter], [0, inter]))
    return blocks.linear(act, w["w_down"], t.down, fp32_out=fp32_out)


def o_proj_out(t: LayerTiles, x: Any, attn_rows: Any, w_o: Any, residual: bool) -> Any:
    """Step 5: ``x + o_proj(attn)`` in bf16, or (``residual=False``, a tensor-parallel rank)
    the fp32 partial o_proj that the all-reduce of reduction point 1 sums."""
    import pypto

    if not residual:
        return blocks.linear(attn_rows, w_o, t.o_proj, fp32_out=True)
    o_part = blocks.linear(attn_rows, w_o, t.o_proj)
    pypto.set_vec_tile_shapes(*t.hidden_vec)
    return blocks.residual_add(x, o_part)
