"""Tensor-parallel shard plan: which heads and MLP columns each rank of a TP group holds.

Megatron-style, as vLLM runs Qwen3: Q/K/V are split by heads (column parallel), o_proj by its
input columns (row parallel), gate/up by intermediate columns and down_proj by its input rows.
Each rank then computes a *partial* o_proj and a *partial* down_proj over the full hidden
size; the two all-reduces (the layer's reduction points) sum them. The norms are replicated.

When ``tp`` exceeds the KV heads, each KV head is replicated on ``tp / kv_heads`` ranks (as
vLLM does): every rank still holds whole query groups of exactly one KV head.

A rank's work is an ordinary, smaller Qwen3 layer: :func:`shard_config` is that layer's
config, so the kernels, the plugin tiling hook and the budgets apply to it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qwenlayers.core.config import Qwen3Config
from qwenlayers.errors import InputError


@dataclass(frozen=True)
class ShardPlan:
    """Rank ``rank`` of ``tp``: half-open head and column ranges of the full layer it holds."""

    tp: int
    rank: int
    q_heads: tuple[int, int]
    kv_heads: tuple[int, int]
    inter: tuple[int, int]
    kv_replicas: int  # ranks holding each KV head (1 unless tp > KV heads)

    @property
    def q_head_count(self) -> int:
        return self.q_heads[1] - self.q_heads[0]

    @property
    def kv_head_count(self) -> int:
        return self.kv_heads[1] - self.kv_heads[0]

    @property
    def owns_kv(self) -> bool:
        """Whether this rank writes back its KV heads' cache rows (one replica per head does)."""
        return self.rank % self.kv_replicas == 0


def check_tp(config: Qwen3Config, tp: int) -> None:
    """Refuse a TP degree the layer cannot be split by, saying what is allowed."""
    nh, kvh, inter = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    allowed = [t for t in range(1, nh + 1) if _splits(nh, kvh, inter, t)]
    if not isinstance(tp, int) or tp < 1 or not _splits(nh, kvh, inter, tp):
        raise InputError(
            f"tp={tp!r} cannot split {config.name} ({nh} query heads, {kvh} KV heads, intermediate {inter}): "
            f"tp must divide the query heads and the intermediate size, and divide the KV heads or be a "
            f"multiple of them; allowed: {', '.join(map(str, allowed))}"
        )


def _splits(nh: int, kvh: int, inter: int, tp: int) -> bool:
    if nh % tp or inter % tp:
        return False
    return kvh % tp == 0 if tp <= kvh else tp % kvh == 0


def shard_plan(config: Qwen3Config, tp: int, rank: int) -> ShardPlan:
    check_tp(config, tp)
    if not 0 <= rank < tp:
        raise InputError(f"rank={rank} is outside 0..{tp - 1} for tp={tp}")
    nh, kvh, inter = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    q_per, i_per = nh // tp, inter // tp
    if tp <= kvh:
        kv_per, replicas = kvh // tp, 1
        kv = (rank * kv_per, (rank + 1) * kv_per)
    else:
        replicas = tp // kvh
        head = rank // replicas
        kv = (head, head + 1)
    return ShardPlan(tp, rank, (rank * q_per, (rank + 1) * q_per), kv, (rank * i_per, (rank + 1) * i_per), replicas)


def shard_config(config: Qwen3Config, tp: int) -> Qwen3Config:
    """The config of one rank's layer (every rank's is the same shape)."""
    check_tp(config, tp)
    return replace(
        config,
        name=f"{config.name}/tp{tp}",
        num_attention_heads=config.num_attention_heads // tp,
        num_key_value_heads=max(config.num_key_value_heads // tp, 1),
        intermediate_size=config.intermediate_size // tp,
    )


def allreduce_bytes(rows: int, config: Qwen3Config, tp: int) -> dict[str, int]:
    """Communication of one layer: two all-reduces of fp32 [rows, hidden] partials. ``payload``
    is the tensor size summed per layer; ``ring_per_rank`` what each rank sends in a ring
    all-reduce (2 (tp-1)/tp of the payload), the figure that bounds link time."""
    payload = 2 * rows * config.hidden_size * 4
    return {"allreduces": 2, "payload_bytes": payload, "ring_bytes_per_rank": payload * 2 * (tp - 1) // tp}
