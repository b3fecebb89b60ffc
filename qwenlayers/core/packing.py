"""Kernel-side weight layouts, derived once from the Hugging Face tensors.

The kernels multiply activations [rows, in] by weights stored [in, out] (the cube's natural
B operand), with K|V and gate|up concatenated along ``out`` so one matmul reads the normed
input once for both. Norm weights become [1, W] rows. Nothing here changes a value: packing
is transposes and concatenations only, so the golden (which uses the HF layout) and the
kernel see the same numbers.
"""

from __future__ import annotations

import torch

from qwenlayers.core.weights import LayerWeights


def _t(w: torch.Tensor) -> torch.Tensor:
    return w.t().contiguous()


def pack_layer(weights: LayerWeights, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The kernel's weight tensors (names and shapes as ``decode_weight_layout``)."""
    w = {k: v.to(dtype) for k, v in weights.tensors.items()}
    return {
        "w_ln1": w["input_layernorm.weight"].reshape(1, -1).contiguous(),
        "w_q": _t(w["self_attn.q_proj.weight"]),
        "w_kv": _t(torch.cat([w["self_attn.k_proj.weight"], w["self_attn.v_proj.weight"]], 0)),
        "w_qn": w["self_attn.q_norm.weight"].reshape(1, -1).contiguous(),
        "w_kn": w["self_attn.k_norm.weight"].reshape(1, -1).contiguous(),
        "w_o": _t(w["self_attn.o_proj.weight"]),
        "w_ln2": w["post_attention_layernorm.weight"].reshape(1, -1).contiguous(),
        "w_gu": _t(torch.cat([w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"]], 0)),
        "w_down": _t(w["mlp.down_proj.weight"]),
    }


def rope_rows(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos/sin [len(positions), 1, head_dim] for the kernel (the golden's table, one row per token)."""
    from qwenlayers.core.golden import rope_cos_sin

    cos, sin = rope_cos_sin(positions, head_dim, theta)
    return cos.unsqueeze(1).contiguous(), sin.unsqueeze(1).contiguous()
