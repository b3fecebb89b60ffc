"""Random inputs of one layer call, as the CLI, bench and tune draw them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.paged import shuffled_pools
from qwenlayers.core.platform import Phase
from qwenlayers.errors import InputError


def random_inputs(
    config: Qwen3Config, phase: Phase, lens: list[int], *, seed: int = 0, max_seq: int | None = None
) -> dict[str, torch.Tensor]:
    """Random bf16 inputs for one ``decode`` or ``prefill`` call with sequences ``lens``: hidden
    (decode [B, H]; prefill [B, max(lens), H]), for decode caches of ``max_seq`` rows (default
    the config's), and seq_lens. Drawn in that order from one generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return _inputs(config, phase, lens, max_seq, lambda *shape: torch.randn(shape, generator=gen).bfloat16())


def cost_model_inputs(config: Qwen3Config, phase: Phase, lens: list[int], *, max_seq: int | None = None) -> dict[str, torch.Tensor]:
    """The same tensors as :func:`random_inputs`, zero: for cost-model-only calls, whose simulated
    time does not read values (the result cache is keyed by shapes for the same reason). Drawing
    a qwen3-32b decode batch's caches took 1.3 s of a repeated bench point."""
    return _inputs(config, phase, lens, max_seq, lambda *shape: torch.zeros(shape, dtype=torch.bfloat16))


def _inputs(config: Qwen3Config, phase: Phase, lens: list[int], max_seq: int | None,
            fill: Callable[..., torch.Tensor]) -> dict[str, torch.Tensor]:
    if not lens:
        raise InputError("no sequences to make inputs for (an empty list of lengths); give at least one length >= 1 "
                         "(CLI: --batch N with N >= 1, or --seq-lens a,b,c)")
    n = len(lens)
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    if phase == "prefill":
        return {"hidden": fill(n, max(lens), config.hidden_size), "seq_lens": seq_lens}
    shape = (n, config.num_key_value_heads, max_seq or config.max_seq, config.head_dim)
    return {"hidden": fill(n, config.hidden_size), "k_cache": fill(*shape), "v_cache": fill(*shape), "seq_lens": seq_lens}


def paged(inputs: dict[str, torch.Tensor], config: Qwen3Config, phase: Phase, block: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The same call through paged caches (core.paged): decode's caches moved into shuffled
    ``block``-row blocks of pools with a block table; prefill gets zero pools covering every
    sequence and a shuffled table. One spare block per sequence that no table names."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise InputError(f"block size {block!r}; a paged cache's blocks hold an int >= 1 rows (e.g. 16, 64, 128)")
    lens = [int(n) for n in inputs["seq_lens"]]
    if phase == "prefill":
        shape = (len(lens), config.num_key_value_heads, max(lens), config.head_dim)
        k_cache = v_cache = torch.zeros(shape, dtype=torch.bfloat16)
    else:
        k_cache, v_cache = inputs["k_cache"], inputs["v_cache"]
    k_pool, v_pool, table = shuffled_pools(k_cache, v_cache, block, seed=seed, spare=len(lens))
    return {**inputs, "k_cache": k_pool, "v_cache": v_pool, "block_table": table}
