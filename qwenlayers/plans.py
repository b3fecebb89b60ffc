"""Which plan a call runs: the plugin's default for the platform and model, the tuned plan of
the call's shape class when ``qwenlayers tune`` stored one, the user's values on top, all
checked against the platform's budgets before anything compiles. The tuned-plan store lives
here too, so resolving a plan never needs the tuner (which runs layers, so needs the layer).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.tiling import TilingPlan, check_plan, fit_block_cols, fit_kv_block
from qwenlayers.errors import TilingError
from qwenlayers.registry import PlatformRegistry
from qwenlayers.runtime.paths import CacheWarning, atomic_write_text, cache_dir, cache_root, file_lock, read_json
from qwenlayers.runtime.pyptoenv import pypto_version


def shape_class(phase: Phase, lens: list[int]) -> str:
    """Calls of one class share a tuned plan: batch and longest length (decode) or total
    tokens (prefill), each rounded up to a power of two."""

    def up(n: int) -> int:
        return 1 << max(0, (n - 1).bit_length())

    if phase == "decode":
        return f"b{up(len(lens))}-l{up(max(lens))}"
    return f"t{up(sum(lens))}"


def _store(platform: Platform, *, create: bool = True) -> Path:
    """Where tuned plans live: ``$QWENLAYERS_TUNED_DIR`` or the cache, per platform and pypto
    version. Readers pass ``create=False``: reading needs no write (a read-only cache works)."""
    root = os.environ.get("QWENLAYERS_TUNED_DIR")
    if root:
        folder = Path(root) / platform.name
    else:
        folder = cache_dir("tuned", platform.name) if create else cache_root() / "tuned" / platform.name
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"pypto-{pypto_version() or 'none'}.json"


def _entries(path: Path) -> dict[str, Any]:
    """The tuned-plan file's entries; an unreadable or malformed file, or entry, is absent (one
    warning naming the file), so one broken file cannot break every run on the platform."""
    data = read_json(path, "tuned-plan cache")
    if data is None:
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"ignoring the tuned-plan cache {path}: it holds a {type(data).__name__}, not an object of "
                      f"entries", CacheWarning, stacklevel=2)
        return {}
    good = {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("values"), dict)
            and all(isinstance(n, str) and type(x) is int for n, x in v["values"].items())}
    if len(good) != len(data):
        warnings.warn(f"ignoring {len(data) - len(good)} malformed entries of the tuned-plan cache {path}",
                      CacheWarning, stacklevel=2)
    return good


def _key(config: Qwen3Config, phase: Phase, cls: str, platform: Platform) -> str:
    """A tuned plan belongs to the budget set it was searched under, too."""
    return f"{config.name}|{phase}|{cls}|{platform.budgets.name}"


def tuned_plan(platform: Platform, config: Qwen3Config, phase: Phase, lens: list[int], base: TilingPlan) -> TilingPlan:
    """``base`` with the cached tuned values for this class applied (origin ``tuned``), or
    ``base`` itself when nothing was tuned (or the tuned plan no longer fits)."""
    path = _store(platform, create=False)
    if not path.exists():
        return base
    with file_lock(path.parent / ".lock", shared=True):  # tune rewrites the file under the exclusive lock
        entry = _entries(path).get(_key(config, phase, shape_class(phase, lens), platform))
    if not entry:
        return base
    try:
        plan = base.with_overrides(entry["values"], source="tuned")
        check_plan(plan, config, platform)
    except TilingError:
        return base
    return plan


def store_tuned(platform: Platform, config: Qwen3Config, phase: Phase, lens: list[int], values: dict[str, int],
                best_us: float, default_us: float) -> tuple[str, Path]:
    """Record a tuned plan's changed ``values`` for this call's shape class; returns its key and file."""
    key = _key(config, phase, shape_class(phase, lens), platform)
    path = _store(platform)
    with file_lock(path.parent / ".lock"):
        data = _entries(path)
        data[key] = {"values": values, "sim_us": best_us, "default_us": default_us,
                     "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(path, json.dumps(data, indent=2))
    return key, path


#: The origin a plan value gets from a paged cache's block size (``TilingPlan.origin_of``).
PAGED = "paged block"


def fit_paged_block(plan: TilingPlan, block: int, cfg: Qwen3Config, platform: Platform) -> TilingPlan:
    """Tiles that fit a paged cache of ``block``-row blocks. A paged decode reads whole blocks
    per attention iteration: KV_BLOCK is a multiple of the block size (the plugin's, fitted to
    the longest sequence, rounded down to one, at least one block); its cube tiles gather rows
    through the table (core.kernels.paged_decode), so they need not fit inside a block. A paged
    prefill writes whole query tiles into blocks: SEQ_TILE divides the block size. A user's or
    tuned value that does not fit is refused, not overridden."""
    values: dict[str, int] = {}
    if plan.phase == "prefill" and block % plan.seq_tile:
        if not (plan.seq_tile > block and plan.refittable("seq_tile")):
            raise TilingError(f"seq_tile={plan.seq_tile} (from {plan.origin_of('seq_tile')}) does not divide the paged cache's "
                              f"block of {block} rows; a paged prefill writes whole query tiles into blocks: use a seq_tile "
                              "that divides the block size")
        values["seq_tile"] = block
    if plan.phase == "decode" and plan.kv_block % block:
        if not plan.refittable("kv_block"):
            raise TilingError(f"kv_block={plan.kv_block} (from {plan.origin_of('kv_block')}) is not a multiple of the paged "
                              f"cache's {block}-row blocks; a paged decode reads whole blocks per attention iteration: "
                              "leave KV_BLOCK out of the plan or set it to a multiple of the block size")
        values["kv_block"] = max(block, plan.kv_block // block * block)
    if not values:
        return plan
    return fit_block_cols(plan.with_overrides(values, source=PAGED), cfg, platform)


def resolve_plan(
    reg: PlatformRegistry, platform: Platform, cfg: Qwen3Config, phase: Phase, plan: TilingPlan | Mapping[str, int] | None,
    lens: list[int] | None = None, *, paged_block: int = 0,
) -> TilingPlan:
    """A user plan, or the default plan (the plugin's, with a tuned plan for this call's shape
    class applied when ``qwenlayers tune`` cached one, its KV_BLOCK fitted to the longest
    sequence) plus overrides; ``paged_block`` > 0 fixes KV_BLOCK at a paged cache's block size
    (:func:`fit_paged_block`). Always checked against the platform budgets before anything
    compiles."""
    if isinstance(plan, TilingPlan):
        if plan.phase != phase:
            raise TilingError(f"the plan given is a {plan.phase} plan; {phase} needs a {phase} plan (qwenlayers.plan(..., '{phase}'))")
        result = fit_paged_block(plan, paged_block, cfg, platform) if paged_block else plan
    else:
        default = reg.tiling_defaults(platform, cfg, phase)  # checked there
        base = tuned_plan(platform, cfg, phase, lens, default) if lens else default  # checked there when tuned
        result = fit_kv_block(base.with_overrides(dict(plan or {})), lens or [], cfg, platform)
        if paged_block:
            result = fit_paged_block(result, paged_block, cfg, platform)
        if result.values() == base.values():
            return result
    check_plan(result, cfg, platform)  # a user's plan, or values changed by overrides or the call's lengths
    return result
