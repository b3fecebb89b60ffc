"""What a layer call reports, built in one place: the one-process report of ``decode`` /
``prefill`` (:class:`LayerReport`), the merge of its workers' figures, and the check against the
golden that ``decode``, ``prefill`` and their tensor-parallel forms record the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from qwenlayers.core import contract, golden
from qwenlayers.core.compare import Comparison, compare, verdict
from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import Phase
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.core.weights import LayerWeights
from qwenlayers.target import Target


@dataclass
class LayerReport:
    """What one layer run cost and how it compared, for tables, JSON and benchmarks."""

    phase: Phase
    platform: str
    model: str
    arch: str  # pypto npuarch the kernel was compiled for
    cost_model_arch: str | None
    batch: int
    seq_lens: list[int]
    plan: dict[str, Any]
    sim_us: float | None
    aicore_cycles: int | None
    total_cycles: float | None
    tasks: dict[str, int]
    lanes: dict[str, int]
    pipe_usage_pct: dict[str, float]
    compile_s: float
    simulate_s: float
    wall_s: float
    peak_rss_mb: int
    verification: dict[str, Any]
    workarounds: list[str]
    chunks: list[dict[str, Any]] = field(default_factory=list)
    timing_from: str = "values run"  # or "whole-batch cost-model run" when the values came in chunks
    trace: str | None = None
    run_dir: str | None = None
    max_abs_err: float | None = None  # against the golden, when checked
    cache_max_abs_err: float | None = None
    within_tolerance: bool | None = None  # bf16 atol=rtol=1e-2 (qwenlayers.core.compare)
    outside_elementwise: int | None = None  # outputs outside the plain elementwise bar
    nonfinite: dict[str, Any] | None = None  # when checked: per tensor with NaN/Inf, its count and first positions
    check_failures: list[str] = field(default_factory=list)  # when checked and not within tolerance: why, per tensor
    schedule: str = "fused"  # or "reference": the reference-schedule baseline
    budgets: str = ""  # the budget set the plan was checked against (the plugin's own, or e.g. pypto-lib)
    calculator_build_s: float = 0.0  # pypto's one-time CPU calculator build, when this call did it (inside compile_s)
    from_cache: bool = False  # the timing was answered from the cost-model result cache (runtime/result_cache.py)
    cache_key: str | None = None  # the timing run's key in that cache

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckedReport(Protocol):
    """The check fields :class:`LayerReport` and the tensor-parallel report share."""

    max_abs_err: float | None
    cache_max_abs_err: float | None
    within_tolerance: bool | None
    outside_elementwise: int | None
    nonfinite: dict[str, Any] | None
    check_failures: list[str]


def merge_verification(reports: list[dict[str, Any]]) -> dict[str, Any]:
    passes: dict[str, dict[str, int]] = {}
    for r in reports:
        for name, counts in r.get("verification", {}).get("passes", {}).items():
            slot = passes.setdefault(name, {"PASS": 0, "FAILED": 0})
            for k in ("PASS", "FAILED"):
                slot[k] += counts.get(k, 0)
    exceptions = [e for r in reports for e in r.get("verification", {}).get("exceptions", [])]
    return {"passes": passes, "exceptions": exceptions}


def chunk_summary(what: str, estimate: int, lens: list[int], report: dict[str, Any], wall: float) -> dict[str, Any]:
    """One worker's line in a report's ``chunks``: what it ran, its estimate and its figures."""
    return {
        "worker": what, "seq_lens": lens,
        "estimate_gb": round(estimate / 1024**3, 2), "peak_rss_mb": report.get("peak_rss_mb"),
        "sim_us": report.get("sim_us"), "compile_s": report.get("compile_s"), "simulate_s": report.get("simulate_s"),
        "wall_s": round(wall, 2),
    }


def build_report(
    phase: Phase, target: Target, cfg: Qwen3Config, lens: list[int], plan: TilingPlan, timing: dict[str, Any],
    timing_from: str, reports: list[dict[str, Any]], summaries: list[dict[str, Any]], wall_total: float, kept_dir: Any,
    schedule: str,
) -> LayerReport:
    """The call's report: timing from ``timing`` (the values run, or the cost-model run or phases
    that stand for the whole call), verification merged over every worker's ``reports``."""
    return LayerReport(
        phase=phase, platform=target.name, model=cfg.name, arch=str(timing.get("npuarch") or reports[0].get("npuarch")),
        cost_model_arch=timing.get("cost_model_arch"), batch=len(lens), seq_lens=lens, plan=plan.as_dict(),
        sim_us=timing.get("sim_us"), aicore_cycles=timing.get("aicore_cycles"), total_cycles=timing.get("total_cycles"),
        tasks=timing.get("tasks", {}), lanes=timing.get("lanes", {}), pipe_usage_pct=timing.get("pipe_usage_pct", {}),
        compile_s=float(timing.get("compile_s", 0.0)), simulate_s=float(timing.get("simulate_s", 0.0)),
        wall_s=round(wall_total, 2), peak_rss_mb=max(int(r.get("peak_rss_mb", 0)) for r in [*reports, timing]),
        verification=merge_verification(reports), workarounds=list(target.switches),
        chunks=summaries, timing_from=timing_from, trace=timing.get("trace"),
        run_dir=str(kept_dir) if kept_dir else timing.get("run_dir"), schedule=schedule, budgets=target.platform.budgets.name,
        from_cache=bool(timing.get("from_cache")), cache_key=timing.get("cache_key"),
        calculator_build_s=round(sum(float(r.get("calculator_build_s", 0.0))
                                     for r in (reports if any(r is timing for r in reports) else [*reports, timing])), 1),
    )


