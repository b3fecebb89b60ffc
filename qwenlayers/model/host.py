"""The parts of a whole model that run on the host in torch: embedding lookup before the first
layer, final RMSNorm and lm_head after the last, and the greedy choice.

The final norm runs in the chain's own dtype (as transformers does); the lm_head product and the
argmax run in fp32 for every chain, so two chains' tokens differ only where their last hidden
states do, never because the host rounded their logits differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from qwenlayers.core.golden import rms_norm
from qwenlayers.model.checkpoint import HostWeights


def embed_prompts(host: HostWeights, prompts: Sequence[Sequence[int]], dtype: torch.dtype) -> torch.Tensor:
    """Right-padded [B, S, H] embeddings of the prompts (padding rows zero)."""
    longest = max(len(p) for p in prompts)
    out = torch.zeros(len(prompts), longest, host.embed.shape[1], dtype=dtype)
    for b, ids in enumerate(prompts):
        out[b, : len(ids)] = host.embed[torch.tensor(list(ids))].to(dtype)
    return out


def embed_tokens(host: HostWeights, tokens: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """[B, H] embeddings of one new token per sequence."""
    return host.embed[torch.tensor(list(tokens))].to(dtype)


def logits(host: HostWeights, last: torch.Tensor, eps: float) -> torch.Tensor:
    """fp32 logits [B, V] of the last hidden state [B, H] of each sequence."""
    normed = rms_norm(last, host.norm.to(last.dtype), eps)
    return F.linear(normed.float(), host.lm_head.float())


def greedy(scores: torch.Tensor) -> list[int]:
    return [int(t) for t in scores.argmax(dim=-1)]


def top2_margin(scores: torch.Tensor) -> list[float]:
    """Per row, how far the best logit is above the second: how close the greedy choice was."""
    top = scores.topk(2, dim=-1).values
    return [float(m) for m in top[:, 0] - top[:, 1]]


#: Two tokens are a near tie when the fp32 chain's logits for them are within this many
#: standard deviations of the noise bf16 puts on the difference of two logits (per row: the RMS
#: of the bf16 chain's logits minus the fp32 chain's, times sqrt 2 for a difference of two).
NEAR_TIE_SIGMAS = 3.0


def tie_bars(fp32: torch.Tensor, bf16: torch.Tensor) -> list[float]:
    """Per row, the largest logit gap bf16 rounding alone could close: NEAR_TIE_SIGMAS sigma."""
    noise = (bf16 - fp32).pow(2).mean(dim=-1).sqrt() * 2**0.5
    return [NEAR_TIE_SIGMAS * float(n) for n in noise]


def gaps_to(scores: torch.Tensor, choices: Sequence[int]) -> list[float]:
    """Per row, how far below the row's best logit the logit of ``choices[row]`` is (0: it is the best)."""
    rows = torch.arange(scores.shape[0])
    return [float(g) for g in scores.max(dim=-1).values - scores[rows, torch.tensor(list(choices))]]


def near_ties(fp32: torch.Tensor, bf16: torch.Tensor) -> list[bool]:
    """Per row: is the fp32 chain's best choice close enough to its second that bf16 rounding
    alone could flip it? (The marker the tables show; the verdict asks of the token chosen.)"""
    return [m <= bar for m, bar in zip(top2_margin(fp32), tie_bars(fp32, bf16))]
