"""Run transformers' Qwen3DecoderLayer on our weights (test-only dependency)."""

from __future__ import annotations

import torch

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.weights import LayerWeights


def hf_layer(config: Qwen3Config, weights: LayerWeights, dtype: torch.dtype):
    from transformers import Qwen3Config as HFConfig
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding

    hf = HFConfig(**{k: v for k, v in config.to_hf().items() if k not in ("architectures", "torch_dtype")})
    hf._attn_implementation = "eager"
    layer = Qwen3DecoderLayer(hf, layer_idx=0).eval()
    layer.load_state_dict({k: v.to(torch.float32) for k, v in weights.tensors.items()})
    rope = Qwen3RotaryEmbedding(hf)
    return layer.to(dtype), rope


@torch.no_grad()
def hf_sequence(config: Qwen3Config, weights: LayerWeights, tokens: torch.Tensor) -> torch.Tensor:
    """Full causal forward of one sequence tokens [T, H] from position 0; returns [T, H]."""
    layer, rope = hf_layer(config, weights, tokens.dtype)
    t = tokens.shape[0]
    pos = torch.arange(t)[None]
    x = tokens[None]
    cos, sin = rope(x, pos)
    mask = torch.full((t, t), float("-inf")).triu(1)[None, None].to(tokens.dtype)
    out = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
    out = out[0] if isinstance(out, tuple) else out
    return out[0]
