"""The cache rows a layer call may write, and nothing else: trimming the caches a worker sees,
checking that a worker changed only the documented rows, and writing those rows back into the
caller's caches once every worker has succeeded. Used by the layer calls and tensor parallel."""

from __future__ import annotations

import torch

from qwenlayers.core.platform import Phase
from qwenlayers.errors import KernelError

#: Rows a worker wrote: (batch row, first cache row, K rows [KVH, n, D], V rows [KVH, n, D]).
Written = tuple[int, int, torch.Tensor, torch.Tensor]
#: A paged slot a worker wrote: (block id in the caller's pool, slot, K row [KVH, D], V row [KVH, D]).
WrittenSlot = tuple[int, int, torch.Tensor, torch.Tensor]


def trimmed(cache: torch.Tensor, rows: int) -> torch.Tensor:
    """The first ``rows`` cache rows (zero-padded past MAX_SEQ), as a new contiguous tensor."""
    out = torch.zeros(cache.shape[0], cache.shape[1], rows, cache.shape[3], dtype=cache.dtype)
    n = min(rows, cache.shape[2])
    out[:, :, :n] = cache[:, :, :n]
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, not equal in value: unused rows of a ``torch.empty`` cache may hold NaNs,
    and NaN != NaN would make an untouched row look written."""
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return a.dtype == b.dtype and torch.equal(a.view(as_int[a.element_size()]), b.view(as_int[b.element_size()]))


def check_only_spans_written(
    phase: Phase, name: str, before: torch.Tensor, after: torch.Tensor, spans: list[tuple[int, int]], offset: int
) -> None:
    """Rows outside each sequence's span ``[start, stop)`` must come back bit-identical; a
    kernel that wrote anywhere else is a bug, caught before anything is written back."""
    keep = torch.ones(before.shape[0], before.shape[2], dtype=torch.bool)
    for i, (start, stop) in enumerate(spans):
        keep[i, start:stop] = False
    b_idx, r_idx = keep.nonzero(as_tuple=True)
    if not same_bits(before[b_idx, :, r_idx], after[b_idx, :, r_idx]):
        allowed = "row seq_len-1" if phase == "decode" else "rows 0..seq_len-1"
        raise KernelError(f"the {phase} kernel changed {name} rows other than {allowed} (batch rows {offset}..); "
                          "nothing was written back")


def collect_spans(
    phase: Phase, before: tuple[torch.Tensor, torch.Tensor], outputs: dict[str, torch.Tensor], spans: list[tuple[int, int]],
    offset: int, written: list[Written],
) -> None:
    """Check a worker's caches and keep its written rows for the write-back once every worker
    has succeeded."""
    for name, old in zip(("k_cache", "v_cache"), before):
        check_only_spans_written(phase, name, old, outputs[name], spans, offset)
    for i, (start, stop) in enumerate(spans):
        written.append((offset + i, start, outputs["k_cache"][i, :, start:stop].clone(), outputs["v_cache"][i, :, start:stop].clone()))


def write_back(k_cache: torch.Tensor, v_cache: torch.Tensor, written: list[Written]) -> None:
    for b, start, k_rows, v_rows in written:
        k_cache[b, :, start : start + k_rows.shape[1]] = k_rows
        v_cache[b, :, start : start + v_rows.shape[1]] = v_rows


def collect_slots(phase: Phase, before: tuple[torch.Tensor, torch.Tensor], outputs: dict[str, torch.Tensor],
                  slots: list[tuple[int, int]], ids: list[int], written: list[WrittenSlot]) -> None:
    """A paged worker's pools (compact: block ``i`` is the caller's ``ids[i]``) must come back
    bit-identical but for ``slots`` (compact block, slot); keep those for the write-back."""
    for name, old in zip(("k_cache", "v_cache"), before):
        new = outputs[name]
        keep = torch.ones(old.shape[0], old.shape[2], dtype=torch.bool)
        for blk, slot in slots:
            keep[blk, slot] = False
        b_idx, s_idx = keep.nonzero(as_tuple=True)
        if not same_bits(old[b_idx, :, s_idx], new[b_idx, :, s_idx]):
            allowed = "the new row's slot" if phase == "decode" else "the slots of rows 0..seq_len-1"
            raise KernelError(f"the paged {phase} kernel changed {name} slots other than {allowed}; nothing was written back")
    for blk, slot in slots:
        written.append((ids[blk], slot, outputs["k_cache"][blk, :, slot].clone(), outputs["v_cache"][blk, :, slot].clone()))


def write_back_slots(k_pool: torch.Tensor, v_pool: torch.Tensor, written: list[WrittenSlot]) -> None:
    for blk, slot, k_row, v_row in written:
        k_pool[blk, :, slot] = k_row
        v_pool[blk, :, slot] = v_row
