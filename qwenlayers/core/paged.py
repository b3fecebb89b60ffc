"""Paged KV caches: the layout, the block-table contract, and where each row lives.

Serving stacks keep the KV cache in fixed-size blocks from one shared pool and give each
sequence a block table (docs/paged.md). qwenlayers' paged layout:

* ``k_cache`` / ``v_cache`` pools ``[num_blocks, KVH, BLOCK, D]`` bf16: block ``n``, KV head
  ``h``, slot ``s`` holds one row of D;
* ``block_table`` int32 ``[B, max_blocks_per_seq]``: row ``r`` of sequence ``b`` (token ``r``)
  lives in block ``block_table[b, r // BLOCK]`` at slot ``r % BLOCK``. Entries past a
  sequence's last block are never read (serving stacks pad them, often with -1).

Heads sit outside the block's rows, so one (block, head) is a contiguous [BLOCK, D] tile: the
same tile the contiguous kernels read per attention iteration, now found through the table.
The [num_blocks, block_size, KVH, D] layout some serving stacks use would make every such tile a
strided gather of KVH-interleaved rows; a caller holding that layout converts a pool with
``pool.transpose(1, 2).contiguous()``.

Blocks may be shared between sequences (a common prefix, as prefix caching shares it) for
reading. A call refuses what would make the result depend on the order the sequences run in:
two sequences writing one block, and a sequence writing a slot that another sequence of the
call reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import Phase
from qwenlayers.errors import InputError


@dataclass(frozen=True)
class PagedLayout:
    """What a call's pools and table are: ``block`` rows per block, ``num_blocks`` in the pool,
    ``max_blocks`` entries per table row."""

    block: int
    num_blocks: int
    max_blocks: int


def blocks_needed(length: int, block: int) -> int:
    return -(-length // block)


def check_pools(config: Qwen3Config, k_pool: object, v_pool: object, dtype: torch.dtype) -> tuple[int, int]:
    """Pools [num_blocks, KVH, BLOCK, D] of ``dtype``, contiguous, the same shape; returns
    (num_blocks, BLOCK)."""
    want = f"[num_blocks, {config.num_key_value_heads}, block_size, {config.head_dim}]"
    for name, pool in (("k_cache", k_pool), ("v_cache", v_pool)):
        if not isinstance(pool, torch.Tensor) or pool.dim() != 4:
            got = tuple(pool.shape) if isinstance(pool, torch.Tensor) else type(pool).__name__
            raise InputError(f"a paged {name} is a block pool {want}, got {got}")
        if pool.shape[1] != config.num_key_value_heads or pool.shape[3] != config.head_dim or pool.shape[0] < 1 or pool.shape[2] < 1:
            raise InputError(f"paged {name} has shape {list(pool.shape)}; a block pool is {want}")
        if pool.dtype != dtype:
            raise InputError(f"paged {name} is {pool.dtype}; the pools are {dtype}")
        if not pool.is_contiguous():
            raise InputError(f"paged {name} is not contiguous; pass a contiguous pool (.contiguous())")
    assert isinstance(k_pool, torch.Tensor) and isinstance(v_pool, torch.Tensor)
    if k_pool.shape != v_pool.shape:
        raise InputError(f"k_cache {list(k_pool.shape)} and v_cache {list(v_pool.shape)} pools differ in shape; they are one pool each")
    return int(k_pool.shape[0]), int(k_pool.shape[2])


def check_block_table(table: object, lens: Sequence[int], num_blocks: int, block: int) -> int:
    """An int32 [B, max_blocks] table whose first ceil(L / BLOCK) entries of each row are block
    ids of the pool; returns max_blocks."""
    batch = len(lens)
    if not isinstance(table, torch.Tensor) or table.dim() != 2 or table.shape[0] != batch:
        got = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise InputError(f"block_table must be int32 [{batch}, max_blocks_per_seq] (one row per sequence), got {got}")
    if table.dtype != torch.int32:
        raise InputError(f"block_table is {table.dtype}; it is int32")
    for b, n in enumerate(lens):
        need = blocks_needed(n, block)
        if need > table.shape[1]:
            raise InputError(f"sequence {b} has {n} tokens, {need} blocks of {block}, but block_table has {table.shape[1]} "
                             "entries per sequence; give each sequence a table row covering its length")
        row = table[b, :need]
        bad = ((row < 0) | (row >= num_blocks)).nonzero()
        if bad.numel():
            j = int(bad[0, 0])
            raise InputError(f"block_table[{b}, {j}] = {int(row[j])} is not a block of the pool: ids 0..{num_blocks - 1} "
                             f"(the pool holds {num_blocks} blocks)")
    return int(table.shape[1])


def written_slots(phase: Phase, lens: Sequence[int], table: torch.Tensor, block: int) -> list[list[tuple[int, int]]]:
    """Per sequence, the (block id, slot) pairs the call writes: the new row seq_len-1 in decode,
    rows 0..seq_len-1 in prefill."""
    rows = [[n - 1] if phase == "decode" else range(n) for n in lens]
    return [[(int(table[b, r // block]), r % block) for r in rs] for b, rs in enumerate(rows)]


def read_slots(lens: Sequence[int], table: torch.Tensor, block: int) -> list[set[tuple[int, int]]]:
    """Per sequence, the (block id, slot) pairs its attention reads: rows 0..seq_len-1."""
    return [{(int(table[b, r // block]), r % block) for r in range(n)} for b, n in enumerate(lens)]


def check_no_conflicts(phase: Phase, lens: Sequence[int], table: torch.Tensor, block: int) -> None:
    """Refuse writes whose result would depend on the order the sequences run in: two sequences
    writing one block, or a sequence writing a slot another sequence reads."""
    writes = written_slots(phase, lens, table, block)
    owner: dict[int, int] = {}
    for b, slots in enumerate(writes):
        for blk in {n for n, _ in slots}:
            if owner.setdefault(blk, b) != b:
                raise InputError(f"sequences {owner[blk]} and {b} both write block {blk} of the pool; a block one "
                                 "sequence writes must be its own in this call (shared blocks are for reading)")
    if phase == "decode":
        reads = read_slots(lens, table, block)
        for b, slots in enumerate(writes):
            for other, seen in enumerate(reads):
                hit = next((s for s in slots if s in seen), None)
                if other != b and hit is not None:
                    raise InputError(f"sequence {b} writes block {hit[0]} slot {hit[1]}, which sequence {other} reads in "
                                     "the same call; copy the shared block first (copy-on-write), as serving stacks do")


def check_paged(config: Qwen3Config, phase: Phase, k_pool: object, v_pool: object, table: object, lens: Sequence[int],
                dtype: torch.dtype) -> PagedLayout:
    """The whole paged contract of one call, before any work."""
    num_blocks, block = check_pools(config, k_pool, v_pool, dtype)
    max_blocks = check_block_table(table, lens, num_blocks, block)
    assert isinstance(table, torch.Tensor)
    check_no_conflicts(phase, lens, table, block)
    return PagedLayout(block, num_blocks, max_blocks)


@dataclass(frozen=True)
class CompactPools:
    """The blocks a call touches, copied into pools of their own with the table renumbered: what
    a worker is sent (a shared pool can be far larger than one call's blocks). ``ids[i]`` is the
    caller's block id of compact block ``i``."""

    k: torch.Tensor
    v: torch.Tensor
    table: torch.Tensor
    ids: list[int]

    def slots(self, phase: Phase, lens: Sequence[int], block: int) -> list[tuple[int, int]]:
        """Every (compact block, slot) the call writes, all sequences together."""
        return [s for seq in written_slots(phase, lens, self.table, block) for s in seq]


def compact(k_pool: torch.Tensor, v_pool: torch.Tensor, table: torch.Tensor, lens: Sequence[int], block: int,
            per_iteration: int = 1) -> CompactPools:
    """Copy the blocks ``lens`` reach (in first-use order) and renumber ``table`` to them; entries
    past a sequence's last block become 0 (read, but cut to no rows). The table is padded to
    whole ``per_iteration`` groups: an attention iteration reads that many entries."""
    ids: list[int] = []
    index: dict[int, int] = {}
    width = blocks_needed(max(blocks_needed(n, block) for n in lens), per_iteration) * per_iteration
    new = torch.zeros(len(lens), width, dtype=torch.int32)
    for b, n in enumerate(lens):
        for j in range(blocks_needed(n, block)):
            blk = int(table[b, j])
            if blk not in index:
                index[blk] = len(ids)
                ids.append(blk)
            new[b, j] = index[blk]
    pick = torch.tensor(ids, dtype=torch.long)
    return CompactPools(k_pool[pick].contiguous(), v_pool[pick].contiguous(), new, ids)


def gather(pool: torch.Tensor, table: torch.Tensor, lens: Sequence[int], block: int) -> torch.Tensor:
    """The sequences' rows as a contiguous cache [B, KVH, rows, D] (rows: the longest sequence's
    blocks; a shorter sequence's rows past its blocks are zero): what the golden math and the
    finiteness checks read. A copy for checking, never what a kernel is given."""
    width = max(blocks_needed(n, block) for n in lens)
    out = torch.zeros(len(lens), pool.shape[1], width * block, pool.shape[3], dtype=pool.dtype)
    for b, n in enumerate(lens):
        for j in range(blocks_needed(n, block)):
            out[b, :, j * block : (j + 1) * block] = pool[int(table[b, j])]
    return out


def shuffled_pools(k_cache: torch.Tensor, v_cache: torch.Tensor, block: int, *, seed: int = 0,
                   spare: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contiguous caches [B, KVH, ROWS, D] moved into pools of ``block``-row blocks in a shuffled
    order (as a serving stack's allocator leaves them after a while), with ``spare`` blocks no
    sequence owns; returns (k_pool, v_pool, block_table). ROWS is padded up to whole blocks."""
    b, kvh, rows, d = k_cache.shape
    per = blocks_needed(rows, block)
    total = b * per + spare
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    table = order[: b * per].view(b, per).to(torch.int32)
    k_pool = torch.zeros(total, kvh, block, d, dtype=k_cache.dtype)
    v_pool = torch.zeros_like(k_pool)
    padded = per * block
    for src, pool in ((k_cache, k_pool), (v_cache, v_pool)):
        full = torch.zeros(b, kvh, padded, d, dtype=src.dtype)
        full[:, :, :rows] = src
        pool[table.reshape(-1).long()] = full.view(b, kvh, per, block, d).transpose(1, 2).reshape(b * per, kvh, block, d)
    return k_pool, v_pool, table
