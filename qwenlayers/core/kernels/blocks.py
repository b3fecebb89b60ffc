"""Building blocks of the Qwen3 layer as pypto op emitters, shared by the decode and prefill builders.

Each function emits ops into the jit function being traced and returns pypto tensors. They
round to bf16 exactly where :mod:`qwenlayers.core.golden` rounds, so the kernels match it.
Tile shapes come from the :class:`~qwenlayers.core.tiling.TilingPlan` and are set right before
the ops they govern (pypto's tile state applies to the ops that follow it).

pypto 0.2.0 broadcasts along one axis per op (workaround ``pypto-one-axis-broadcast``): a
per-head weight [1, D] meets per-head rows [rows, D], never [B, NH, D].
"""

# No `from __future__ import annotations`: pypto reads real annotation objects in jit functions.

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CubeTiles:
    """pypto cube tile shapes of one matmul, from the plan: L0 tiles [m, k] x [k, n] (the TILE
    budget) with ``k_l1`` reduction columns staged in L1 per step. Staging more of K in L1 cuts
    the compile graph and the simulated time several-fold at 32B size (5120x8192 projection:
    k L1 128 -> 1024 took 317 -> 74 us and 7.3 -> 4.0 s compile)."""

    m: int
    k: int
    n: int
    k_l1: int

    def apply(self) -> None:
        import pypto

        pypto.set_cube_tile_shapes([self.m, self.m], [self.k, self.k_l1], [self.n, self.n])


def merge_tasks(pass_options: dict[str, Any]) -> None:
    """Apply a plan's task-merging pass options (:meth:`TilingPlan.pass_options`) to the
    functions the jit body builds from here on. Called first in a layer body, not handed to
    ``pypto.frontend.jit``: pypto 0.2.0's jit accepts only some pass option names
    (``mg_copyin_upper_bound`` is not one), its option scope takes them all."""
    import pypto

    pypto.set_options(pass_options=pass_options)


def plan_jit_options(plan: Any, jit_options: dict[str, Any]) -> dict[str, Any]:
    """``jit_options`` (the job's: run mode, verification) with the plan's runtime options
    (:meth:`TilingPlan.runtime_options`) added to its ``runtime_options``."""
    return {**jit_options, "runtime_options": {**plan.runtime_options(), **jit_options.get("runtime_options", {})}}


def rms_norm_rows(x_f32: Any, weight: Any, width: int, eps: float) -> Any:
    """Golden ``rms_norm`` of fp32 rows [R, W] with a bf16 weight [1, W]: the normalised value is
    rounded to bf16 before the weight product, which is rounded again."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    mean_sq = pypto.sum(x_f32 * x_f32, -1, keepdim=True) * (1.0 / width)
    normed = pypto.cast(x_f32 * pypto.rsqrt(mean_sq + eps), bf16)
    return pypto.cast(pypto.cast(normed, fp32) * pypto.cast(weight, fp32), bf16)


def linear(x_bf16: Any, w_in_out: Any, tiles: CubeTiles, *, fp32_out: bool = False) -> Any:
    """x @ W with W stored [in, out]: fp32 accumulation on the cube, rounded to bf16 once
    (or left in fp32 when the result is a partial sum another program adds to)."""
    import pypto

    tiles.apply()
    return pypto.matmul(x_bf16, w_in_out, pypto.DT_FP32 if fp32_out else pypto.DT_BF16)


def rope(x_bf16: Any, cos: Any, sin: Any, head_dim: int) -> Any:
    """rotate_half RoPE of [B, heads, D] bf16 with fp32 cos/sin [B, 1, D] (broadcast over heads)."""
    import pypto

    xf = pypto.cast(x_bf16, pypto.DT_FP32)
    rows, heads, half = xf.shape[0], xf.shape[1], head_dim // 2
    x1 = pypto.view(xf, [rows, heads, half], [0, 0, 0])
    x2 = pypto.view(xf, [rows, heads, half], [0, 0, half])
    rotated = pypto.concat([x2 * -1.0, x1], -1)
    return pypto.cast(xf * cos + rotated * sin, pypto.DT_BF16)


def residual_add(x_bf16: Any, y_bf16: Any) -> Any:
    """x + y in bf16 (computed in fp32, rounded once, like torch's bf16 add)."""
    import pypto

    fp32 = pypto.DT_FP32
    return pypto.cast(pypto.cast(x_bf16, fp32) + pypto.cast(y_bf16, fp32), pypto.DT_BF16)


def swiglu(gate_bf16: Any, up_bf16: Any) -> Any:
    """bf16(bf16(silu(gate)) * up), where transformers rounds."""
    import pypto

    bf16, fp32 = pypto.DT_BF16, pypto.DT_FP32
    g = pypto.cast(gate_bf16, fp32)
    act = pypto.cast(g * pypto.sigmoid(g), bf16)
    return pypto.cast(pypto.cast(act, fp32) * pypto.cast(up_bf16, fp32), bf16)
