"""Random inputs of one layer call, as the CLI, bench and tune draw them."""

from __future__ import annotations

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
    if not lens:
        raise InputError("no sequences to make inputs for (an empty list of lengths); give at least one length >= 1 "
                         "(CLI: --batch N with N >= 1, or --seq-lens a,b,c)")
    gen = torch.Generator().manual_seed(seed)
    n = len(lens)
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    if phase == "prefill":
        return {"hidden": torch.randn(n, max(lens), config.hidden_size, generator=gen).bfloat16(), "seq_lens": seq_lens}
    shape = (n, config.num_key_value_heads, max_seq or config.max_seq, config.head_dim)
    return {"hidden": torch.randn(n, config.hidden_size, generator=gen).bfloat16(),
            "k_cache": torch.randn(shape, generator=gen).bfloat16(), "v_cache": torch.randn(shape, generator=gen).bfloat16(),
            "seq_lens": seq_lens}
