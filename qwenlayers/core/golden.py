"""Golden math of one Qwen3 decoder layer, in plain torch.

The same math as Hugging Face ``transformers``' ``Qwen3DecoderLayer`` (tested against it), with
fp32 for norms, rotary embedding and softmax, and rounding to the activation dtype at the points
where the kernel rounds: after each projection, after each norm, after attention, after each
residual. It knows nothing about tiling: no loop here runs over SEQ_TILE or any chunk.

Inputs are never modified; the cache tensors returned are new tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from qwenlayers.core import contract
from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.weights import LayerWeights


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) in fp32, cast back to x's dtype, then times weight."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight.to(x.dtype) * normed.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos/sin tables [len(positions), head_dim] in the rotate_half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, D] by cos/sin [T, D] in fp32; result in x's dtype."""
    xf = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos[:, None, :] + rotated * sin[:, None, :]).to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_positions: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal GQA attention for one sequence.

    q [T, NH, D] at absolute positions ``q_positions``; k, v [KVH, L, D] hold rows 0..L-1.
    Scores and softmax in fp32, probabilities rounded to the activation dtype before the
    value product (as the kernel's cube unit takes them), output [T, NH, D].
    """
    nh, kvh = q.shape[1], k.shape[0]
    group = nh // kvh
    kk = k.float().repeat_interleave(group, dim=0)  # [NH, L, D]
    vv = v.float().repeat_interleave(group, dim=0)
    scores = torch.einsum("tnd,nld->ntl", q.float(), kk) * scale  # [NH, T, L]
    rows = torch.arange(k.shape[1])
    mask = rows[None, :] > q_positions[:, None]  # [T, L]: a token sees rows <= its position
    scores = scores.masked_fill(mask[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(q.dtype).float()
    return torch.einsum("ntl,nld->tnd", probs, vv).to(q.dtype)


def _layer_tokens(
    config: Qwen3Config,
    w: LayerWeights,
    x: torch.Tensor,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    """The layer for T tokens of one sequence at ``positions``; writes their K/V rows into the
    given [KVH, MAX_SEQ, D] caches (the caller's copies) and returns [T, H]."""
    t, d = x.shape[0], config.head_dim
    dtype = x.dtype
    wt = {k: v.to(dtype) for k, v in w.tensors.items()}
    h = rms_norm(x, wt["input_layernorm.weight"], config.rms_norm_eps)
    q = F.linear(h, wt["self_attn.q_proj.weight"]).view(t, config.num_attention_heads, d)
    k = F.linear(h, wt["self_attn.k_proj.weight"]).view(t, config.num_key_value_heads, d)
    v = F.linear(h, wt["self_attn.v_proj.weight"]).view(t, config.num_key_value_heads, d)
    q = rms_norm(q, wt["self_attn.q_norm.weight"], config.rms_norm_eps)
    k = rms_norm(k, wt["self_attn.k_norm.weight"], config.rms_norm_eps)
    cos, sin = rope_cos_sin(positions, d, config.rope_theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k_cache[:, positions] = k.transpose(0, 1).to(k_cache.dtype)
    v_cache[:, positions] = v.transpose(0, 1).to(v_cache.dtype)
    length = int(positions.max()) + 1
    attn = attention(q, k_cache[:, :length], v_cache[:, :length], positions, d**-0.5)
    x = x + F.linear(attn.reshape(t, config.q_width), wt["self_attn.o_proj.weight"])
    h = rms_norm(x, wt["post_attention_layernorm.weight"], config.rms_norm_eps)
    gate = F.linear(h, wt["mlp.gate_proj.weight"])
    up = F.linear(h, wt["mlp.up_proj.weight"])
    # silu in fp32, rounded to the activation dtype before the product (where transformers rounds)
    act = (F.silu(gate.float()).to(dtype).float() * up.float()).to(dtype)
    return x + F.linear(act, wt["mlp.down_proj.weight"])


def decode(
    config: Any,
    weights: Any,
    hidden: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decode step: hidden [B, H] at position seq_lens[b]-1 (seq_lens include the new token).

    Returns (out [B, H], k_cache, v_cache) where the caches are new tensors equal to the inputs
    except at row seq_lens[b]-1 of each sequence, which holds the new token's K (after k_norm
    and RoPE) and V.
    """
    cfg = as_config(config)
    lens = contract.check_decode(cfg, hidden, k_cache, v_cache, seq_lens)
    w = LayerWeights.coerce(weights, cfg)
    k_new, v_new = k_cache.clone(), v_cache.clone()
    out = torch.empty_like(hidden)
    for b, length in enumerate(lens):
        pos = torch.tensor([length - 1])
        out[b] = _layer_tokens(cfg, w, hidden[b : b + 1], pos, k_new[b], v_new[b])[0]
    return out, k_new, v_new


def prefill(
    config: Any,
    weights: Any,
    hidden: torch.Tensor,
    seq_lens: torch.Tensor,
    max_seq: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal prefill of right-padded hidden [B, S, H] with seq_lens [B].

    Returns (out [B, S, H] with rows >= seq_len zero, k_cache, v_cache [B, KVH, max_seq, D] with
    rows 0..seq_len-1 written and the rest zero). ``max_seq`` defaults to S.
    """
    cfg = as_config(config)
    seq = hidden.shape[1] if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 else 0
    max_seq = seq if max_seq is None else max_seq
    lens = contract.check_prefill(cfg, hidden, seq_lens, max_seq)
    w = LayerWeights.coerce(weights, cfg)
    batch = hidden.shape[0]
    cache_shape = (batch, cfg.num_key_value_heads, max_seq, cfg.head_dim)
    k_cache = torch.zeros(cache_shape, dtype=hidden.dtype)
    v_cache = torch.zeros(cache_shape, dtype=hidden.dtype)
    out = torch.zeros_like(hidden)
    for b, length in enumerate(lens):
        pos = torch.arange(length)
        out[b, :length] = _layer_tokens(cfg, w, hidden[b, :length], pos, k_cache[b], v_cache[b])
    return out, k_cache, v_cache

