"""The data contract of both phases, checked once, before any work.

Shared by the golden math and the kernel API so both reject the same inputs with the same
message. Nothing here modifies a tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qwenlayers.core.config import Qwen3Config
from qwenlayers.errors import InputError

FLOAT_DTYPES = (torch.float32, torch.bfloat16)


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d) for d in dtypes)


def _check_tensor(name: str, t: object, shape: tuple[int, ...], dtypes: Sequence[torch.dtype], *, contiguous: bool) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise InputError(f"{name} is on device {t.device}; qwenlayers takes host (cpu) tensors and moves them itself")
    if t.dtype not in dtypes:
        raise InputError(f"{name} has dtype {t.dtype}; allowed: {_dtype_names(dtypes)}")
    if tuple(t.shape) != shape:
        raise InputError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if contiguous and not t.is_contiguous():
        raise InputError(f"{name} is not contiguous (strides {t.stride()}); pass a contiguous tensor (e.g. .contiguous())")
    return t


def check_seq_lens(seq_lens: object, batch: int, low: int, high: int, what: str) -> list[int]:
    """seq_lens must be int32 [batch] with low <= value <= high; returns them as Python ints."""
    if not isinstance(seq_lens, torch.Tensor):
        raise InputError(f"seq_lens must be an int32 torch.Tensor of shape [{batch}], got {type(seq_lens).__name__}")
    if seq_lens.dtype not in (torch.int32, torch.int64):
        raise InputError(f"seq_lens has dtype {seq_lens.dtype}; allowed: torch.int32 (torch.int64 is accepted and narrowed)")
    if tuple(seq_lens.shape) != (batch,):
        raise InputError(f"seq_lens has shape {tuple(seq_lens.shape)}, expected ({batch},): one length per batch row")
    values = [int(v) for v in seq_lens.tolist()]
    for b, v in enumerate(values):
        if not low <= v <= high:
            raise InputError(f"seq_lens[{b}]={v}; {what} needs {low} <= seq_len <= {high}")
    return values


def check_decode(
    config: Qwen3Config,
    hidden: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    contiguous: bool = False,
) -> list[int]:
    """Validate decode inputs: hidden [B, H], caches [B, KVH, MAX_SEQ, D], seq_lens [B] incl. the new token."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise InputError(f"decode hidden must be [batch, {config.hidden_size}], got {got}")
    batch = hidden.shape[0]
    _check_tensor("hidden", hidden, (batch, config.hidden_size), dtypes, contiguous=contiguous)
    if not isinstance(k_cache, torch.Tensor) or k_cache.dim() != 4:
        raise InputError(f"k_cache must be [batch, {config.num_key_value_heads}, max_seq, {config.head_dim}]")
    max_seq = k_cache.shape[2]
    if k_cache.shape[0] < batch:
        raise InputError(f"k_cache holds {k_cache.shape[0]} sequences but hidden has batch {batch}; the cache batch must equal it")
    cache_shape = (batch, config.num_key_value_heads, max_seq, config.head_dim)
    _check_tensor("k_cache", k_cache, cache_shape, (hidden.dtype,), contiguous=contiguous)
    _check_tensor("v_cache", v_cache, cache_shape, (hidden.dtype,), contiguous=contiguous)
    return check_seq_lens(seq_lens, batch, 1, max_seq, f"decode with a cache of max_seq={max_seq}")


def check_prefill(
    config: Qwen3Config,
    hidden: torch.Tensor,
    seq_lens: torch.Tensor,
    max_seq: int,
    *,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    contiguous: bool = False,
) -> list[int]:
    """Validate prefill inputs: hidden [B, S, H] right-padded, seq_lens [B] with 1 <= L <= S <= max_seq."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise InputError(f"prefill hidden must be [batch, seq, {config.hidden_size}], got {got}")
    batch, seq = hidden.shape[:2]
    _check_tensor("hidden", hidden, (batch, seq, config.hidden_size), dtypes, contiguous=contiguous)
    if seq > max_seq:
        raise InputError(f"prefill hidden has {seq} positions but max_seq={max_seq}; the padded length must be <= max_seq")
    return check_seq_lens(seq_lens, batch, 1, seq, f"prefill of padded length {seq}")


def check_caches(config: Qwen3Config, k_cache: torch.Tensor, v_cache: torch.Tensor, batch: int, dtype: torch.dtype, *, contiguous: bool) -> int:
    """Validate caller-given prefill caches; returns their max_seq."""
    if not isinstance(k_cache, torch.Tensor) or k_cache.dim() != 4:
        raise InputError(f"k_cache must be [batch, {config.num_key_value_heads}, max_seq, {config.head_dim}]")
    shape = (batch, config.num_key_value_heads, k_cache.shape[2], config.head_dim)
    _check_tensor("k_cache", k_cache, shape, (dtype,), contiguous=contiguous)
    _check_tensor("v_cache", v_cache, shape, (dtype,), contiguous=contiguous)
    return shape[2]
