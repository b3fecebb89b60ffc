"""Splitting a checked run into pieces, one worker process each, so each stays in memory.

pypto 0.2.0 gives output values on a CPU only through its tensor-graph interpreter, which
keeps a capture of the inputs of every loop-body call and frees nothing until the process
exits; and compiling a static program costs memory in proportion to its cube tiles, i.e. to
the weight bytes it multiplies (a 16 KB TILE budget makes the 32B layer ~64k L0 tile ops).
Measured on this project's decode kernel (docs/decode.md):

* qwen3-32b whole layer, 1 sequence, 1 attention block: 8.8 GB compiling for the cost model,
  13.5 GB with values: about 13.5 bytes per weight byte; the whole-batch cost-model run of
  B=16, L=4096 peaked at 16.2 GB (it is not split: it is how the batch's timing is measured);
* attention loop: 3.4 bytes per byte of cache the process holds, per loop-body call (the
  cache view makes the whole cache an input of every block iteration).

So a checked run is cut two ways: batch rows into chunks (the attention term), and, when
even one row of the whole layer would not fit, the layer into its two halves at the
tensor-parallel seam: the attention half per batch chunk, the MLP half in shards of the
intermediate dimension whose fp32 partial sums the host adds (what an all-reduce would do).
Cost-model-only runs (no values) capture nothing and are never split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.kernels.layer_blocks import LayerTiles
from qwenlayers.core.kernels.reference import projection_loops
from qwenlayers.core.parts import Part
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.errors import InputError

GIB = 1024**3
#: Default budget per worker process; ``QWENLAYERS_WORKER_MEM_GB`` overrides it.
DEFAULT_BUDGET_GB = 10.0
# Measured on the spike and this kernel, then raised ~12 % after the qwen3-32b benchmark's
# workers came in above the first estimates (attention 7.27 GB vs 6.48, MLP shard 6.18 vs 5.54).
CAPTURE_FACTOR = 3.8  # bytes kept per byte of a loop-body call's inputs (3.4 measured alone)
WEIGHT_FACTOR = 15.0  # bytes of compile + capture per weight byte of a static program with values (13.5 measured)
BASE_BYTES = int(0.6 * GIB)  # Python, torch, pypto, the calculator (~0.35 GB) plus margin
# The cost model's own memory grows with the task count, i.e. with tokens x layer size: qwen3-0.6b
# prefill cost-model runs peaked at 3.5 / 5.1 / 8.7 GB for 128 / 256 / 512 tokens.
PREFILL_SIM_FACTOR = 0.45
# Prefill loop B keeps about this many copies of all its tensor arguments per query tile and KV
# head, and per key-block iteration (:func:`_attention_loop_capture`; fitted 2.1 / 1.5, plus 20 %).
ITEM_CAPTURE = 2.5
BLOCK_CAPTURE = 1.8
# A loop-A/B/C program of a split checked prefill holds about this many copies of the whole
# layer's weights beyond the one it is sent (they are all its arguments): qwen3-32b at 1,024
# tokens, measured worker peaks minus the estimates without it were 4.1 (loop A), 4.05 (loop B,
# one query tile) and 3.5 GB (loop C) for 0.975 GB of weights: 3.6-4.2x. At 4.5 the rerun's
# loop-A worker of 7 token tiles still peaked at 10.26 GB (estimated 9.84; of one tile 7.73,
# estimated 7.46), so 4.8: the loop then splits 6 + 2.
PART_ARGS_FACTOR = 4.8


def env_bytes(name: str, what: str, example: str, default: str) -> int | None:
    """Bytes from the environment variable ``name`` (in GB), or None when it is unset or empty.

    Anything but a finite number > 0 (at least one byte) is refused, naming the variable and its
    value: ``garbage`` would crash ``float()``, ``nan`` and ``inf`` make every comparison
    meaningless. ``what`` names the quantity, ``example`` a good value, ``default`` what unset gives."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not 0 < gb < float("inf") or int(gb * GIB) < 1:  # nan fails every comparison
        raise InputError(f"{name}={raw!r} is not {what}; allowed: a finite number of GB > 0 (at least one byte), "
                         f"e.g. {name}={example} (or unset it for {default})")
    return int(gb * GIB)


