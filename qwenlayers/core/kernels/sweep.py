"""Stage kernels of the layer at one tile size each: what a target's tile budgets are chosen from.

Each builder emits one stage of the Qwen3 layer with the same blocks the layer kernels use
(:mod:`qwenlayers.core.kernels.blocks`), with its vector tile (or cube L0 tiles) sized to a
byte budget instead of a plan. ``benchmarks/budget_sweep.py`` times them on a target's cost
model at 32B shapes, so a plugin's ``Budgets`` are a measured choice for its target and
compiler, not a copied rule. A tile that does not fit a buffer fails at compile (pypto names
the buffer only in its plog); the sweep records that as the limit.
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

from dataclasses import dataclass
from typing import Any

from qwenlayers.core.kernels import blocks

#: The stages a sweep can time, with what each one is in the layer.
STAGES: dict[str, str] = {
    "rmsnorm": "input / post-attention RMSNorm of [rows, hidden] (one-row tiles, as the layer's [rows, H] ops)",
    "qk_norm_rope": "per-head q_norm and RoPE of [rows, heads, head_dim]",
    "softmax": "prefill attention softmax of one query tile's scores [rows, key block] fp32",
    "swiglu": "SiLU(gate) * up over [rows, intermediate]",
    "projection": "a bf16 projection [rows, in] x [in, out] on the cube (L0A/L0B tiles at the budget)",
}


@dataclass(frozen=True)
class StageShape:
    """Tensor sizes of one stage kernel (``rows`` x ``width``; ``out`` only for projections,
    ``heads`` only for qk_norm_rope)."""

    stage: str
    rows: int
    width: int
    out: int = 0
    heads: int = 0


def _largest_divisor(n: int, at_most: int, multiple_of: int = 1) -> int:
    """The largest divisor of ``n`` that is a multiple of ``multiple_of`` and at most ``at_most``
    (``multiple_of`` when none is)."""
    best = multiple_of
    for c in range(multiple_of, min(n, at_most) + 1, multiple_of):
        if n % c == 0:
            best = c
    return best


def vector_tile(shape: StageShape, tile_bytes: int) -> tuple[int, ...]:
    """The vector tile a stage runs in under a TILELET budget of ``tile_bytes`` (fp32 elements):
    whole rows where a row fits, else the widest 128-column slice of one row that fits."""
    elems = max(8, tile_bytes // 4)
    if shape.stage == "qk_norm_rope":  # [rows*heads, D] rows of one head each
        heads = _largest_divisor(shape.rows * shape.heads, max(1, elems // shape.width))
        return (heads, shape.width)
    if elems >= shape.width:
        return (_largest_divisor(shape.rows, elems // shape.width), shape.width)
    return (1, _largest_divisor(shape.width, elems, min(128, shape.width)))


def cube_tiles(rows: int, tile_bytes: int) -> blocks.CubeTiles:
    """L0 tiles of a bf16 projection under a TILE budget of ``tile_bytes`` per L0A/L0B operand:
    m rows (the activation rows, up to 128), then the largest k (up to 256) and n (up to 256) whose
    [m, k] and [k, n] bf16 tiles fit; L1 stages 512 reduction columns ((m + n) x 512 bf16 <= 512 KB)."""
    elems = tile_bytes // 2
    m = min(rows, 128)
    k = max(16, min(256, elems // m))
    n = max(16, min(256, elems // k))
    k_l1 = max(k, 512 // k * k)
    return blocks.CubeTiles(m, k, n, k_l1)


def build_stage(shape: StageShape, tile_bytes: int, *, jit_options: dict[str, Any]) -> tuple[Any, list[tuple[tuple[int, ...], str]]]:
    """A jit kernel of one stage at one tile budget, and its argument shapes and dtypes (in order)."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    r, w = shape.rows, shape.width
    eps = 1e-6

    if shape.stage == "rmsnorm":
        tile = vector_tile(shape, tile_bytes)

        @pypto.frontend.jit(**jit_options)
        def rmsnorm(x: pypto.Tensor((r, w), bf16), g: pypto.Tensor((1, w), bf16), out: pypto.Tensor((r, w), bf16)):
            pypto.set_vec_tile_shapes(*tile)
            out[:] = blocks.rms_norm_rows(pypto.cast(x, fp32), g, w, eps)

        return rmsnorm, [((r, w), "bf16"), ((1, w), "bf16"), ((r, w), "bf16")]

    if shape.stage == "qk_norm_rope":
        heads = shape.heads
        tile = vector_tile(shape, tile_bytes)

        @pypto.frontend.jit(**jit_options)
        def qk_norm_rope(x: pypto.Tensor((r, heads * w), bf16), g: pypto.Tensor((1, w), bf16),
                         cos: pypto.Tensor((r, 1, w), fp32), sin: pypto.Tensor((r, 1, w), fp32),
                         out: pypto.Tensor((r, heads, w), bf16)):
            pypto.set_vec_tile_shapes(*tile)
            normed = blocks.rms_norm_rows(pypto.cast(pypto.reshape(x, [r * heads, w]), fp32), g, w, eps)
            pypto.set_vec_tile_shapes(max(1, tile[0] // heads), min(tile[0], heads), w)
            out[:] = blocks.rope(pypto.reshape(normed, [r, heads, w]), cos, sin, w)

        return qk_norm_rope, [((r, heads * w), "bf16"), ((1, w), "bf16"), ((r, 1, w), "fp32"), ((r, 1, w), "fp32"),
                              ((r, heads, w), "bf16")]

    if shape.stage == "softmax":
        tile = vector_tile(shape, tile_bytes)

        @pypto.frontend.jit(**jit_options)
        def softmax(s: pypto.Tensor((r, w), fp32), mask: pypto.Tensor((r, w), fp32), out: pypto.Tensor((r, w), bf16)):
            pypto.set_vec_tile_shapes(*tile)
            x = s * 0.088 + mask
            p = pypto.exp(x - pypto.amax(x, -1, keepdim=True))
            out[:] = pypto.cast(p / pypto.sum(p, -1, keepdim=True), bf16)

        return softmax, [((r, w), "fp32"), ((r, w), "fp32"), ((r, w), "bf16")]

    if shape.stage == "swiglu":
        tile = vector_tile(shape, tile_bytes)

        @pypto.frontend.jit(**jit_options)
        def swiglu(gate: pypto.Tensor((r, w), bf16), up: pypto.Tensor((r, w), bf16), out: pypto.Tensor((r, w), bf16)):
            pypto.set_vec_tile_shapes(*tile)
            out[:] = blocks.swiglu(gate, up)

        return swiglu, [((r, w), "bf16"), ((r, w), "bf16"), ((r, w), "bf16")]

    if shape.stage == "projection":
        n_out = shape.out
        tiles = cube_tiles(r, tile_bytes)

        @pypto.frontend.jit(**jit_options)
        def projection(x: pypto.Tensor((r, w), bf16), wt: pypto.Tensor((w, n_out), bf16), out: pypto.Tensor((r, n_out), bf16)):
            out[:] = blocks.linear(x, wt, tiles)

        return projection, [((r, w), "bf16"), ((w, n_out), "bf16"), ((r, n_out), "bf16")]

    raise ValueError(f"stage {shape.stage!r}; allowed: {', '.join(STAGES)}")
