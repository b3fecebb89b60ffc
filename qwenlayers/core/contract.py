"""The data contract of both phases, checked once, before any work.

Shared by the golden math and the kernel API so both reject the same inputs with the same
message. Nothing here modifies a tensor.

Two checks are the kernel API's alone (the golden works on copies and must be able to
reproduce a NaN): arguments whose memory overlaps (:func:`check_disjoint`; the cache
write-back would corrupt one with the other) and non-finite inputs (:func:`check_finite_decode`,
:func:`check_finite_prefill`; a NaN or Inf in what the layer reads makes its output NaN, and a
NaN output can not be checked against anything).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from qwenlayers.core.compare import FIRST_POSITIONS
from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.paged import PagedLayout, check_paged, check_pools
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


def _check_batch(phase: str, batch: int, shape: str) -> None:
    """An empty batch has nothing to run and no longest sequence to plan for: refuse it here,
    before a ``max()`` over no lengths fails somewhere deeper."""
    if batch < 1:
        raise InputError(f"{phase} got an empty batch (0 sequences); hidden must be {shape} with batch >= 1, "
                         "one row per sequence, and seq_lens one length per row")


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
    batch = _check_decode_hidden(config, hidden, dtypes, contiguous)
    if not isinstance(k_cache, torch.Tensor) or k_cache.dim() != 4:
        raise InputError(f"k_cache must be [batch, {config.num_key_value_heads}, max_seq, {config.head_dim}]")
    max_seq = k_cache.shape[2]
    if k_cache.shape[0] < batch:
        raise InputError(f"k_cache holds {k_cache.shape[0]} sequences but hidden has batch {batch}; the cache batch must equal it")
    cache_shape = (batch, config.num_key_value_heads, max_seq, config.head_dim)
    _check_tensor("k_cache", k_cache, cache_shape, (hidden.dtype,), contiguous=contiguous)
    _check_tensor("v_cache", v_cache, cache_shape, (hidden.dtype,), contiguous=contiguous)
    return check_seq_lens(seq_lens, batch, 1, max_seq, f"decode with a cache of max_seq={max_seq}")


def _check_decode_hidden(config: Qwen3Config, hidden: object, dtypes: Sequence[torch.dtype], contiguous: bool) -> int:
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise InputError(f"decode hidden must be [batch, {config.hidden_size}], got {got}")
    batch = hidden.shape[0]
    _check_batch("decode", batch, f"[batch, {config.hidden_size}]")
    _check_tensor("hidden", hidden, (batch, config.hidden_size), dtypes, contiguous=contiguous)
    return batch


def check_decode_paged(
    config: Qwen3Config, hidden: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor,
    seq_lens: torch.Tensor, *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, contiguous: bool = False,
) -> tuple[list[int], PagedLayout]:
    """Validate a paged decode: hidden [B, H], pools [num_blocks, KVH, BLOCK, D], block_table
    int32 [B, max_blocks], seq_lens [B] with 1 <= L <= max_blocks x BLOCK (core.paged)."""
    batch = _check_decode_hidden(config, hidden, dtypes, contiguous)
    _, block = check_pools(config, k_pool, v_pool, hidden.dtype)
    if not isinstance(block_table, torch.Tensor) or block_table.dim() != 2 or block_table.shape[0] != batch:
        got = tuple(block_table.shape) if isinstance(block_table, torch.Tensor) else type(block_table).__name__
        raise InputError(f"block_table must be int32 [{batch}, max_blocks_per_seq] (one row per sequence), got {got}")
    # the table's reach is checked per sequence (check_block_table), with the blocks it lacks
    lens = check_seq_lens(seq_lens, batch, 1, 2**31 - 1, "paged decode")
    return lens, check_paged(config, "decode", k_pool, v_pool, block_table, lens, hidden.dtype)


def check_prefill_paged(
    config: Qwen3Config, hidden: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor,
    seq_lens: torch.Tensor, *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, contiguous: bool = False,
) -> tuple[list[int], PagedLayout]:
    """Validate a paged prefill: hidden [B, S, H], pools [num_blocks, KVH, BLOCK, D],
    block_table int32 [B, max_blocks] covering every sequence's rows 0..L-1 (core.paged)."""
    lens = check_prefill(config, hidden, seq_lens, 2**31 - 1, dtypes=dtypes, contiguous=contiguous)
    return lens, check_paged(config, "prefill", k_pool, v_pool, block_table, lens, hidden.dtype)


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
    _check_batch("prefill", batch, f"[batch, seq, {config.hidden_size}]")
    _check_tensor("hidden", hidden, (batch, seq, config.hidden_size), dtypes, contiguous=contiguous)
    if seq > max_seq:
        raise InputError(f"prefill hidden has {seq} positions but max_seq={max_seq}; the padded length must be <= max_seq")
    return check_seq_lens(seq_lens, batch, 1, seq, f"prefill of padded length {seq}")


