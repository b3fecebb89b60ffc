"""Typed, frozen descriptions of what a worker runs: one class per job kind, one vocabulary of
program parts. The parent builds them, ``runtime/exchange.py`` carries their fields as data, and
the worker rebuilds the same class before it runs it, so a misspelt part or a missing tensor is
an error at construction in the parent, not a KeyError in a subprocess.

Program parts: :mod:`qwenlayers.core.parts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.parts import DECODE_PARTS, PREFILL_PARTS, Part
from qwenlayers.core.tiling import TilingPlan

Schedule = Literal["fused", "reference"]
SCHEDULES: tuple[Schedule, ...] = ("fused", "reference")


def _check_part(kind: str, part: str, allowed: tuple[str, ...], schedule: str) -> None:
    if part not in allowed:
        raise ValueError(f"{kind} job part={part!r}; allowed: {', '.join(allowed)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"{kind} job schedule={schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if schedule == "reference" and part != "layer":
        raise ValueError(f"the reference schedule is built as the whole layer only (part='layer'), not part={part!r}")


@dataclass(frozen=True, eq=False)
class Job:
    """One program for the worker. ``kind`` names the worker function that runs it."""

    kind: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """The job's data, for the message to the worker."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class RmsNormJob(Job):
    """The smoke kernel: RMSNorm of x [T, H] with gain g [H]."""

    kind: ClassVar[str] = "rmsnorm"
    x: torch.Tensor
    g: torch.Tensor
    eps: float
    vec_tile: tuple[int, int]


@dataclass(frozen=True, eq=False)
class _LayerJob(Job):
    """What a decode and a prefill program both take: the config and plan it is built for, the
    hidden rows, the packed weights (``core.kernels.layer_blocks.decode_weight_layout``), the
    RoPE rows [rows, 1, D] and the caches [B, KVH, ROWS, D] (returned as the kernel left them)."""

    config: Qwen3Config
    plan: TilingPlan
    hidden: torch.Tensor
    weights: Mapping[str, torch.Tensor]
    cos: torch.Tensor
    sin: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor


@dataclass(frozen=True, eq=False)
class DecodeJob(_LayerJob):
    """One decode step of ``part``: hidden [B, H], seq_lens int32 [B]. With ``block_table``
    (int32 [B, max_blocks]) the caches are block pools [num_blocks, KVH, BLOCK, D] (core.paged)."""

    kind: ClassVar[str] = "decode"
    seq_lens: torch.Tensor
    part: Part = "layer"
    schedule: Schedule = "fused"
    tilelet_bytes: int = 0  # the budget set's TILELET: bounds the tiles the batch sizes (DecodeShape); 0: none
    block_table: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_part(self.kind, self.part, DECODE_PARTS, self.schedule)
        if self.block_table is not None and self.schedule == "reference":
            raise ValueError("the reference schedule reads contiguous caches only; a paged decode runs the fused kernel")


@dataclass(frozen=True, eq=False)
class MlpJob(Job):
    """Post-attention norm and one intermediate shard of the MLP: resid [R, H], w_ln2, w_gu
    [H, 2*inter] (the shard's gate | up columns), w_down [inter, H]; ``token_tile`` > 0 loops
    over tiles of that many rows (prefill; R a multiple of it). Returns the fp32 partial [R, H]."""

    kind: ClassVar[str] = "mlp"
    config: Qwen3Config
    plan: TilingPlan
    resid: torch.Tensor
    w_ln2: torch.Tensor
    w_gu: torch.Tensor
    w_down: torch.Tensor
    token_tile: int = 0


@dataclass(frozen=True, eq=False)
class PrefillJob(_LayerJob):
    """Prefill of packed tokens, ``part`` of the program: hidden [T, H] (the valid tokens of every
    sequence, in order) and the sequences' lengths. A split part may be handed the q/k/v/attn
    workspaces an earlier part filled, and loop B the query tiles (``work_items``) of its worker."""

    kind: ClassVar[str] = "prefill"
    seq_lens: list[int]
    part: Part = "layer"
    schedule: Schedule = "fused"
    work_items: list[list[int]] | None = None
    q_ws: torch.Tensor | None = None  # the workspaces (core.kernels.prefill.WORKSPACES)
    k_ws: torch.Tensor | None = None
    v_ws: torch.Tensor | None = None
    attn: torch.Tensor | None = None
    block_table: torch.Tensor | None = None  # int32 [B, max_blocks]: the caches are block pools (core.paged)

    def __post_init__(self) -> None:
        _check_part(self.kind, self.part, PREFILL_PARTS, self.schedule)
        if self.block_table is not None and self.schedule == "reference":
            raise ValueError("the reference schedule writes contiguous caches only; a paged prefill runs the fused kernel")


@dataclass(frozen=True, eq=False)
class CalibrateJob(Job):
    """The calibration micro-kernels (cost model only) at these shapes."""

    kind: ClassVar[str] = "calibrate"
    stream_shape: tuple[int, int]
    weight_stream_shape: tuple[int, int, int]
    matmul_shape: tuple[int, int, int]
    vector_shape: tuple[int, int]


@dataclass(frozen=True, eq=False)
class StageSweepJob(Job):
    """Layer stages at tile budgets on the cost model: ``points`` of ``{"stage", "rows", "width",
    "out", "heads", "tile_bytes"}``."""

    kind: ClassVar[str] = "stage_sweep"
    points: list[dict[str, Any]]


JOB_TYPES: dict[str, type[Job]] = {cls.kind: cls for cls in (RmsNormJob, DecodeJob, MlpJob, PrefillJob, CalibrateJob,
                                                             StageSweepJob)}


def job_from_message(kind: str, data: Mapping[str, Any]) -> Job:
    """The typed job a message describes (worker side)."""
    try:
        cls = JOB_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(JOB_TYPES)}") from None
    return cls(**data)