def record_check(report: CheckedReport, comparisons: Mapping[str, Comparison]) -> None:
    """Record ``{"out", "k_cache", "v_cache"}`` comparisons: a NaN or Inf anywhere checked is a
    failure with its count and first positions, never an exact match."""
    v = verdict(comparisons)
    report.max_abs_err, report.cache_max_abs_err, report.within_tolerance = v.max_abs_err, v.cache_max_abs_err, v.ok
    report.outside_elementwise, report.nonfinite, report.check_failures = v.outside_elementwise, v.nonfinite, v.failures


def compare_layer(
    phase: Phase, lens: list[int], out: torch.Tensor, ref: torch.Tensor, caches: tuple[torch.Tensor, torch.Tensor],
    ref_caches: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, Comparison]:
    """Output and caches against the golden; cache rows the layer must not write are compared
    bit for bit (garbage there is the caller's), the written rows must be finite and close."""
    through = contract.passthrough_rows(phase, lens, caches[0].shape[2])
    return {"out": compare(out, ref), **{name: compare(c, r, passthrough=through)
                                        for name, c, r in zip(("k_cache", "v_cache"), caches, ref_caches)}}


def check_against_golden(
    report: CheckedReport, phase: Phase, cfg: Qwen3Config, weights: LayerWeights, hidden: torch.Tensor,
    seq_lens: torch.Tensor, lens: list[int], before: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor,
    caches: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Run the golden layer on the inputs and the caches as they were ``before`` the call, and
    record how ``out`` and the written ``caches`` compare."""
    if phase == "decode":
        ref, ref_k, ref_v = golden.decode(cfg, weights, hidden, before[0], before[1], seq_lens)
    else:
        ref, ref_k, ref_v = golden.prefill(cfg, weights, hidden, seq_lens, max_seq=caches[0].shape[2])
        for b, n_tok in enumerate(lens):  # the golden allocates zero caches; rows past seq_len are the caller's
            ref_k[b][:, n_tok:] = before[0][b][:, n_tok:]
            ref_v[b][:, n_tok:] = before[1][b][:, n_tok:]
    record_check(report, compare_layer(phase, lens, out, ref, caches, (ref_k, ref_v)))