def check_caches(config: Qwen3Config, k_cache: torch.Tensor, v_cache: torch.Tensor, batch: int, dtype: torch.dtype, *, contiguous: bool) -> int:
    """Validate caller-given prefill caches; returns their max_seq. ``batch`` is 0 when hidden
    is not [B, S, H] or is empty, which is refused first (the cache shapes depend on it)."""
    _check_batch("prefill", batch, f"[batch, seq, {config.hidden_size}]")
    if not isinstance(k_cache, torch.Tensor) or k_cache.dim() != 4:
        raise InputError(f"k_cache must be [batch, {config.num_key_value_heads}, max_seq, {config.head_dim}]")
    shape = (batch, config.num_key_value_heads, k_cache.shape[2], config.head_dim)
    _check_tensor("k_cache", k_cache, shape, (dtype,), contiguous=contiguous)
    _check_tensor("v_cache", v_cache, shape, (dtype,), contiguous=contiguous)
    return shape[2]


# ---------------------------------------------------------------- memory shared by two arguments
def _byte_span(t: torch.Tensor) -> tuple[int, int] | None:
    """[first, last + 1) addresses this tensor's elements occupy (None when it has none): exact
    for a contiguous tensor, a superset for a strided view, so an overlap is never missed."""
    if t.numel() == 0:
        return None
    low = high = 0
    for size, stride in zip(t.shape, t.stride()):
        reach = (size - 1) * stride
        low, high = low + min(reach, 0), high + max(reach, 0)
    size = t.element_size()
    return t.data_ptr() + low * size, t.data_ptr() + (high + 1) * size


def check_disjoint(arguments: Mapping[str, torch.Tensor | None], weights: Mapping[str, torch.Tensor] | None = None) -> None:
    """Refuse any two arguments whose memory overlaps (``k_cache is v_cache``, a ``hidden`` that
    is a view into a cache, a weight inside a cache): the layer writes the caches in place, so
    the write-back would corrupt the other argument. The weights are one argument: two of them
    may share memory (tied norm gains), since nothing writes a weight, but none may overlap
    another argument. Checked before any work, so a refusal changes nothing."""
    spans = [(name, span) for name, t in arguments.items() if t is not None and (span := _byte_span(t)) is not None]
    weight_spans = [(f"weight {name}", span) for name, t in (weights or {}).items() if (span := _byte_span(t)) is not None]
    pairs = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :]] + [(a, w) for a in spans for w in weight_spans]
    for (name_a, (lo_a, hi_a)), (name_b, (lo_b, hi_b)) in pairs:
        if lo_a < hi_b and lo_b < hi_a:
            raise InputError(
                f"{name_a} and {name_b} share memory ({min(hi_a, hi_b) - max(lo_a, lo_b)} bytes overlap); the layer writes "
                "k_cache and v_cache in place, so one argument would corrupt the other. hidden, k_cache, v_cache, seq_lens "
                f"and the weights must each have memory of their own: pass a copy (e.g. {name_b.removeprefix('weight ')}.clone())"
            )


# ---------------------------------------------------------------- non-finite inputs
ALLOW_NONFINITE = "pass allow_nonfinite=True (CLI: --allow-nonfinite) to run anyway (a checked run then reports a failure)"
_CHUNK_ELEMENTS = 1 << 22  # bounds the bool mask of a 32B weight (~100M elements) to 4 MB