def budget_bytes() -> int:
    """Bytes one worker process may use: ``QWENLAYERS_WORKER_MEM_GB`` (GB) when set, else
    :data:`DEFAULT_BUDGET_GB`. The same rule for decode and prefill (:func:`env_bytes`): ``0`` or
    a negative budget used to let decode plan while prefill refused."""
    given = env_bytes("QWENLAYERS_WORKER_MEM_GB", "a worker memory budget", "10", f"the default {DEFAULT_BUDGET_GB:g}")
    return int(DEFAULT_BUDGET_GB * GIB) if given is None else given


MEM_LIMIT_ENV = "QWENLAYERS_WORKER_MEM_LIMIT_GB"
DEFAULT_MEM_LIMIT_FRACTION = 0.85


def _machine_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit_bytes() -> int:
    """The resident size at which a worker is stopped: ``QWENLAYERS_WORKER_MEM_LIMIT_GB``, or
    85 % of the machine. Not the checked-run budget (QWENLAYERS_WORKER_MEM_GB, which sizes the
    split): a hard stop, so a run the estimates did not foresee (an estimate that is off) fails
    with its figures instead of waking the OOM killer. A cost-model run, which is one worker
    whatever its size, is held to it up front (:func:`check_decode_cost_model_fits`)."""
    given = env_bytes(MEM_LIMIT_ENV, "a memory limit", "20", f"{DEFAULT_MEM_LIMIT_FRACTION:.0%} of this machine")
    return int(DEFAULT_MEM_LIMIT_FRACTION * _machine_bytes()) if given is None else given


def attention_weight_bytes(config: Qwen3Config) -> int:
    h = config.hidden_size
    return 2 * (2 * h * config.q_width + 2 * h * config.kv_width + 2 * h + 2 * config.head_dim)


def mlp_weight_bytes(config: Qwen3Config, inter: int) -> int:
    return 2 * (3 * config.hidden_size * inter + config.hidden_size)


