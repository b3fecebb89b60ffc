"""``qwenlayers tune``: search the tiling space the platform budgets allow, with the cost model.

Coordinate descent from the plugin's default plan: for each tile field in turn, try the
powers of two around the current value that pass ``check_plan`` (budgets, buffers,
divisibility), keep the fastest simulated layer, and move on; repeat while time is left. Each
candidate is one cost-model run (no values). The best plan is cached per platform and pypto
version under a key (preset, phase, shape class) and becomes the default plan for calls of
that class: its values show origin ``tuned`` in ``qwenlayers plan``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.platform import Phase
from qwenlayers.core.tiling import TILE_FIELDS, TilingPlan, check_plan
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import InputError, KernelError, TilingError
from qwenlayers.inputs import cost_model_inputs
from qwenlayers.layer import decode, prefill
from qwenlayers.plans import store_tuned
from qwenlayers.registry import PlatformRegistry, get_registry
from qwenlayers.target import resolve_target


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
    registry: PlatformRegistry | None = None,
    progress: Callable[[str, int], None] | None = None,
    budgets: str | None = None,
    cache: bool = True,
) -> TuneResult:
    """Tune the plan for (platform, model, phase, class of batch x seq_len) within the time limit."""
    reg = registry or get_registry()
    resolved = resolve_target(platform, budgets=budgets, registry=reg)  # once for every candidate run
    target = resolved.platform
    cfg = as_config(model)
    lens = [seq_len] * batch
    run_cfg = cfg if phase == "prefill" else cfg.with_max_seq(max(cfg.max_seq, seq_len))
    weights = LayerWeights.zeros(cfg)  # every candidate is a cost-model run: values are not read
    args = cost_model_inputs(cfg, phase, lens, max_seq=run_cfg.max_seq)
    say = progress or (lambda _m, _n: None)
    measured: dict[str, float] = {}
    tried: list[dict[str, Any]] = []

    def cost(plan: TilingPlan, *, must_run: bool = False) -> float:
        """The plan's simulated µs. A candidate whose program pypto refuses or that outgrows the
        machine (KernelError) or the up-front estimates (InputError) is recorded with its reason
        and costs infinity, so one bad corner of the search does not lose the others; the
        default plan (``must_run``) still fails the tune."""
        key = plan.cache_key()
        if key not in measured:
            run = decode if phase == "decode" else prefill
            try:
                result = run(run_cfg, weights, **args, platform=resolved, plan=plan, values=False, registry=reg,
                             cache=cache)
            except (KernelError, InputError) as err:
                if must_run:
                    raise
                measured[key] = float("inf")
                tried.append({"values": plan.values(), "sim_us": None, "tasks": None,
                              "failed": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"})
            else:
                measured[key] = float(result.report.sim_us or float("inf"))
                tried.append({"values": plan.values(), "sim_us": measured[key], "tasks": result.report.tasks,
                              "from_cache": result.report.from_cache})
            say(f"{len(tried)} plans tried, best {min(measured.values()):.1f} µs", len(tried))
        return measured[key]

    default = reg.tiling_defaults(target, run_cfg, phase)
    best, best_us = default, cost(default, must_run=True)
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
    key, path = store_tuned(target, cfg, phase, lens, changed, best_us, default_us)
    return TuneResult(tuned, best_us, default_us, tried, key, path)
