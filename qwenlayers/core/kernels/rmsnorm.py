"""RMSNorm over rows: the smoke kernel that proves the runtime (the first block of the layer)."""

# No `from __future__ import annotations` here: pypto reads the jit signature annotations as objects.

from typing import Any


def build_rmsnorm(tokens: int, hidden: int, eps: float, *, vec_tile: tuple[int, int], jit_options: dict[str, Any]) -> "Any":
    """A jit kernel ``(x [T,H] bf16, g [1,H] bf16, out [T,H] bf16)`` computing
    ``g * bf16(x * rsqrt(mean(x^2) + eps))`` with fp32 statistics, as the golden does."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    inv_h = 1.0 / hidden

    @pypto.frontend.jit(**jit_options)
    def rmsnorm(
        x: pypto.Tensor((tokens, hidden), bf16),
        g: pypto.Tensor((1, hidden), bf16),
        out: pypto.Tensor((tokens, hidden), bf16),
    ):
        pypto.set_vec_tile_shapes(vec_tile[0], vec_tile[1])
        xf = pypto.cast(x, fp32)
        mean_sq = pypto.sum(xf * xf, -1, keepdim=True) * inv_h
        normed = pypto.cast(xf * pypto.rsqrt(mean_sq + eps), bf16)
        out[:] = pypto.cast(pypto.cast(normed, fp32) * pypto.cast(g, fp32), bf16)

    return rmsnorm
