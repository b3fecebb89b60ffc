"""The front half every layer call shares (``decode``, ``prefill``, ``decode_tp``, ``prefill_tp``):
check the caller's tensors against the data contract, resolve the target once, resolve and
check the plan. Everything is refused here, before any work, and nothing of the caller's is
touched; what comes out is one frozen :class:`LayerCall` the orchestration runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from qwenlayers.core import contract
from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.paged import PagedLayout, gather
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.sharding import check_tp, shard_config
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import InputError
from qwenlayers.plans import resolve_plan
from qwenlayers.registry import PlatformRegistry, get_registry
from qwenlayers.runtime.job_types import SCHEDULES
from qwenlayers.target import Target, resolve_target


@dataclass(frozen=True, eq=False)
class LayerCall:
    """A checked layer call, ready to run."""

    phase: Phase
    config: Qwen3Config  # as given (golden checks)
    run_config: Qwen3Config  # with the caches' max_seq: what the kernels are built for (a TP call: the whole layer)
    weights: LayerWeights
    hidden: torch.Tensor
    seq_lens: torch.Tensor
    lens: list[int]
    k_cache: torch.Tensor  # the caller's, or (prefill without caches) allocated zero
    v_cache: torch.Tensor
    target: Target
    plan: TilingPlan  # a TP call: the shard's plan
    schedule: str = "fused"
    block_table: torch.Tensor | None = None  # paged caches: k_cache/v_cache are block pools (core.paged)
    paged: PagedLayout | None = None


def check_timed(values: bool, timed: bool) -> None:
    """``values`` and ``timed`` say which halves of a run to do: at least one of them."""
    if not values and not timed:
        raise InputError("values=False and timed=False leave nothing to run: values=False is a cost-model run (the "
                         "timing only), timed=False a values run without the cost model")


def prepare_call(
    phase: Phase,
    config: Qwen3Config | Mapping[str, Any] | str,
    weights: LayerWeights | Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    seq_lens: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    *,
    platform: str | Platform | Target | None,
    budgets: str | None,
    plan: TilingPlan | Mapping[str, int] | None,
    registry: PlatformRegistry | None,
    allow_nonfinite: bool,
    schedule: str = "fused",
    tp: int = 1,
    block_table: torch.Tensor | None = None,
) -> LayerCall:
    """Check everything a ``phase`` call was given and resolve what it runs on and with.

    Decode needs the caller's caches; prefill allocates zero caches of the config's ``max_seq``
    when it is given none. With ``tp`` > 1 the plan is the shard's (the plugin sees the shard
    config), and the target must name a collective backend."""
    if schedule not in SCHEDULES:
        raise InputError(f"schedule={schedule!r}; allowed: {', '.join(SCHEDULES)}")
    cfg = as_config(config)
    paged: PagedLayout | None = None
    if block_table is not None:
        if schedule != "fused":
            raise InputError(f"the reference schedule uses contiguous caches only; a paged {phase} runs schedule='fused'")
        if k_cache is None or v_cache is None:
            raise InputError(f"a paged {phase} needs both pools, k_cache and v_cache [num_blocks, KVH, BLOCK, D]")
        if phase == "decode":
            lens, paged = contract.check_decode_paged(cfg, hidden, k_cache, v_cache, block_table, seq_lens,
                                                      dtypes=(torch.bfloat16,), contiguous=True)
        else:
            lens, paged = contract.check_prefill_paged(cfg, hidden, k_cache, v_cache, block_table, seq_lens,
                                                       dtypes=(torch.bfloat16,), contiguous=True)
        max_seq = paged.max_blocks * paged.block
    elif phase == "decode":
        lens = contract.check_decode(cfg, hidden, k_cache, v_cache, seq_lens, dtypes=(torch.bfloat16,), contiguous=True)
        max_seq = k_cache.shape[2]  # type: ignore[union-attr]  # checked above
    else:
        if (k_cache is None) != (v_cache is None):
            raise InputError("pass both k_cache and v_cache, or neither (prefill then allocates them)")
        batch = hidden.shape[0] if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 else 0
        max_seq = (contract.check_caches(cfg, k_cache, v_cache, batch, torch.bfloat16, contiguous=True)
                   if k_cache is not None else cfg.max_seq)
        lens = contract.check_prefill(cfg, hidden, seq_lens, max_seq, dtypes=(torch.bfloat16,), contiguous=True)
    w = LayerWeights.coerce(weights, cfg)
    if paged is not None and k_cache is not None and v_cache is not None and block_table is not None:
        contract.check_disjoint({"hidden": hidden, "k_cache": k_cache, "v_cache": v_cache, "seq_lens": seq_lens,
                                 "block_table": block_table}, w.tensors)
        if not allow_nonfinite:  # the rows each sequence reads, gathered: the contiguous caches' finiteness rule
            logical = (gather(k_cache, block_table, lens, paged.block), gather(v_cache, block_table, lens, paged.block))
            contract.check_arguments(phase, hidden, seq_lens, lens, w.tensors, k_cache=logical[0], v_cache=logical[1])
    else:
        contract.check_arguments(phase, hidden, seq_lens, lens, w.tensors, k_cache=k_cache, v_cache=v_cache,
                                 allow_nonfinite=allow_nonfinite)
    run_cfg = cfg.with_max_seq(max_seq)
    if tp > 1:
        check_tp(run_cfg, tp)
    reg = registry or get_registry()
    target = resolve_target(platform, budgets=budgets, registry=reg)
    if tp > 1:
        target.backend_for_tp()
    the_plan = resolve_plan(reg, target.platform, shard_config(run_cfg, tp) if tp > 1 else run_cfg, phase, plan, lens,
                            paged_block=paged.block if paged else 0)
    if k_cache is None or v_cache is None:
        shape = (len(lens), cfg.num_key_value_heads, max_seq, cfg.head_dim)
        k_cache, v_cache = torch.zeros(shape, dtype=torch.bfloat16), torch.zeros(shape, dtype=torch.bfloat16)
    return LayerCall(phase, cfg, run_cfg, w, hidden, seq_lens, lens, k_cache, v_cache, target, the_plan, schedule,
                     block_table, paged)


def logical_caches(call: LayerCall) -> tuple[torch.Tensor, torch.Tensor]:
    """The caches as the golden reads them: the caller's, or a paged call's rows gathered
    through its table (core.paged.gather)."""
    if call.paged is None or call.block_table is None:
        return call.k_cache, call.v_cache
    block = call.paged.block
    return (gather(call.k_cache, call.block_table, call.lens, block), gather(call.v_cache, call.block_table, call.lens, block))