def _rows(t: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, block) over dim 0 in blocks of about _CHUNK_ELEMENTS elements."""
    per_row = max(1, t[0].numel()) if t.dim() > 1 and len(t) else 1  # a seq_len-1 decode reads no row: [KVH, 0, D]
    step = max(1, _CHUNK_ELEMENTS // per_row)
    for start in range(0, t.shape[0], step):
        yield start, t[start : start + step]


def _all_finite(t: torch.Tensor) -> bool:
    """The fast screen: min and max propagate NaN and show +-Inf, in one pass without a mask
    (a 32B layer's weights in well under a second)."""
    return t.numel() == 0 or all(bool(x.isfinite()) for x in torch.aminmax(t))


def _nonfinite(t: torch.Tensor) -> tuple[int, list[list[int]], list[float]]:
    """(count, first positions, their values) of the NaN/Inf elements of ``t``, in row-major order."""
    count, first, values = 0, [], []
    if _all_finite(t):
        return count, first, values
    for start, block in _rows(t):
        bad = ~block.isfinite()
        n = int(bad.sum())
        if n and len(first) < FIRST_POSITIONS:
            for idx in bad.nonzero()[: FIRST_POSITIONS - len(first)].tolist():
                first.append([start + idx[0], *idx[1:]])
                values.append(float(block[tuple(idx)]))
        count += n
    return count, first, values


def _refuse_nonfinite(name: str, t: torch.Tensor, where: str = "", offset: Sequence[int] = ()) -> None:
    """Raise when ``t`` (the part ``where`` of tensor ``name``, starting at index ``offset``) holds a NaN or Inf."""
    count, first, values = _nonfinite(t)
    if count:
        places = ", ".join(f"{[*offset, *p]} ({v})" for p, v in zip(first, values))
        raise InputError(
            f"{name} holds {count} non-finite value(s) (NaN/Inf){f' in {where}' if where else ''}, first at {places}; the layer reads them, "
            f"so its output would be NaN and nothing could check it. Fix the input, or {ALLOW_NONFINITE}"
        )


def check_finite_weights(weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse a NaN or Inf in any weight: every one is read for every token (a checkpoint saved
    after a diverged step looks like this)."""
    for name, t in weights.items():
        _refuse_nonfinite(f"weight {name}", t)


def check_finite_decode(
    hidden: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lens: Sequence[int], weights: Mapping[str, torch.Tensor]
) -> None:
    """Refuse NaN/Inf in what a decode step reads: hidden, every weight, and cache rows
    0..seq_len-2 of each sequence (row seq_len-1 is written; rows past it are never touched and
    may hold anything, e.g. ``torch.empty`` garbage)."""
    _refuse_nonfinite("hidden", hidden, "the new tokens")
    check_finite_weights(weights)
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        for b, n in enumerate(lens):
            _refuse_nonfinite(name, cache[b, :, : n - 1], f"the rows the attention reads (rows 0..{n - 2} of sequence {b}, "
                              f"seq_len {n}; positions [batch, kv head, row, dim])", (b,))


def check_finite_prefill(hidden: torch.Tensor, lens: Sequence[int], weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse NaN/Inf in what a prefill reads: rows 0..seq_len-1 of each sequence of hidden (the
    padding past it is never read) and every weight. Prefill reads none of the caller's cache rows."""
    for b, n in enumerate(lens):
        _refuse_nonfinite("hidden", hidden[b, :n], f"the tokens of sequence {b} (rows 0..{n - 1}, seq_len {n})", (b,))
    check_finite_weights(weights)


def check_arguments(
    phase: str, hidden: torch.Tensor, seq_lens: torch.Tensor, lens: Sequence[int], weights: Mapping[str, torch.Tensor], *,
    k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None, allow_nonfinite: bool = False,
) -> None:
    """The kernel API's checks after the shapes (:func:`check_decode` / :func:`check_prefill`):
    no two arguments share memory, and, unless the caller opts in, nothing the layer reads is
    NaN or Inf."""
    check_disjoint({"hidden": hidden, "k_cache": k_cache, "v_cache": v_cache, "seq_lens": seq_lens}, weights)
    if allow_nonfinite:
        return
    if phase == "decode" and k_cache is not None and v_cache is not None:
        check_finite_decode(hidden, k_cache, v_cache, lens, weights)
    else:
        check_finite_prefill(hidden, lens, weights)


def passthrough_rows(phase: str, lens: Sequence[int], max_seq: int) -> torch.Tensor:
    """[B, 1, max_seq, 1] bool, True at the cache rows the layer must not write (decode: all but
    row seq_len-1; prefill: rows >= seq_len): where a check takes bit-identical garbage as exact."""
    rows = torch.arange(max_seq)
    written = [(rows == n - 1) if phase == "decode" else (rows < n) for n in lens]
    return ~torch.stack(written)[:, None, :, None]
