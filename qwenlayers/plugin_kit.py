"""Everything a target plugin needs, in one import: a base class whose differences are data,
the descriptor types, the probes, the reference anchors, and helpers for budgets and sim variants.

A plugin may implement the hooks as module functions (see the README's minimal plugin) or
subclass :class:`TargetPlugin` and set class attributes; the entry point then names an
instance (``qwenlayers_a5.plugin:plugin``). pluggy registers the instance's hookimpl methods.
What every run on pypto 0.2.0 needs (its workarounds, the ini and cost model of a sim target)
comes from the core's built-in plugin, so a plugin states facts only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.hookspecs import hookimpl
from qwenlayers.core.platform import PYPTO_LIB_BUDGETS, Budgets, Buffers, Cores, Figure, Phase, Platform
from qwenlayers.core.tiling import TilingPlan, derive_plan
from qwenlayers.core.workarounds import Workaround
from qwenlayers.runtime.probes import npu_probe, sim_probe

__all__ = [
    "REFERENCE_000_ANCHORS", "UB_RESERVE_BYTES", "Budgets", "Buffers", "Cores", "Figure", "Platform", "TargetPlugin",
    "TilingPlan", "Workaround", "derived_budgets", "hookimpl", "npu_probe", "reference_anchors", "sim_probe", "sim_variant",
]

#: pypto-lib reference 000's Qwen3-32B plan (TOK_TILE=4, K_CHUNK=128, *_OUT_CHUNK=64,
#: Q_HEAD_BATCH=4, SEQ_TILE=64) with this project's measured schedule fields, for the
#: ``pypto-lib`` budget set every platform offers (2 KB / 16 KB). Other presets are derived
#: from it by :func:`~qwenlayers.core.tiling.derive_plan`.
REFERENCE_000_ANCHORS: dict[Phase, TilingPlan] = TilingPlan.per_phase(
    source="reference 000", tok_tile=4, k_chunk=128, q_out_chunk=64, kv_out_chunk=64, mlp_out_chunk=64, q_head_batch=4,
    seq_tile=64,
    cube_m=16, k_l1=1024, kv_block=4096,  # decode: one attention iteration per 4096 cache rows (simulated 7x faster than 64 at 0.6B 16x4096)
    # pypto task merging (docs/decode.md "Task merging"): same-shape cube tasks in pairs, a merged
    # task's GM->L1 copies capped at 2 MiB (qwen3-8b decode 16 x 4096, a2a3sim: 1,147 -> 969 us)
    cube_merge=2, merge_copy_kb=2048,
    # decode softmax reads the scores in [Q_HEAD_BATCH, 128] fp32 tiles (2 KB), two cube tiles
    # per copy (qwen3-32b 16 x 4096, a2a3sim: 1,483 -> 1,462 us, compile 389 -> 315 s)
    score_cols=128,
    # decode Q @ K^T copies 512 cache rows of K per cube step (L0 tiles [512, 16]) instead of
    # one 16 KB [64, 128] tile per copy (qwen3-32b 16 x 4096, a2a3sim: 1,462 -> 1,228 us)
    qk_cols=512,
)
# prefill projects 64-token tiles (L0A [64, 128] bf16 = 16 KB): the weights are read once per
# tile, so 16-token tiles capped a long prefill's cube use (docs/prefill.md; qwen3-0.6b, 128
# tokens, a2a3sim: 1,300 -> 949 us). Decode's m tile is the batch (at most 16 rows here).
# Prefill also lets pypto's runtime stitch 128 loop iterations at once instead of 50, so the
# attention's query tiles run side by side (TilingPlan.runtime_options; qwen3-0.6b, 2,048 tokens,
# a5sim: 6,749 -> 3,534 us). Decode keeps pypto's 50 (no change measured).
# Its key block is the query tile (KV_BLOCK = SEQ_TILE), as in the reference.
REFERENCE_000_ANCHORS["prefill"] = replace(REFERENCE_000_ANCHORS["prefill"], cube_m=64, stitch_loops=128, kv_block=64)


#: UB bytes a TILELET rule leaves beside one op's operand tiles: the row statistics and broadcast
#: operands (RMSNorm's mean square, the softmax max and sum) and the task's other small tensors.
UB_RESERVE_BYTES = 32 * 1024


def derived_budgets(name: str, buffers: Buffers, *, op_tiles: int = 3, ub_reserve: int = UB_RESERVE_BYTES,
                    cube_slots: int = 2, source: str = "") -> Budgets:
    """A target's budget set derived from its buffers: the largest powers of two such that
    ``op_tiles`` TILELET tiles plus ``ub_reserve`` bytes fit in UB, and ``cube_slots`` TILE
    operand tiles fit in each of L0A and L0B (double-buffered: 2).

    Why three vector tiles: UB holds what one vector op reads and writes at once (two inputs and
    the output of an add or a multiply). That is the bound pypto 0.2.0's own scheduler enforces:
    its out-of-order pass allocates UB op by op and refuses an op whose inputs and output exceed
    it (``checkOpBufferSize``: a [256, 128] fp32 add, 3 x 128 KB, is refused on the A5's 248 KB UB),
    then orders a task's ops so that their buffers fit. The reserve keeps the small tensors that
    stay live beside them. ``benchmarks/budget_sweep.py`` and the layer runs show where larger
    tiles stop gaining on the target's cost model (docs/budgets.md)."""

    def floor_pow2(n: int) -> int:
        return 1 << (max(n, 1).bit_length() - 1)

    tilelet = floor_pow2(max(buffers.ub - ub_reserve, 1) // op_tiles)
    tile = floor_pow2(min(buffers.l0a, buffers.l0b) // cube_slots)
    return Budgets(tilelet_bytes=tilelet, tile_bytes=tile, name=name,
                   source=f"{op_tiles} TILELET tiles (one op's inputs and output) + {ub_reserve} B in UB {buffers.ub} B, "
                          f"{cube_slots} TILE tiles in L0A/L0B {min(buffers.l0a, buffers.l0b)} B" + (f"; {source}" if source else ""))


def reference_anchors(**deltas: Mapping[str, Any]) -> dict[Phase, TilingPlan]:
    """A target's anchor plans as deltas on :data:`REFERENCE_000_ANCHORS`: ``prefill={"tok_tile":
    128, ...}`` changes those fields of the prefill anchor; a phase not named keeps the
    reference's plan. One shared anchor, so two targets never hold two copies of it."""
    unknown = set(deltas) - set(REFERENCE_000_ANCHORS)
    if unknown:
        raise ValueError(f"reference_anchors: no phase {sorted(unknown)}; allowed: {', '.join(REFERENCE_000_ANCHORS)}")
    return {phase: replace(plan, source="", **dict(deltas.get(phase, {}))) for phase, plan in REFERENCE_000_ANCHORS.items()}


def sim_variant(base: Platform, name: str, *, description: str | None = None, **changes: Any) -> Platform:
    """``base`` simulated on the CPU (pypto's cost model and tensor-graph interpreter) as platform
    ``name``, with ``changes`` to its fields (``cores=``, ``buffers=``, ...).

    The core's built-in plugin then compiles and simulates exactly this descriptor: its arch,
    cores and buffers go into pypto's ini and cost model. New ``buffers`` without new
    ``budgets`` re-derive the budget set from them (:func:`derived_budgets`), since the base's
    tiles may not fit a smaller buffer."""
    if "buffers" in changes and "budgets" not in changes:
        changes["budgets"] = derived_budgets(name, changes["buffers"], source=f"derived from {name}'s buffers")
        changes.setdefault("budget_sets", ())
    return replace(base, name=name, run_mode="sim", probe=sim_probe,
                   description=description or f"{base.description}, simulated on the CPU (pypto SIM cost model + tensor-graph values)",
                   **changes)


class TargetPlugin:
    """Hooks of one target from data: a descriptor, anchor plans, its own workarounds (if any)
    and a collective backend. Plan sources name the distribution of the plugin's entry point."""

    platform: ClassVar[Platform]
    anchors: ClassVar[Mapping[Phase, TilingPlan]]  # plan per phase under the platform's own budgets, fitted to each model
    #: Plans per phase under the ``pypto-lib`` budget set (the reference's rules).
    pypto_lib_anchors: ClassVar[Mapping[Phase, TilingPlan]] = REFERENCE_000_ANCHORS
    workarounds: ClassVar[Sequence[Workaround]] = ()  # this target's own; pypto 0.2.0's come from the core
    collective_backend: ClassVar[str | None] = None  # torch.distributed backend of TP runs ("gloo", "hccl")

    @hookimpl
    def qwenlayers_platform(self) -> Platform:
        return self.platform

    def anchors_for(self, budgets: Budgets) -> Mapping[Phase, TilingPlan]:
        """The anchor plans of a budget set: the reference's under ``pypto-lib``, the plugin's own
        otherwise (a set without its own anchors gets them fitted down by ``derive_plan``)."""
        return self.pypto_lib_anchors if budgets.name == PYPTO_LIB_BUDGETS.name else self.anchors

    @hookimpl
    def qwenlayers_tiling_defaults(self, platform: Platform, config: Qwen3Config, phase: Phase) -> TilingPlan:
        # every anchor value is the plugin's choice; the registry names the distribution
        anchor = replace(self.anchors_for(platform.budgets)[phase], source="").as_given()
        return derive_plan(anchor, config, platform, phase)

    @hookimpl
    def qwenlayers_workarounds(self, platform: Platform) -> list[Workaround]:
        return list(self.workarounds)

    @hookimpl
    def qwenlayers_collective_backend(self, platform: Platform) -> str | None:
        return self.collective_backend
