"""The Python API: select a platform, plan, build and run on it, check against the golden."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from qwenlayers.core import golden
from qwenlayers.core.config import Qwen3Config, as_config
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.errors import KernelError
from qwenlayers.plans import resolve_plan
from qwenlayers.registry import PlatformRegistry, get_registry
from qwenlayers.runtime.job_types import RmsNormJob
from qwenlayers.runtime.worker import run_job
from qwenlayers.target import resolve_target


def _registry(registry: PlatformRegistry | None) -> PlatformRegistry:
    return registry or get_registry()


def plan(
    config: Qwen3Config | Mapping[str, Any] | str,
    phase: Phase,
    *,
    platform: str | Platform | None = None,
    overrides: Mapping[str, int] | None = None,
    registry: PlatformRegistry | None = None,
    batch: int | None = None,
    seq_len: int | None = None,
    budgets: str | None = None,
) -> TilingPlan:
    """The tiling plan a call would use: the platform plugin's default, the tuned plan for the
    shape class of ``batch`` x ``seq_len`` when ``qwenlayers tune`` cached one, then user
    overrides; validated against the platform's budget set ``budgets`` (None: the plugin's own,
    ``"pypto-lib"``: the reference's 2 KB / 16 KB rules, offered on every platform)."""
    reg = _registry(registry)
    if isinstance(platform, Platform):
        target = platform.with_budgets(budgets) if budgets else platform
    else:
        target = reg.select(platform, budgets=budgets)
    cfg = as_config(config)
    lens = [seq_len] * batch if batch and seq_len else None
    return resolve_plan(reg, target, cfg, phase, overrides or {}, lens)


@dataclass
class SmokeResult:
    """The RMSNorm smoke run: the worker's report plus the comparison with the golden."""

    platform: str
    report: dict[str, Any]
    max_abs_err: float
    exact: bool
    wall_s: float
    workarounds: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        passes = self.report.get("verification", {}).get("passes", {})
        return self.max_abs_err <= 1e-2 and all(v.get("FAILED", 0) == 0 for v in passes.values())


def smoke(
    platform: str | None = None,
    *,
    tokens: int = 16,
    hidden: int = 1024,
    eps: float = 1e-6,
    seed: int = 0,
    keep: bool = False,
    registry: PlatformRegistry | None = None,
    progress: Callable[[str], None] | None = None,
) -> SmokeResult:
    """Compile and run an RMSNorm kernel on the platform and compare it with the golden RMSNorm.

    Proves the whole runtime: the plugin prepared the worker, pypto compiled for the platform's
    arch (``report['npuarch']``), the cost model ran (``sim_us``), and the output came back filled
    by pypto's interpreter.
    """
    target = resolve_target(platform, registry=_registry(registry))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen).bfloat16()
    g = (1 + 0.1 * torch.randn(hidden, generator=gen)).bfloat16()
    vec_cols = min(hidden, max(32, target.platform.budgets.tilelet_bytes * 8 // 4 // tokens))  # fp32 columns per vec tile
    result = run_job(target, RmsNormJob(x, g, eps, (tokens, vec_cols)), verify_passes=True, keep=keep, progress=progress)
    out = result.outputs["out"]
    ref = golden.rms_norm(x, g, eps)
    if out.shape != ref.shape:
        raise KernelError(f"smoke kernel returned shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    err = (out.float() - ref.float()).abs().max().item()
    return SmokeResult(target.name, result.report, err, torch.equal(out, ref), result.wall_s, result.workarounds)
