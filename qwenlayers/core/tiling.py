"""Tiling plans and their validation against a platform's budgets and buffers.

A :class:`TilingPlan` is frozen and hashable (it keys compile caches). It checks only its local
invariants itself; everything that depends on the model shape or the platform is checked by
:func:`check_plan`, which raises a :class:`TilingError` naming the tile, its bytes and the
budget, and says where the plan came from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import PHASES, Phase, Platform
from qwenlayers.errors import TilingError

FP32, BF16 = 4, 2

#: The tunable fields, in the order the CLI shows them, with what each one tiles.
TILE_FIELDS: dict[str, str] = {
    "tok_tile": "tokens (prefill) or batch rows (decode) per tile",
    "k_chunk": "hidden (reduction) columns per projection step",
    "q_out_chunk": "query-projection output columns per step",
    "kv_out_chunk": "key/value-projection output columns per step",
    "mlp_out_chunk": "gate/up output columns (and down-projection rows) per step",
    "q_head_batch": "decode: query heads of one KV group per attention vector tile; prefill: (token, query head) rows of one",
    "seq_tile": "KV-cache rows per attention tile (cube/vector); prefill: also the query tile",
    "kv_block": "KV rows per attention loop iteration (a multiple of seq_tile); prefill: the key block, "
                "whole query tiles of keys",
    "score_cols": "decode: attention-score columns per softmax vector tile (a multiple of seq_tile dividing kv_block)",
    "qk_cols": "decode: KV-cache rows per Q@K^T cube step, copied into L1 at once (seq_tile x 2^j dividing kv_block; "
               "head_dim splits so the L0 K tile keeps seq_tile x head_dim elements)",
    "cube_m": "activation rows per cube (L0A) tile",
    "k_l1": "reduction columns staged in L1 per cube step (a multiple of every L0 k tile)",
    "cube_merge": "same-shape cube tasks merged into one task (fewer, longer tasks: each pays the scheduler's per-task cost once)",
    "merge_copy_kb": "KiB of GM->L1 copies one merged cube task may hold (caps how many output tiles pypto folds into one task)",
    "stitch_loops": "loop iterations pypto's runtime may stitch together and dispatch in parallel "
                    "(its stitch_function_outcast_memory; prefill: how many attention chains run at once)",
}

#: pypto 0.2.0's own values of the two task-merging fields (cube_nbuffer_setting {-1: 1},
#: mg_copyin_upper_bound 100 MiB): a plan that leaves them here compiles as pypto would.
PYPTO_CUBE_MERGE, PYPTO_MERGE_COPY_KB = 1, 100 * 1024

#: pypto 0.2.0's default ``stitch_function_outcast_memory`` (its runtime options): a plan that
#: leaves STITCH_LOOPS here runs as pypto would.
PYPTO_STITCH_LOOPS = 50

#: Origin tags (see TilingPlan.origin_of): a value the source gave, one the core derived, one
#: left at the class default.
SOURCE, DERIVED, DEFAULT = "source", "derived", "default"


def _tagged(origin: tuple[tuple[str, str], ...], names: Iterable[str], tag: str) -> tuple[tuple[str, str], ...]:
    merged = dict(origin)
    merged.update({name: tag for name in names})
    return tuple(sorted(merged.items()))


@dataclass(frozen=True)
class TilingPlan:
    """Tile sizes of one layer build. ``origin`` records where each value came from
    (``default`` from the platform plugin, ``tuned`` from the autotuner cache, ``user``)."""

    phase: Phase
    tok_tile: int
    k_chunk: int
    q_out_chunk: int
    kv_out_chunk: int
    mlp_out_chunk: int
    q_head_batch: int
    seq_tile: int
    cube_m: int = 16
    k_l1: int = 1024
    kv_block: int = 0  # 0: one SEQ_TILE per iteration (plans written before the field existed)
    score_cols: int = 0  # 0: SEQ_TILE columns (plans written before the field existed)
    qk_cols: int = 0  # 0: SEQ_TILE rows (plans written before the field existed)
    cube_merge: int = PYPTO_CUBE_MERGE
    merge_copy_kb: int = PYPTO_MERGE_COPY_KB
    stitch_loops: int = PYPTO_STITCH_LOOPS
    source: str = ""  # who chose the values; the registry names the plugin when it is left empty
    origin: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise TilingError(f"TilingPlan.phase={self.phase!r}; allowed: {', '.join(PHASES)}")
        derived = [name for name in ("kv_block", "score_cols", "qk_cols") if getattr(self, name) == 0]
        for name in derived:  # one SEQ_TILE: the value the plan's author left to the core
            object.__setattr__(self, name, self.seq_tile)
        if derived:
            object.__setattr__(self, "origin", _tagged(self.origin, derived, DERIVED))
        for name in TILE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise TilingError(f"tile {name.upper()}={value!r} (from {self.origin_of(name)}); every tile size must be "
                                  "a positive int")

    @classmethod
    def per_phase(cls, source: str = "", **values: int) -> "dict[Phase, TilingPlan]":
        """The same tile sizes as a plan for each phase (how plugins declare their anchor)."""
        return {phase: cls(phase=phase, source=source, **values) for phase in PHASES}

    @property
    def attention_block(self) -> int:
        """K/V rows one attention loop iteration covers: ``kv_block`` in decode (split into
        ``seq_tile`` tiles inside the iteration), ``seq_tile`` in prefill (the cache is written per
        query tile; its KV_BLOCK key blocks read the packed workspaces)."""
        return self.kv_block if self.phase == "decode" else self.seq_tile

    @property
    def pv_k_l1(self) -> int:
        """Decode P @ V reduction rows staged in L1 per cube step: K_L1 of the KV_BLOCK rows,
        in whole SEQ_TILE L0 tiles (at least one)."""
        return max(self.seq_tile, min(self.k_l1, self.kv_block) // self.seq_tile * self.seq_tile)

    def qk_k_l0(self, head_dim: int) -> int:
        """Decode Q @ K^T reduction (head_dim) columns per L0 step: the L0 K tile [QK_COLS, this]
        holds as many elements as a [SEQ_TILE, head_dim] tile, so it stays within the TILE
        budget while one GM->L1 copy brings QK_COLS cache rows. pypto 0.2.0 copies a matmul's
        B operand into L1 in n tiles of the L0 size (a larger nL1 changes nothing), and its
        cost model charges every copy ~1,300 cycles before its bytes: 16 KB K tiles were 3x
        the cost per byte of the 256 KB V copies (qwen3-32b 16 x 4096: QK_COLS 64 -> 512 took
        the step 1,462 -> 1,228 us on one sim)."""
        return head_dim * self.seq_tile // self.qk_cols

    def pass_options(self) -> dict[str, object]:
        """The plan's task-merging fields as pypto pass options.

        pypto's cost model (like the device's AICPU scheduler it models) charges every task a
        dispatch: a scheduler thread polls its cores (~240 cycles each), resolves successors
        (~390 each) and dispatches (~200), so a core sits ~5-6k cycles between two tasks
        (measured on a simulated trace of qwen3-8b, 16 x 4096: ~20 % of every cube core's
        time). Merging same-shape cube tasks pays that once per merged task; capping a merged
        task's copies keeps pypto from folding a whole projection into a few tasks (qwen3-8b
        o_proj: 4 tasks of 142k cycles on 24 cube cores)."""
        return {"cube_nbuffer_setting": {-1: self.cube_merge}, "mg_copyin_upper_bound": self.merge_copy_kb * 1024}

    def runtime_options(self) -> dict[str, object]:
        """The plan's runtime fields as pypto runtime options.

        pypto's control-flow AICPU stitches the iterations of dynamic loops into device tasks;
        ``stitch_function_outcast_memory`` sizes the workspace pool that lets the iterations of
        one stitch run at once (the product of it and the largest iteration's outputs). At
        pypto's 50, a prefill's attention ran one query tile's KV heads at a time: qwen3-0.6b,
        2,048 tokens on the cost model, cube and vector cores 5 % busy with empty ready queues, 6,749 us;
        at 128 (its largest effective value without unrolled loops), 3,534 us. Decode does not
        change (0.6B 16 x 4096: 436.6 us both)."""
        return {"stitch_function_outcast_memory": self.stitch_loops}

    def values(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TILE_FIELDS}

    def origin_of(self, name: str) -> str:
        """Where a value came from: ``user``, ``tuned``, the plan's source (e.g. ``plugin
        <distribution>``), ``<source>, fitted`` for a value the core derived from it (fitted to
        the model or the call, or following another field), or ``default`` for a field the
        source left at its class default."""
        tag = dict(self.origin).get(name, self.source)
        if tag == SOURCE:
            return self.source
        if tag == DERIVED:
            return f"{self.source}, fitted" if self.source else "fitted"
        return tag

    def as_given(self) -> "TilingPlan":
        """Every value marked as the source's own choice (an anchor plan that names them all)."""
        return replace(self, origin=_tagged(self.origin, TILE_FIELDS, SOURCE))

    def fitted(self, **values: int) -> "TilingPlan":
        """A copy with ``values`` the core derived (not the source's, not the user's)."""
        return replace(self, **values, origin=_tagged(self.origin, values, DERIVED))

    def with_defaults_marked(self) -> "TilingPlan":
        """Fields with no recorded origin still at their class default are marked ``default``: the
        source did not choose them (a minimal plugin names 7 of the 15)."""
        untouched = [f.name for f in fields(self) if f.name in TILE_FIELDS and f.name not in dict(self.origin)
                     and f.default is not MISSING and getattr(self, f.name) == f.default]
        return replace(self, origin=_tagged(self.origin, untouched, DEFAULT)) if untouched else self

    def refittable(self, name: str) -> bool:
        """Whether ``name`` is a plugin default the plan may fit to a call (KV_BLOCK to the
        longest sequence, SCORE_COLS and QK_COLS to KV_BLOCK): a user or tuned value is kept as given."""
        return self.origin_of(name) not in ("user", "tuned")

    def with_overrides(self, overrides: Mapping[str, int], source: str = "user") -> "TilingPlan":
        """A copy with some values replaced; unknown keys are an error listing the known ones."""
        if not overrides:
            return self
        norm = {k.lower(): v for k, v in overrides.items()}
        unknown = sorted(set(norm) - set(TILE_FIELDS))
        if unknown:
            raise TilingError(f"unknown tile key(s) {', '.join(unknown)}; known: {', '.join(k.upper() for k in TILE_FIELDS)}")
        return replace(self, **norm, origin=_tagged(self.origin, norm, source))

    def cache_key(self) -> str:
        blob = json.dumps({"phase": self.phase, **self.values()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["origin"] = {k: self.origin_of(k) for k in TILE_FIELDS}
        return d


def parse_overrides(items: Iterable[str]) -> dict[str, int]:
    """Parse ``KEY=VALUE`` strings (``--tile SEQ_TILE=128``).

    A value must be a positive integer in plain digits: anything else (``--64``, ``-8``, ``0``,
    ``1e3``) is refused here, naming the key, rather than crashing ``int()`` or reaching the
    plan checks as a size that can never fit."""
    keys = ", ".join(k.upper() for k in TILE_FIELDS)
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, text = key.strip(), value.strip()
        if not sep or not name:
            raise TilingError(f"--tile {item!r} is not KEY=INT; e.g. --tile SEQ_TILE=128 (keys: {keys})")
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise TilingError(f"--tile {item!r}: {name.upper()} must be a positive integer (1, 2, …), got {text!r}; "
                              f"e.g. --tile {name.upper()}=128 (keys: {keys})")
        out[name.lower()] = int(text)
    return out


@dataclass(frozen=True)
class Tile:
    """One tile a kernel holds on chip: which buffer it lives in and how many bytes it takes."""

    name: str
    shape: tuple[int, int]
    dtype_bytes: int
    kind: str  # "vector" (UB, TILELET budget), "cube" (L0A/L0B, TILE budget) or "staging" (L1, the buffer itself)
    buffer: str  # hardware buffer name: ub, l0a, l0b, l0c, l1
    governs: str  # the plan field a user changes to shrink it

    @property
    def bytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype_bytes

    def describe(self) -> str:
        dt = {4: "fp32", 2: "bf16"}[self.dtype_bytes]
        return f"{self.kind} tile '{self.name}' [{self.shape[0]} x {self.shape[1]}] {dt} = {self.bytes} B"


def plan_tiles(plan: TilingPlan, config: Qwen3Config) -> list[Tile]:
    """The on-chip tiles a layer build with this plan holds (cf. pypto-lib reference 000's table)."""
    p, d = plan, config.head_dim
    return [
        Tile("hidden chunk", (p.tok_tile, p.k_chunk), FP32, "vector", "ub", "k_chunk"),
        Tile("q_proj acc", (p.tok_tile, p.q_out_chunk), FP32, "vector", "ub", "q_out_chunk"),
        Tile("kv_proj acc", (p.tok_tile, p.kv_out_chunk), FP32, "vector", "ub", "kv_out_chunk"),
        Tile("mlp acc", (p.tok_tile, p.mlp_out_chunk), FP32, "vector", "ub", "mlp_out_chunk"),
        Tile("attn acc", (p.q_head_batch, d), FP32, "vector", "ub", "q_head_batch"),
        Tile("attn scores", (p.q_head_batch, p.seq_tile), FP32, "vector", "ub", "seq_tile"),
        # decode softmax: the scores the cube wrote in seq_tile columns, read back in wider
        # vector tiles (each TILELET copy in costs the same fixed DMA time whatever its bytes)
        Tile("softmax scores", (p.q_head_batch, p.score_cols), FP32, "vector", "ub", "score_cols"),
        Tile("q_proj weight", (p.k_chunk, p.q_out_chunk), BF16, "cube", "l0b", "q_out_chunk"),
        Tile("kv_proj weight", (p.k_chunk, p.kv_out_chunk), BF16, "cube", "l0b", "kv_out_chunk"),
        Tile("gate/up weight", (p.k_chunk, p.mlp_out_chunk), BF16, "cube", "l0b", "mlp_out_chunk"),
        Tile("down weight", (p.mlp_out_chunk, p.k_chunk), BF16, "cube", "l0b", "mlp_out_chunk"),
        Tile("kv block", (p.seq_tile, d), BF16, "cube", "l0b", "seq_tile"),
        # decode attention: all G query heads of a KV group are one cube m tile, so each K/V
        # tile is fetched once per group (Q_HEAD_BATCH sets only the vector tiles' rows)
        Tile("attn scores (cube)", (config.group_size, p.qk_cols), FP32, "cube", "l0c", "qk_cols"),
        Tile("Q@K^T K tile", (p.qk_cols, p.qk_k_l0(d)), BF16, "cube", "l0b", "qk_cols"),
        Tile("activation chunk", (p.cube_m, p.k_chunk), BF16, "cube", "l0a", "cube_m"),
        Tile("L1 staging", (p.cube_m + max(p.q_out_chunk, p.kv_out_chunk, p.mlp_out_chunk, p.k_chunk), p.k_l1), BF16,
             "staging", "l1", "k_l1"),
        # decode P @ V: PV_K_L1 cache rows of V and the probabilities (padded to 16 rows) per cube step
        Tile("P@V L1 staging", (d + 16, p.pv_k_l1), BF16, "staging", "l1", "k_l1"),
        # decode Q @ K^T: QK_COLS cache rows of K and the group's queries (padded to 16 rows)
        Tile("Q@K^T L1 staging", (p.qk_cols + 16, d), BF16, "staging", "l1", "qk_cols"),
    ]


@dataclass(frozen=True)
class TileCheck:
    tile: Tile
    budget: int
    budget_name: str

    @property
    def ok(self) -> bool:
        return self.tile.bytes <= self.budget


def tile_checks(plan: TilingPlan, config: Qwen3Config, platform: Platform) -> list[TileCheck]:
    """Each tile against its budget (TILELET for vector, TILE for cube, the L1 size for staging)."""
    b = platform.budgets
    budget = {"vector": (b.tilelet_bytes, "TILELET"), "cube": (b.tile_bytes, "TILE"), "staging": (platform.buffers.l1, "L1")}
    return [TileCheck(t, *budget[t.kind]) for t in plan_tiles(plan, config)]


def batch_tile_rows(row_bytes: int, tilelet_bytes: int, rows: int) -> int:
    """Rows of a vector tile over data the batch sizes (decode's B*KVH new K/V rows, the
    reference's [B, q_width] attention rows): as many rows of ``row_bytes`` as one TILELET
    holds, at least one and at most ``rows``. Not plan fields: their tiles are set by the batch,
    so they are bounded here rather than chosen (``DecodeShape.tilelet_bytes``); ``tilelet_bytes``
    0 leaves them whole."""
    return rows if tilelet_bytes <= 0 else max(1, min(rows, tilelet_bytes // row_bytes))


def _divisibility(plan: TilingPlan, config: Qwen3Config) -> list[tuple[str, int, int, str]]:
    """(field, value, dimension, dimension name) pairs where value must divide dimension."""
    return [
        ("k_chunk", plan.k_chunk, config.hidden_size, "hidden_size"),
        ("q_out_chunk", plan.q_out_chunk, config.q_width, "heads x head_dim"),
        ("kv_out_chunk", plan.kv_out_chunk, config.kv_width, "kv_heads x head_dim"),
        ("mlp_out_chunk", plan.mlp_out_chunk, config.intermediate_size, "intermediate_size"),
        # decode's vector tiles hold heads of one KV group; prefill's hold (token, head) rows of
        # a query tile, so a prefill plan keeps Q_HEAD_BATCH at the anchor when G is small
        ("q_head_batch", plan.q_head_batch, config.group_size, "query heads per KV group") if plan.phase == "decode" else
        ("q_head_batch", plan.q_head_batch, plan.seq_tile * config.group_size, "seq_tile x query heads per KV group"),
    ]


def _largest_fitting(name: str, plan: TilingPlan, config: Qwen3Config, platform: Platform) -> int:
    """The largest value of ``name`` (a power of two) that passes every check, for the hint."""
    value = getattr(plan, name)
    while value > 1:
        value //= 2
        # the plugin's SCORE_COLS and QK_COLS can always come down to one SEQ_TILE
        follow = {n: value if name == "seq_tile" else plan.seq_tile
                  for n in ("score_cols", "qk_cols") if n != name and plan.refittable(n)}
        candidate = replace(plan, **{name: value}, **follow)
        try:
            check_plan(candidate, config, platform, _hint=False)
            return value
        except TilingError:
            continue
    return 0


def check_plan(plan: TilingPlan, config: Qwen3Config, platform: Platform, *, _hint: bool = True) -> None:
    """Raise TilingError for the first rule the plan breaks on this platform and model."""
    where = f"on platform {platform.name} for {config.name} {plan.phase}"

    def src(name: str) -> str:
        origin = plan.origin_of(name)
        return f"({name.upper()} from {'user override' if origin == 'user' else origin})"

    for name, value, dim, dim_name in _divisibility(plan, config):
        if dim % value:
            raise TilingError(f"{name}={value} does not divide {dim_name}={dim} {where} {src(name)}; use a divisor of {dim}")
    steps = plan.qk_cols // plan.seq_tile
    if plan.qk_cols % plan.seq_tile or steps & (steps - 1) or config.head_dim % steps:
        raise TilingError(f"qk_cols={plan.qk_cols} is not a multiple of seq_tile={plan.seq_tile} by a power of two that divides "
                          f"head_dim={config.head_dim} {where} {src('qk_cols')}; the L0 K tile splits head_dim by qk_cols/seq_tile")
    align = platform.budgets.align_bytes
    for t in plan_tiles(plan, config):
        row = t.shape[1] * t.dtype_bytes
        if row % align:
            raise TilingError(
                f"{t.describe()} has rows of {row} B, not a multiple of the {align} B alignment {where} {src(t.governs)}; "
                f"change {t.governs.upper()} so its rows are {align} B aligned"
            )
    for c in tile_checks(plan, config, platform):
        if not c.ok:
            hint = ""
            if _hint:
                best = _largest_fitting(c.tile.governs, plan, config, platform)
                hint = f"; use {c.tile.governs.upper()} <= {best}" if best else ""
            raise TilingError(f"{c.tile.describe()} exceeds the {c.budget_name} budget of {c.budget} B {where} {src(c.tile.governs)}{hint}")
    buffers = platform.buffers
    for t in plan_tiles(plan, config):
        cap = getattr(buffers, t.buffer)
        if t.bytes > cap:
            raise TilingError(f"{t.describe()} exceeds the {t.buffer.upper()} buffer of {cap} B {where} {src(t.governs)}")
    for name in ("k_chunk", "q_out_chunk", "mlp_out_chunk"):
        if plan.k_l1 % getattr(plan, name):
            raise TilingError(
                f"k_l1={plan.k_l1} is not a multiple of {name}={getattr(plan, name)} {where} {src('k_l1')}; "
                "L1 stages whole L0 k tiles"
            )
    if plan.seq_tile > config.max_seq:
        raise TilingError(f"seq_tile={plan.seq_tile} exceeds max_seq={config.max_seq} {where} {src('seq_tile')}; use seq_tile <= max_seq")
    if plan.kv_block % plan.seq_tile:
        raise TilingError(f"kv_block={plan.kv_block} is not a multiple of seq_tile={plan.seq_tile} {where} {src('kv_block')}; "
                          "one attention iteration runs whole seq_tile tiles")
    if plan.kv_block > max(config.max_seq, plan.seq_tile):
        raise TilingError(f"kv_block={plan.kv_block} exceeds max_seq={config.max_seq} {where} {src('kv_block')}; "
                          "use kv_block <= max_seq")
    if plan.score_cols % plan.seq_tile:
        raise TilingError(f"score_cols={plan.score_cols} is not a multiple of seq_tile={plan.seq_tile} {where} {src('score_cols')}; "
                          "a softmax tile holds whole cube score tiles")
    if plan.kv_block % plan.score_cols:
        raise TilingError(f"score_cols={plan.score_cols} does not divide kv_block={plan.kv_block} {where} {src('score_cols')}; "
                          "use a divisor of kv_block that is a multiple of seq_tile")
    if plan.kv_block % plan.qk_cols:
        raise TilingError(f"qk_cols={plan.qk_cols} does not divide kv_block={plan.kv_block} {where} {src('qk_cols')}; "
                          "use seq_tile x a power of two that divides kv_block")


def derive_plan(anchor: TilingPlan, config: Qwen3Config, platform: Platform, phase: Phase) -> TilingPlan:
    """Fit an anchor plan (tuned on one model size) to another model: every value is halved until
    it divides its dimension and all its tiles fit the platform budgets. Plugins call this so the
    per-preset defaults follow one rule instead of a hand-kept table."""
    plan = replace(anchor, phase=phase, source=anchor.source)
    # two passes: a rule can tie a field to one fitted after it (prefill Q_HEAD_BATCH divides
    # SEQ_TILE x G, and SEQ_TILE comes down to a small model's max_seq); values only come down
    for name in [*TILE_FIELDS, *TILE_FIELDS]:
        value = getattr(plan, name)
        for _ in range(32):
            candidate = replace(plan, **{name: value})
            dims = [dim for f, _, dim, _ in _divisibility(candidate, config) if f == name]
            fits = all(dim % value == 0 for dim in dims)
            if fits:
                own = [c for c in tile_checks(candidate, config, platform) if c.tile.governs == name]
                fits = all(c.ok for c in own) and (name != "seq_tile" or value <= config.max_seq)
                if name == "kv_block":  # whole seq_tile tiles, no longer than the cache
                    fits = value % plan.seq_tile == 0 and value <= max(config.max_seq, plan.seq_tile)
            if fits or value == 1:
                break
            value //= 2
        if value != getattr(plan, name):
            plan = plan.fitted(**{name: value})
    # whole seq_tile tiles inside one kv_block; the registry checks the result once (naming the plugin)
    return fit_block_cols(plan, config, platform)


def fit_kv_block(plan: TilingPlan, lens: list[int], config: Qwen3Config, platform: Platform) -> TilingPlan:
    """A plan's KV_BLOCK halved while one iteration still covers the longest sequence.

    The cost of an attention iteration follows its block size, not the rows ``valid_shape``
    keeps (measured: qwen3-0.6b, one sequence of 128, decode KV_BLOCK 4096 simulated 356 us and
    compiled 23 s; KV_BLOCK 128, 167 us and 4 s; prefill key block 512, 265 us; 128, 200 us), so
    a block longer than every sequence of the call only costs. Applied to the plugin's value, never to a user or tuned one (nor
    below a user or tuned SCORE_COLS or QK_COLS); the plugin's SCORE_COLS and QK_COLS then follow it."""
    if lens and plan.refittable("kv_block"):
        fixed_cols = max([1] + [getattr(plan, n) for n in ("score_cols", "qk_cols") if not plan.refittable(n)])
        longest, kb = max(lens), plan.kv_block
        floor = max(longest, plan.seq_tile, fixed_cols)
        if plan.phase == "prefill" and longest <= kb:
            # every sequence inside one key block: query-tile key blocks do no masked work and
            # their chains are at most KV_BLOCK / SEQ_TILE long (0.6B, 512 tokens: 340 us, not 368)
            floor = max(plan.seq_tile, fixed_cols)
        while kb // 2 >= floor and (kb // 2) % plan.seq_tile == 0:
            kb //= 2
        if kb != plan.kv_block:
            plan = plan.fitted(kv_block=kb)
    return fit_block_cols(plan, config, platform)


def fit_block_cols(plan: TilingPlan, config: Qwen3Config, platform: Platform) -> TilingPlan:
    """The plugin's KV_BLOCK, SCORE_COLS and QK_COLS fitted to the plan's SEQ_TILE (and a
    prefill plan's Q_HEAD_BATCH to SEQ_TILE x G).

    KV_BLOCK: the largest multiple of SEQ_TILE up to it (a user's SEQ_TILE=48 takes 256 to 240).
    SCORE_COLS: the largest multiple of SEQ_TILE up to it that divides KV_BLOCK (a user's
    KV_BLOCK=64 takes it from 128 to 64). QK_COLS: the largest SEQ_TILE x 2^j up to it that
    divides KV_BLOCK and splits head_dim into L0 k tiles whose bf16 rows keep the platform's
    alignment (the rules :func:`check_plan` applies). A user or tuned value is left as it is,
    for :func:`check_plan` to judge."""
    st, head_dim = plan.seq_tile, config.head_dim
    if plan.refittable("kv_block") and plan.kv_block % st:
        # the plugin's KV_BLOCK follows a user's SEQ_TILE: whole seq_tile tiles per iteration
        plan = plan.fitted(kv_block=max(st, plan.kv_block // st * st))
    kb = plan.kv_block
    min_k_l0 = platform.budgets.align_bytes // BF16
    if plan.phase == "prefill" and plan.refittable("q_head_batch") and (st * config.group_size) % plan.q_head_batch:
        # the plugin's prefill Q_HEAD_BATCH follows a user's smaller SEQ_TILE: it must divide SEQ_TILE x G
        plan = plan.fitted(q_head_batch=math.gcd(plan.q_head_batch, st * config.group_size))
    if plan.refittable("score_cols"):
        cols = plan.score_cols
        fitted = next((c for c in range(cols - cols % st, 0, -st) if kb % c == 0), st)
        if fitted != cols:
            plan = plan.fitted(score_cols=fitted)
    if plan.refittable("qk_cols"):
        ladder = [st << j for j in range(32) if st << j <= max(plan.qk_cols, st)]
        fitted = next((c for c in reversed(ladder)
                       if kb % c == 0 and head_dim % (c // st) == 0 and head_dim // (c // st) >= min_k_l0), st)
        if fitted != plan.qk_cols:
            plan = plan.fitted(qk_cols=fitted)
    return plan

