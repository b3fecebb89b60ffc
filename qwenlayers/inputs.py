"""Random inputs of one layer call, as the CLI, bench and tune draw them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from qwenlayers.core.config import Qwen3Config
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
