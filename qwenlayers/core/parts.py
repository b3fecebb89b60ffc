"""The one vocabulary of program parts, used by the builders, the jobs, the chunking and tensor
parallel alike.

* ``layer``: the whole layer.
* ``to_residual``: norm, projections, attention and o_proj up to the first residual (a decode
  batch chunk whose MLP runs in intermediate shards).
* ``partial_o_proj``: the same, stopping at reduction point 1: one tensor-parallel rank's fp32
  partial o_proj (no residual).
* ``qkv``, ``attend``, ``o_proj``: one loop each of a prefill too big for one worker: the
  projections (loop A), the attention over query tiles (loop B), o_proj and the residual (loop C).
"""

from __future__ import annotations

from typing import Literal

Part = Literal["layer", "to_residual", "partial_o_proj", "qkv", "attend", "o_proj"]
DECODE_PARTS: tuple[Part, ...] = ("layer", "to_residual", "partial_o_proj")
#: the loops of one prefill program, one part each (a checked run too big for one worker)
SPLIT_PARTS: tuple[Part, ...] = ("qkv", "attend", "o_proj")
PREFILL_PARTS: tuple[Part, ...] = ("layer", "partial_o_proj", *SPLIT_PARTS)
