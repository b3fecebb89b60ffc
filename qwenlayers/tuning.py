"""``qwenlayers tune``: search the tiling space the platform budgets allow, with the cost model.

Coordinate descent from the plugin's default plan: for each tile field in turn, try the
powers of two around the current value that pass ``check_plan`` (budgets, buffers,
divisibility), keep the fastest simulated layer, and move on; repeat while time is left. Each
candidate is one cost-model run (no values). The best plan is cached per platform and pypto
version under a key (preset, phase, shape class) and becomes the default plan for calls of
that class: its values show origin ``tuned`` in ``qwenlayers plan``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.tiling import TILE_FIELDS, TilingPlan, check_plan
from qwenlayers.errors import TilingError
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


@dataclass
class TuneResult:
    best: TilingPlan
    best_us: float
    default_us: float
    tried: list[dict[str, Any]] = field(default_factory=list)
    key: str = ""
    stored: Path | None = None


def _neighbours(value: int) -> list[int]:
    return sorted({max(1, value // 4), max(1, value // 2), value, value * 2, value * 4})


def tune(
    phase: Phase,
    model: str | Qwen3Config,
    platform: str | None,
    *,
    batch: int = 1,
    seq_len: int = 64,
    time_limit_s: float = 300.0,
    fields: list[str] | None = None,
    registry: Any = None,
    progress: Callable[[str, int], None] | None = None,
    budgets: str | None = None,
) -> TuneResult:
    """Tune the plan for (platform, model, phase, class of batch x seq_len) within the time limit."""
    from qwenlayers.core.weights import LayerWeights
    from qwenlayers.layer import decode, prefill, random_inputs
    from qwenlayers.registry import get_registry

    reg = registry or get_registry()
    target = reg.select(platform, require_available=True, budgets=budgets)
    cfg = as_config(model)
    lens = [seq_len] * batch
    run_cfg = cfg if phase == "prefill" else cfg.with_max_seq(max(cfg.max_seq, seq_len))
    weights = LayerWeights.random(cfg, seed=0)
    args = random_inputs(cfg, phase, lens, seed=0, max_seq=run_cfg.max_seq)
    say = progress or (lambda _m, _n: None)
    measured: dict[str, float] = {}
    tried: list[dict[str, Any]] = []

    def cost(plan: TilingPlan) -> float:
        key = plan.cache_key()
        if key not in measured:
            run = decode if phase == "decode" else prefill
            result = run(run_cfg, weights, **args, platform=target.name, budgets=target.budgets.name, plan=plan, values=False,
                         registry=reg)
            measured[key] = float(result.report.sim_us or float("inf"))
            tried.append({"values": plan.values(), "sim_us": measured[key], "tasks": result.report.tasks})
            say(f"{len(tried)} plans tried, best {min(measured.values()):.1f} µs", len(tried))
        return measured[key]

    default = reg.tiling_defaults(target, run_cfg, phase)
    best, best_us = default, cost(default)
    default_us = best_us
    deadline = time.monotonic() + time_limit_s
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for name in fields or list(TILE_FIELDS):
            for value in _neighbours(getattr(best, name)):
                if time.monotonic() >= deadline:
                    break
                candidate = replace(best, **{name: value})
                try:
                    check_plan(candidate, run_cfg, target)
                except TilingError:
                    continue
                us = cost(candidate)
                if us < best_us * 0.995:  # a real gain, not cost-model noise
                    best, best_us, improved = candidate, us, True
    changed = {k: v for k, v in best.values().items() if v != getattr(default, k)}
    tuned = default.with_overrides(changed, source="tuned")
    key = _key(cfg, phase, shape_class(phase, lens), target)
    path = _store(target)
    with file_lock(path.parent / ".lock"):
        data = _entries(path)
        data[key] = {"values": changed,
                     "sim_us": best_us, "default_us": default_us, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(path, json.dumps(data, indent=2))
    return TuneResult(tuned, best_us, default_us, tried, key, path)
