"""The work of one layer call: FLOPs and the bytes it must move, for a roofline.

Counted from the model shape and the sequence lengths alone (no tiling): every weight is read
once, the KV cache rows attention needs are read once, new K/V rows and the activations are
read and written once. A kernel cannot beat ``max(bytes / bandwidth, flops / peak)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import Phase

BF16 = 2


@dataclass(frozen=True)
class LayerWork:
    flops: float
    weight_bytes: float
    cache_bytes: float
    activation_bytes: float

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.cache_bytes + self.activation_bytes

    def roofline_us(self, bandwidth_bytes_per_s: float, flops_per_s: float) -> float:
        return max(self.bytes / bandwidth_bytes_per_s, self.flops / flops_per_s) * 1e6


def layer_work(config: Qwen3Config, phase: Phase, lens: list[int]) -> LayerWork:
    """FLOPs and bytes of one decode step (one token per sequence, ``lens`` including it) or
    one prefill (``lens`` tokens per sequence, causal)."""
    c = config
    h, qw, kw, i, d, nh = c.hidden_size, c.q_width, c.kv_width, c.intermediate_size, c.head_dim, c.num_attention_heads
    tokens = len(lens) if phase == "decode" else sum(lens)
    proj = 2 * tokens * (h * (qw + 2 * kw) + qw * h + 3 * h * i)
    if phase == "decode":
        keys = sum(lens)  # each new token attends to its whole sequence
        attn = 2 * 2 * nh * d * keys
        cache_read = 2 * kw * keys * BF16
    else:
        pairs = sum(n * (n + 1) // 2 for n in lens)  # causal (query, key) pairs
        attn = 2 * 2 * nh * d * pairs
        cache_read = 0  # prefill's keys are its own, produced in the call
    cache_write = 2 * kw * tokens * BF16
    activations = tokens * (2 * h) * BF16  # hidden in, out
    return LayerWork(flops=float(proj + attn), weight_bytes=float(c.weight_bytes()),
                     cache_bytes=float(cache_read + cache_write), activation_bytes=float(activations))