def cache_rows_needed(lens: list[int], block: int) -> int:
    """Cache rows a chunk's kernel is compiled for: its longest sequence rounded up to whole
    attention blocks. Rows past the longest sequence are never read or written, so they need
    not travel; rounding up (padding past MAX_SEQ if needed) keeps every block view in bounds."""
    return -(-max(lens) // block) * block


def attention_capture_bytes(config: Qwen3Config, lens: list[int], block: int) -> int:
    cache = 2 * len(lens) * config.num_key_value_heads * cache_rows_needed(lens, block) * config.head_dim * 2
    loop_calls = len(lens) + sum(-(-n // block) for n in lens)
    return int(CAPTURE_FACTOR * cache * (1 + loop_calls))


def estimate(config: Qwen3Config, lens: list[int], block: int, *, part: Part) -> int:
    """Estimated peak bytes of one worker computing values for ``part`` (layer or to_residual)."""
    weights = config.weight_bytes() if part == "layer" else attention_weight_bytes(config)
    return int(BASE_BYTES + WEIGHT_FACTOR * weights + attention_capture_bytes(config, lens, block))


def mlp_estimate(config: Qwen3Config, inter: int) -> int:
    return int(BASE_BYTES + WEIGHT_FACTOR * mlp_weight_bytes(config, inter))


@dataclass(frozen=True)
class Chunk:
    start: int
    stop: int
    estimate_bytes: int


@dataclass(frozen=True)
class DecodeSplit:
    """How a checked decode run is cut: ``part`` is ``layer`` (chunks run the whole layer) or
    ``to_residual`` (chunks run up to the first residual and ``mlp_shards`` shards run the MLP)."""

    part: Part
    chunks: list[Chunk]
    mlp_shards: int = 0
    mlp_estimate_bytes: int = 0


def _greedy_chunks(lens: list[int], cost: Callable[[list[int]], int], limit: int) -> list[Chunk]:
    """Contiguous chunks of ``lens``, each grown while ``cost`` of it stays within ``limit``
    (a chunk holds at least one sequence)."""
    chunks: list[Chunk] = []
    start = 0
    while start < len(lens):
        stop = start + 1
        while stop < len(lens) and cost(lens[start : stop + 1]) <= limit:
            stop += 1
        chunks.append(Chunk(start, stop, cost(lens[start:stop])))
        start = stop
    return chunks


def _halve_mlp(inter: int, mlp_step: int, too_big: Callable[[int], bool]) -> int:
    """Intermediate shards of an MLP: doubled while ``too_big(shards)`` and the halved width
    stays a multiple of ``mlp_step`` (the granule an MLP shard's width must be a multiple of)."""
    shards = 1
    while too_big(shards) and inter % (2 * shards * mlp_step) == 0:
        shards *= 2
    return shards


def split_decode(config: Qwen3Config, lens: list[int], block: int, mlp_step: int, *, budget: int | None = None) -> DecodeSplit:
    """Cut a checked decode run so every worker's estimate stays under the budget where it
    can. ``mlp_step`` is the granule an MLP shard's width must be a multiple of."""
    limit = budget_bytes() if budget is None else budget
    longest = [max(lens)]
    if estimate(config, longest, block, part="layer") <= limit:
        return DecodeSplit("layer", _greedy_chunks(lens, lambda part: estimate(config, part, block, part="layer"), limit))
    inter = config.intermediate_size
    shards = _halve_mlp(inter, mlp_step, lambda n: mlp_estimate(config, inter // n) > limit)
    chunks = _greedy_chunks(lens, lambda part: estimate(config, part, block, part="to_residual"), limit)
    return DecodeSplit("to_residual", chunks, shards, mlp_estimate(config, inter // shards))


def _attention_loop_capture(config: Qwen3Config, lens: list[int], seq_tile: int, kv_block: int,
                            items: list[tuple[int, int]]) -> int:
    """Bytes the interpreter keeps for prefill loop B over ``items`` ((length, query tile) pairs).

    Loop B's calls take the whole packed q/k/v/attn workspaces, the caches and the causal mask
    as inputs, so each call's capture is about the bytes of all of them (``unit``), whatever
    rows it views: per query tile, once per KV head (the head loop is unrolled in the body);
    per key-block iteration, once more. Fitted on checked qwen3-0.6b prefills of 1,024 tokens
    split into attention workers of 1, 2 and 4 query tiles (1.71 / 2.49 / 3.13 GB peak):
    :data:`ITEM_CAPTURE` and :data:`BLOCK_CAPTURE` units, with a 20 % margin. The earlier model
    (K/V workspaces per iteration) missed the mask, which KV_BLOCK-wide key blocks made
    (1 + KB/ST) * ST*G * KB fp32: 10.5 MB at qwen3-32b, and a 32B 1,024-token attention worker
    estimated at 7.7 GB was killed at 21.6 GB."""
    kb = kv_block or seq_tile
    per_blk, kvh = kb // seq_tile, config.num_key_value_heads
    tokens = sum(lens)
    cache = 2 * len(lens) * kvh * cache_rows_needed(lens, seq_tile) * config.head_dim * 2
    mask = (1 + per_blk) * seq_tile * config.group_size * kb * 4
    unit = tokens * (2 * config.q_width + 2 * config.kv_width) * 2 + cache + mask
    calls = sum(kvh * (q // per_blk + 1) for _, q in items)
    return int(unit * (ITEM_CAPTURE * kvh * len(items) + BLOCK_CAPTURE * calls))


def prefill_estimate(config: Qwen3Config, lens: list[int], seq_tile: int, token_tile: int, kv_block: int = 0) -> int:
    """Estimated peak bytes of one worker computing prefill values for sequences ``lens``.

    The projection loops run once per token tile, and each call captures the whole weights
    and activations it views; the attention loop as :func:`_attention_loop_capture`."""
    h = config.hidden_size
    tokens = sum(lens)
    tiles = -(-tokens // token_tile)
    act = tokens * (2 * h + 2 * config.q_width + 2 * config.kv_width) * 2  # x, out, q, attn, k, v workspaces
    items = [(n, q) for n in lens for q in range(-(-n // seq_tile))]
    captured = CAPTURE_FACTOR * tiles * (config.weight_bytes() + act)
    attention = _attention_loop_capture(config, lens, seq_tile, kv_block, items)
    simulated = PREFILL_SIM_FACTOR * tokens * config.weight_bytes()
    return int(BASE_BYTES + WEIGHT_FACTOR * config.weight_bytes() + captured + attention + simulated)


def prefill_chunks(config: Qwen3Config, lens: list[int], seq_tile: int, token_tile: int, *, kv_block: int = 0,
                   budget: int | None = None) -> list[Chunk]:
    """Contiguous chunks of sequences under the budget. A sequence that alone exceeds it is
    refused: its prefill is one program and cannot be cut further here."""
    limit = budget_bytes() if budget is None else budget
    chunks = _greedy_chunks(lens, lambda part: prefill_estimate(config, part, seq_tile, token_tile, kv_block), limit)
    for chunk in chunks:
        if chunk.estimate_bytes > limit:  # only a lone sequence can be over: a chunk grows only while it fits
            raise InputError(
                f"a checked prefill of seq_len {lens[chunk.start]} on {config.name} needs about {chunk.estimate_bytes / GIB:.1f} GB "
                f"in one worker (pypto 0.2.0 keeps every loop call's inputs to produce values on a CPU); the budget is "
                f"{limit / GIB:.1f} GB. Raise QWENLAYERS_WORKER_MEM_GB if the machine has the memory, or use a shorter sequence"
            )
    return chunks


def reference_estimate(config: Qwen3Config, plan: TilingPlan, phase: str, lens: list[int]) -> int:
    """Estimated peak bytes of one worker computing values of the reference-schedule baseline
    (:mod:`qwenlayers.core.kernels.reference`) for sequences ``lens``.

    The baseline's projections are loops over (output block, K chunk) whose every call takes
    the whole weight tensor as an input, so the interpreter keeps a copy of the weight per call:
    the capture grows with the number of tiles, not with the batch, and no chunking helps. Its
    attention loops (per sequence or, in prefill, per token; per KV head and key block, four
    one-trip stages each) take the whole cache per call. Measured: qwen3-0.6b prefill of 4 tokens
    went past 24 GB (killed by the OOM killer) where the fused kernel's estimate said 1.2 GB."""
    kvh, d, st = config.num_key_value_heads, config.head_dim, plan.seq_tile
    rows = len(lens) if phase == "decode" else sum(lens)
    # each call keeps the whole weight tensor it views, its input rows and its output rows (bf16)
    captured = sum(p.loop_calls * 2 * (p.k * p.w_cols + rows * (p.k + p.n)) for p in projection_loops(config, plan).values())
    cache = 2 * len(lens) * kvh * cache_rows_needed(lens, st) * d * 2
    if phase == "decode":
        attention_calls = sum(kvh * (2 + 5 * -(-n // st)) for n in lens)
    else:
        attention_calls = sum(kvh * (2 + 5 * -(-(pos + 1) // st)) for n in lens for pos in range(n))
    captured += attention_calls * cache
    return int(BASE_BYTES + WEIGHT_FACTOR * config.weight_bytes() + CAPTURE_FACTOR * captured)


def check_reference_fits(config: Qwen3Config, plan: TilingPlan, phase: str, lens: list[int], *, budget: int | None = None) -> int:
    """The reference-schedule baseline runs checked in one worker or not at all: refuse it,
    with the figures, when its estimate is over the budget. Returns the estimate."""
    limit = budget_bytes() if budget is None else budget
    need = reference_estimate(config, plan, phase, lens)
    if need > limit:
        raise InputError(
            f"a checked reference-schedule {phase} of {config.name} with {len(lens)} sequence(s) of "
            f"{sum(lens)} token(s) needs about {need / GIB:.1f} GB in one worker (its projection loops hand the "
            f"whole weight to every tile, and pypto 0.2.0 keeps every loop call's inputs to produce values on a CPU); "
            f"the budget is {limit / GIB:.1f} GB. Run it with values=False (cost model only), as `qwenlayers bench` does, "
            "or raise QWENLAYERS_WORKER_MEM_GB if the machine has the memory"
        )
    return need


@dataclass(frozen=True)
class Group:
    """One worker of a split prefill: units ``[start, stop)`` (token tiles, work items, or an
    intermediate shard's token tiles) and its estimated peak bytes."""

    start: int
    stop: int
    estimate_bytes: int


@dataclass(frozen=True)
class PrefillSplit:
    """How a checked prefill too big for one worker is cut into programs, each one loop of the
    prefill program (``core.parts.SPLIT_PARTS``) plus the MLP in shards:

    * ``qkv``: groups of token tiles (loop A: projections, norms, RoPE into the workspaces);
    * ``attend``: groups of work items (loop B: one query tile each, reading the K/V workspaces
      of its sequence up to that tile, writing its cache rows and attention rows);
    * ``o_proj``: groups of token tiles (loop C up to the first residual);
    * the MLP in ``mlp_shards`` intermediate shards, each over groups of token tiles
      (``mlp_groups``), whose fp32 partials the host sums (reduction point 2)."""

    token_tile: int
    tiles: int
    qkv: list[Group]
    attend: list[Group]
    o_proj: list[Group]
    mlp_shards: int
    mlp_groups: list[Group]

    def workers(self) -> int:
        return len(self.qkv) + len(self.attend) + len(self.o_proj) + self.mlp_shards * len(self.mlp_groups)


def _front_weight_bytes(config: Qwen3Config) -> int:
    h = config.hidden_size
    return 2 * (h * config.q_width + 2 * h * config.kv_width + 2 * h + 2 * config.head_dim)


def _o_weight_bytes(config: Qwen3Config) -> int:
    return 2 * config.q_width * config.hidden_size


def _tile_act_bytes(config: Qwen3Config, tile: int) -> int:
    """Activations one token tile's loop call views (x, q/k/v/attn workspaces, out rows)."""
    return tile * (2 * config.hidden_size + 2 * config.q_width + 2 * config.kv_width) * 2


def _groups(units: int, cost: Callable[[int, int], int], limit: int, what: str) -> list[Group]:
    """Contiguous groups of ``units`` grown while ``cost(start, stop)`` stays within ``limit``;
    a unit that alone is over it is refused with the figures."""
    groups: list[Group] = []
    start = 0
    while start < units:
        stop = start + 1
        if cost(start, stop) > limit:
            raise InputError(
                f"a checked prefill split over workers still needs about {cost(start, stop) / GIB:.1f} GB for one {what} "
                f"(pypto 0.2.0 keeps every loop call's inputs to produce values on a CPU); the budget is "
                f"{limit / GIB:.1f} GB. Raise QWENLAYERS_WORKER_MEM_GB if the machine has the memory, or use values=False"
            )
        while stop < units and cost(start, stop + 1) <= limit:
            stop += 1
        groups.append(Group(start, stop, cost(start, stop)))
        start = stop
    return groups


def split_prefill(config: Qwen3Config, lens: list[int], seq_tile: int, token_tile: int, mlp_step: int, *,
                  kv_block: int = 0, budget: int | None = None) -> PrefillSplit:
    """Cut a checked prefill into per-loop programs whose estimates stay under the budget.

    Each estimate is the fused-prefill model of :func:`prefill_estimate` restricted to one loop:
    the static program's weights, plus per loop call the weights and activations it views
    (loops A and C), or the K/V workspaces and caches (loop B)."""
    limit = budget_bytes() if budget is None else budget
    tokens = sum(lens)
    tt = min(token_tile, tokens)
    tiles = -(-tokens // tt)
    act = _tile_act_bytes(config, tt)
    front, o_w, full = _front_weight_bytes(config), _o_weight_bytes(config), config.weight_bytes()

    # a loop-A/B/C program takes every weight as an argument (its signature is the whole
    # prefill's), and the interpreter holds copies of its arguments
    args = int(PART_ARGS_FACTOR * full)

    def loop_cost(weights: int, base: int = args) -> Callable[[int, int], int]:
        # the worker is sent every weight, builds ops on ``weights``
        return lambda a, b: int(BASE_BYTES + full + base + WEIGHT_FACTOR * weights + CAPTURE_FACTOR * (b - a) * (weights + act))

    items = [(n, q) for n in lens for q in range(-(-n // seq_tile))]
    all_act = _tile_act_bytes(config, tokens)

    def attend_cost(a: int, b: int) -> int:
        return int(BASE_BYTES + full + args + 2 * all_act + _attention_loop_capture(config, lens, seq_tile, kv_block, items[a:b]))

    # the MLP: the intermediate shards and token groups that need the fewest workers
    inter, best = config.intermediate_size, None
    shards = 1
    while inter % (shards * mlp_step) == 0:
        mlp_cost = loop_cost(mlp_weight_bytes(config, inter // shards), 0)  # its own program: its weights only
        if mlp_cost(0, 1) <= limit:
            groups = _groups(tiles, mlp_cost, limit, "token tile of an MLP shard")
            rank = (shards * len(groups), max(g.estimate_bytes for g in groups))  # fewest workers, then most headroom
            if best is None or rank < (best[0] * len(best[1]), max(g.estimate_bytes for g in best[1])):
                best = (shards, groups)
        shards *= 2
    if best is None:
        need = loop_cost(mlp_weight_bytes(config, inter // (shards // 2)), 0)(0, 1)
        raise InputError(
            f"a checked prefill split over workers still needs about {need / GIB:.1f} GB for one token tile of the "
            f"narrowest MLP shard; the budget is {limit / GIB:.1f} GB. Raise QWENLAYERS_WORKER_MEM_GB, or use values=False")
    return PrefillSplit(
        tt, tiles,
        qkv=_groups(tiles, loop_cost(front), limit, "token tile of the projections"),
        attend=_groups(len(items), attend_cost, limit, "query tile of the attention"),
        o_proj=_groups(tiles, loop_cost(o_w), limit, "token tile of o_proj"),
        mlp_shards=best[0],
        mlp_groups=best[1],
    )


# A fused decode cost-model run is one static program of the whole batch (the attention loop is
# the only loop), so its compile holds every projection tile op of every CUBE_M rows and every
# row's vector ops. Fitted on a5sim cost-model runs with the default plans: tiny at B = 16 / 64 /
# 128 / 256 peaked at 448 / 675 / 990 / 1,568 MB, qwen3-0.6b at B = 16 / 64 at 1,116 / 2,896 MB
# (0.18 MB per cube tile op per CUBE_M rows, 15.4 KB per hidden element per row), and the model
# with ~13 % margin gives 1.03-1.15x those and 14.0 GB for qwen3-32b at B=16 (11.6-13.3 GB measured).
# Unbounded, tiny at B=10,000 grew past 9 GB in 48 s.
CM_TILE_OP_BYTES = int(0.2 * 2**20)
CM_ROW_HIDDEN_BYTES = 17_500
CM_BASE_BYTES = int(0.45 * GIB)


def projection_tile_ops(config: Qwen3Config, plan: TilingPlan) -> int:
    """Cube tile ops of the fused layer's projections for one CUBE_M block of rows: (K tiles) x
    (N tiles) of q, k|v, o, gate|up and down, with the L0 tiles the kernel builds them with
    (``core.kernels.layer_blocks.LayerTiles``)."""
    t = LayerTiles(plan, config, plan.cube_m)
    h, q, kv, inter = config.hidden_size, config.q_width, config.kv_width, config.intermediate_size
    matmuls = ((h, q, t.q_proj), (h, 2 * kv, t.kv_proj), (q, h, t.o_proj), (h, 2 * inter, t.gate_up), (inter, h, t.down))
    return sum(-(-k // tile.k) * -(-n // tile.n) for k, n, tile in matmuls)


def decode_cost_model_estimate(config: Qwen3Config, plan: TilingPlan, lens: list[int]) -> int:
    """Estimated peak bytes of the one worker of a fused decode cost-model run over ``lens``."""
    m_tiles = -(-len(lens) // plan.cube_m)
    cache = 2 * len(lens) * config.num_key_value_heads * cache_rows_needed(lens, plan.attention_block) * config.head_dim * 2
    return int(CM_BASE_BYTES + m_tiles * projection_tile_ops(config, plan) * CM_TILE_OP_BYTES
               + len(lens) * config.hidden_size * CM_ROW_HIDDEN_BYTES + cache)


def check_decode_cost_model_fits(config: Qwen3Config, plan: TilingPlan, lens: list[int], *, limit: int | None = None) -> int:
    """Refuse, before any work and with the figures, a decode cost-model run whose estimate is over
    the worker memory limit (:func:`memory_limit_bytes`); it is one program, so it cannot be split
    without changing what it measures. Returns the estimate."""
    cap = memory_limit_bytes() if limit is None else limit
    need = decode_cost_model_estimate(config, plan, lens)
    if need <= cap:
        return need
    lo, hi = 0, len(lens)  # the most leading sequences that fit (the estimate grows with them)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if decode_cost_model_estimate(config, plan, lens[:mid]) <= cap else (lo, mid - 1)
    fit = lo
    raise InputError(
        f"a decode cost-model run of {len(lens)} sequences on {config.name} needs about {need / GIB:.1f} GB in one "
        f"worker; the limit is {cap / GIB:.1f} GB ({MEM_LIMIT_ENV}, default {DEFAULT_MEM_LIMIT_FRACTION:.0%} of this "
        f"machine). The batch is one static program whose compile grows with it: about {fit} of these sequences fit "
        f"one call here. Use fewer sequences per call, or raise {MEM_LIMIT_ENV} if the machine has the memory")


def prefill_fits_one_worker(config: Qwen3Config, lens: list[int], seq_tile: int, token_tile: int, *,
                            kv_block: int = 0, budget: int | None = None) -> bool:
    """Whether every sequence alone fits one worker's fused prefill (else the run is split by loops)."""
    limit = budget_bytes() if budget is None else budget
    return all(prefill_estimate(config, [n], seq_tile, token_tile, kv_block) <= limit for n in lens)


#: Attention score elements (sum over (query tile, key block) iterations of query rows x key
#: rows) one cost-model run of a prefill may hold. The cost model's memory grows with the
#: attention's tasks: qwen3-32b at 1024 tokens (37.7M elements, 23.8k tasks) peaked at 10.9 GB
#: in one program; at 4096 tokens (554M) it passed 21 GB and was killed.
MAX_COST_MODEL_SCORES = 1 << 27

#: Token x intermediate-column elements one cost-model run of a phased prefill's MLP may hold:
#: qwen3-32b at 4096 tokens (105M, all 25,600 columns in one program) peaked at 16.5 GB, the
#: run's peak; more elements are simulated in intermediate shards whose times are added (each
#: shard streams its own columns of gate|up and rows of down, so the shards' sum is the whole).
MAX_COST_MODEL_MLP = 1 << 26


def attention_scores(config: Qwen3Config, lens: list[int], seq_tile: int, items: list[tuple[int, int]] | None = None) -> int:
    """Score elements the causal attention of ``lens`` computes in SEQ_TILE blocks (or of ``items``,
    (length, query tile) pairs)."""
    items = items if items is not None else [(n, q) for n in lens for q in range(-(-n // seq_tile))]
    per_block = config.num_key_value_heads * seq_tile * config.group_size * seq_tile
    return sum((q + 1) * per_block for _, q in items)


#: Multiply-accumulates one cost-model run of a phased prefill's projection loop (A, C, or an MLP
#: shard) may simulate; more tokens go in groups of token tiles whose times are added like the
#: phases'. qwen3-32b at 4096 tokens: each of its two MLP shards (8.1e11 MACs, 32 token tiles x
#: 12,000 cube tile ops) ran in a run that peaked at 9.6 GB; loop A (2.1e11) and loop C (1.7e11)
#: of it are below. Unbounded, the token count (batch x length) had no limit here.
MAX_COST_MODEL_MACS = 1 << 40


def _macs_per_token(config: Qwen3Config, inter: int | None = None) -> dict[str, int]:
    """Per-token multiply-accumulates of loop A (q, k|v), loop C (o_proj) and an MLP of ``inter`` columns."""
    h, i = config.hidden_size, config.intermediate_size if inter is None else inter
    return {"qkv": h * (config.q_width + 2 * config.kv_width), "o_proj": config.q_width * h, "mlp": 3 * h * i}


def _token_groups(tiles: int, tt: int, macs_per_token: int) -> list[Group]:
    per_group = max(1, MAX_COST_MODEL_MACS // (tt * macs_per_token))
    return [Group(a, min(a + per_group, tiles), 0) for a in range(0, tiles, per_group)]


def phase_prefill_cost_model(config: Qwen3Config, lens: list[int], seq_tile: int, token_tile: int,
                             mlp_step: int) -> PrefillSplit | None:
    """None when one cost-model run of the whole prefill fits (:data:`MAX_COST_MODEL_SCORES` and
    :data:`MAX_COST_MODEL_MACS` over the whole layer); else the phases to simulate one after
    another and add up: loop A, loop B in groups of query tiles under the score bound, loop C to
    the residual, and the MLP in intermediate shards under :data:`MAX_COST_MODEL_MLP`; loops A, C
    and each MLP shard in groups of token tiles under the MAC bound."""
    tokens = sum(lens)
    if (attention_scores(config, lens, seq_tile) <= MAX_COST_MODEL_SCORES
            and tokens * sum(_macs_per_token(config).values()) <= MAX_COST_MODEL_MACS):
        return None
    tt = min(token_tile, tokens)
    tiles = -(-tokens // tt)
    items = [(n, q) for n in lens for q in range(-(-n // seq_tile))]
    attend = _groups(len(items), lambda a, b: attention_scores(config, lens, seq_tile, items[a:b]),
                     MAX_COST_MODEL_SCORES, "query tile of the attention in one cost-model run")
    shards = _halve_mlp(config.intermediate_size, mlp_step,
                        lambda n: tiles * tt * config.intermediate_size // n > MAX_COST_MODEL_MLP)
    macs = _macs_per_token(config, config.intermediate_size // shards)
    return PrefillSplit(tt, tiles, qkv=_token_groups(tiles, tt, macs["qkv"]), attend=attend,
                        o_proj=_token_groups(tiles, tt, macs["o_proj"]), mlp_shards=shards,
                        mlp_groups=_token_groups(tiles, tt, macs["mlp"]))
