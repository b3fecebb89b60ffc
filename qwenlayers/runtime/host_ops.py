"""What the host computes between worker programs, rounded as the one-program kernel rounds:
the residual after a reduction point, an intermediate shard's MLP weights, and the packed
token rows put back into a right-padded batch."""

from __future__ import annotations

import torch


def residual_after_reduction(x: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
    """``x + sum of partials`` the way the one-program kernel rounds at a reduction point: the
    fp32 sum rounded once to bf16 (as the unsharded projection output), then the bf16 residual."""
    return (x.float() + summed.bfloat16().float()).bfloat16()


def mlp_shard_weights(packed: dict[str, torch.Tensor], inter: int, cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """One intermediate shard's packed weights: its gate | up columns [H, 2*w] and down rows [w, H]."""
    w_gu = torch.cat([packed["w_gu"][:, cols], packed["w_gu"][:, inter + cols.start : inter + cols.stop]], 1).contiguous()
    return w_gu, packed["w_down"][cols].contiguous()


def scatter_packed(out: torch.Tensor, packed_rows: torch.Tensor, lens: list[int], first: int = 0) -> None:
    """Packed rows [sum(lens), H] back into a right-padded [B, S, H] from batch row ``first``."""
    offset = 0
    for i, n_tok in enumerate(lens):
        out[first + i, :n_tok] = packed_rows[offset : offset + n_tok]
        offset += n_tok
