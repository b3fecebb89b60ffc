"""Splitting a checked run into batch chunks, one worker process each, so each stays in memory.

pypto 0.2.0's tensor-graph interpreter (the only way to get output values on a CPU) keeps a
capture of the inputs of every loop-body call and frees nothing until the process exits. A
view of the KV cache inside the attention loop makes the whole cache tensor an input of every
block iteration, so the memory of one process grows with (cache bytes of the rows it holds) x
(block iterations it runs) — the spike was OOM-killed at 24 GB on the 32B attention alone.

The estimate below is that product with factors measured on this project's decode kernel
(see docs/runtime.md); the runtime picks the largest contiguous chunks whose estimate stays
under the budget. Cost-model-only runs (no values) capture nothing and are never split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qwenlayers.core.config import Qwen3Config

GIB = 1024**3
#: Default budget per worker process; ``QWENLAYERS_WORKER_MEM_GB`` overrides it.
DEFAULT_BUDGET_GB = 10.0
#: Bytes the interpreter keeps per byte of a loop-body call's inputs (measured: 3.4 in the spike).
CAPTURE_FACTOR = 3.4
#: Process baseline: Python, torch, pypto, the calculator (measured ~0.35 GB) plus margin.
BASE_BYTES = int(0.6 * GIB)


def budget_bytes() -> int:
    value = os.environ.get("QWENLAYERS_WORKER_MEM_GB")
    return int(float(value) * GIB) if value else int(DEFAULT_BUDGET_GB * GIB)


def decode_verify_bytes(config: Qwen3Config, lens: list[int], cache_rows: int, seq_tile: int) -> int:
    """Estimated peak bytes of one worker verifying a decode step over sequences ``lens`` with
    caches trimmed to ``cache_rows`` rows."""
    d, kvh = config.head_dim, config.num_key_value_heads
    weights = config.weight_bytes()
    cache = 2 * len(lens) * kvh * cache_rows * d * 2  # K and V of the rows this process holds
    block_calls = sum(-(-n // seq_tile) for n in lens)
    loop_calls = len(lens) + block_calls
    return int(BASE_BYTES + CAPTURE_FACTOR * (weights + cache + loop_calls * cache))


@dataclass(frozen=True)
class Chunk:
    start: int
    stop: int
    estimate_bytes: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def decode_chunks(config: Qwen3Config, lens: list[int], seq_tile: int, *, budget: int | None = None) -> list[Chunk]:
    """Contiguous batch chunks, each as large as the budget allows (at least one row)."""
    limit = budget_bytes() if budget is None else budget
    chunks: list[Chunk] = []
    start = 0
    while start < len(lens):
        stop = start + 1
        while stop < len(lens) and _estimate(config, lens[start : stop + 1], seq_tile) <= limit:
            stop += 1
        chunks.append(Chunk(start, stop, _estimate(config, lens[start:stop], seq_tile)))
        start = stop
    return chunks


def cache_rows_needed(lens: list[int], seq_tile: int) -> int:
    """Cache rows a chunk's kernel is compiled for: its longest sequence rounded up to whole
    attention blocks. Rows past the longest sequence are never read or written, so they need
    not travel; rounding up (padding past MAX_SEQ if needed) keeps every block view in bounds."""
    return -(-max(lens) // seq_tile) * seq_tile


def _estimate(config: Qwen3Config, lens: list[int], seq_tile: int) -> int:
    return decode_verify_bytes(config, lens, cache_rows_needed(lens, seq_tile), seq_tile)
