"""Micro-kernels that measure a platform: GM streaming and cube throughput (for the roofline).

Tile shapes here are chosen for throughput, not by a layer plan: these measure the machine.
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

from typing import Any


def build_stream(rows: int, cols: int, *, jit_options: dict[str, Any]) -> Any:
    """``out = x * 1`` over a bf16 [rows, cols] tensor: reads and writes every byte once."""
    import pypto

    bf16 = pypto.DT_BF16

    @pypto.frontend.jit(**jit_options)
    def stream(x: pypto.Tensor((rows, cols), bf16), out: pypto.Tensor((rows, cols), bf16)):
        pypto.set_vec_tile_shapes(64, 512)
        out[:] = x * 1.0

    return stream


def build_cube(m: int, k: int, n: int, *, jit_options: dict[str, Any]) -> Any:
    """A bf16 [m, k] x [k, n] matmul with fp32 output and large cube tiles."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32

    @pypto.frontend.jit(**jit_options)
    def cube(a: pypto.Tensor((m, k), bf16), b: pypto.Tensor((k, n), bf16), out: pypto.Tensor((m, n), fp32)):
        pypto.set_cube_tile_shapes([128, 128], [128, 512], [256, 256])
        out[:] = pypto.matmul(a, b, fp32)

    return cube


def build_weight_stream(rows: int, k: int, n: int, *, jit_options: dict[str, Any]) -> Any:
    """``out = a @ w`` with few rows (a decode projection): the [k, n] bf16 weight streams from GM
    through the cube's L1 path, which the vector stream above does not use. The layer moves its
    weights and KV cache this way, so the bandwidth it can reach is the larger of the two."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32

    @pypto.frontend.jit(**jit_options)
    def weight_stream(a: pypto.Tensor((rows, k), bf16), w: pypto.Tensor((k, n), bf16), out: pypto.Tensor((rows, n), fp32)):
        pypto.set_cube_tile_shapes([rows, rows], [128, 1024], [128, 128])
        out[:] = pypto.matmul(a, w, fp32)

    return weight_stream


#: Vector ops per element of :func:`build_vector`: enough that the chain, not GM, sets the time.
VECTOR_CHAIN = 16
VECTOR_OPS_PER_ELEMENT = 2 * VECTOR_CHAIN


def build_vector(rows: int, cols: int, *, jit_options: dict[str, Any]) -> Any:
    """``y = y * 0.5 + x``, VECTOR_CHAIN times, in fp32: many vector ops per element read from GM once."""
    import pypto

    fp32 = pypto.DT_FP32

    @pypto.frontend.jit(**jit_options)
    def vector(x: pypto.Tensor((rows, cols), fp32), out: pypto.Tensor((rows, cols), fp32)):
        pypto.set_vec_tile_shapes(32, 512)
        y = x * 0.5 + x
        for _ in range(VECTOR_CHAIN - 1):
            y = y * 0.5 + x
        out[:] = y

    return vector
