"""``qwenlayers bench``: sweep a layer over sizes and platforms, and say where the time goes.

Each point is one cost-model run of the whole layer (``values=False``: cheap at any size that
compiles) or, with ``check=True``, a checked run. A record per point is appended to
``<results>/bench.jsonl`` (an append-only history), the Perfetto trace of each point is kept
next to it, and a PNG plots simulated µs and the fraction of the roofline reached against
size. Two rooflines are recorded: the calibrated one (what the platform's cost model reaches
on streaming and matmul micro-kernels, ``runtime/calibration.py``; the plot shows the
fraction of this one) and the nominal one from the descriptor's HBM bandwidth and BF16 peak.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenlayers.core.config import as_config
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.weights import LayerWeights
from qwenlayers.core.work import layer_work
from qwenlayers.errors import InputError, QwenlayersError
from qwenlayers.inputs import cost_model_inputs, paged, random_inputs
from qwenlayers.layer import decode, prefill
from qwenlayers.registry import PlatformRegistry, get_registry
from qwenlayers.runtime.calibration import calibrate
from qwenlayers.runtime.paths import results_dir, writable_dir
from qwenlayers.target import Target, resolve_target


def default_results_dir() -> Path:
    return results_dir("bench")


@dataclass
class BenchPoint:
    platform: str
    batch: int
    seq_len: int
    record: dict[str, Any]
    budgets: str = ""  # the budget set the point ran under

    @property
    def label(self) -> str:
        """The point's series: the platform, and the budget set when it is not the platform's own."""
        return self.platform if self.record.get("default_budgets", True) else f"{self.platform} ({self.budgets})"


def roofline(platform: Platform, work: Any) -> tuple[float, str]:
    """(µs, which bound) from the descriptor's nominal figures (real-device data sheets)."""
    bw = platform.hbm_bandwidth.value * 1e9
    peak = platform.bf16_peak.value * 1e12
    memory_us, compute_us = work.bytes / bw * 1e6, work.flops / peak * 1e6
    return (memory_us, "memory") if memory_us >= compute_us else (compute_us, "compute")


def run_bench(
    phase: Phase,
    model: str,
    batches: Sequence[int],
    seq_lens: Sequence[int],
    platforms: Sequence[str | None],
    *,
    check: bool = False,
    baseline: bool = True,
    results: Path | None = None,
    seed: int = 0,
    registry: PlatformRegistry | None = None,
    progress: Callable[[str], None] | None = None,
    budgets: Sequence[str | None] = (None,),
    cache: bool = True,
    paged_block: int = 0,
) -> tuple[list[BenchPoint], Path]:
    """Run every (platform, budget set, batch, seq_len) point; returns the points and the plot's path.

    ``budgets`` lists the budget sets to run each platform under (None: the plugin's own; e.g.
    ``[None, "pypto-lib"]`` shows both side by side).

    ``paged_block`` > 0 runs every point through paged caches of that block size with shuffled
    tables (:func:`qwenlayers.inputs.paged`), and also the contiguous layout at the same plan
    (cost model only): ``record["paged"]`` has both times and their ratio.

    With ``baseline``, each point also runs the reference-schedule baseline of its phase
    (:mod:`qwenlayers.core.kernels.reference`) in the same process, cost model only, and records
    the speed-up and the task-count ratio of the fused kernel against it."""
    say = progress or (lambda _m: None)
    if phase not in ("decode", "prefill"):
        raise InputError(f"bench --phase {phase!r}; allowed: decode, prefill")
    reg = registry or get_registry()
    cfg = as_config(model)
    # a cost-model point does not read values: zeros cost nothing to make (32B's random weights took 6 s)
    weights = LayerWeights.random(cfg, seed=seed) if check else LayerWeights.zeros(cfg)
    out_dir = writable_dir(results or default_results_dir(), "results folder")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    points: list[BenchPoint] = []
    total = len(platforms) * len(budgets) * len(batches) * len(seq_lens)
    resolved = [resolve_target(name, budgets=b, registry=reg) for name in platforms for b in budgets]  # once each
    for one in resolved:
        target = one.platform
        say(f"calibrating {target.name} (once per pypto version)")
        cal = calibrate(one)
        for batch in batches:
            for seq_len in seq_lens:
                say(f"[{len(points) + 1}/{total}] {cfg.name} {phase} on {target.name} ({target.budgets.name} budgets): "
                    f"batch {batch}, seq_len {seq_len}")
                lens, max_seq = [seq_len] * batch, max(cfg.max_seq, seq_len)
                args = (random_inputs(cfg, phase, lens, seed=seed, max_seq=max_seq) if check
                        else cost_model_inputs(cfg, phase, lens, max_seq=max_seq))
                run = decode if phase == "decode" else prefill
                ours = paged(args, cfg, phase, paged_block, seed=seed) if paged_block else args
                result = run(cfg, weights, **ours, platform=one, check=check, values=check, keep=True, registry=reg,
                             cache=cache)
                rep = result.report
                layout = _contiguous_beside(phase, cfg, weights, args, one, reg, rep, paged_block, cache) if paged_block else None
                trace = (_earlier_trace(out_dir, rep.cache_key) if rep.from_cache else
                         _keep_trace(rep.trace, rep.run_dir, out_dir, f"{stamp}-{target.name}-{target.budgets.name}-{phase}-b{batch}-l{seq_len}"))
                work = layer_work(cfg, phase, lens)
                roof_us, bound = roofline(target, work)
                cal_us, cal_bound = cal.roofline_us(work)
                record = {
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": cfg.name, "phase": phase, "platform": target.name,
                    "budgets": target.budgets.name, "default_budgets": target.budgets == target.default_budgets,
                    "batch": batch, "seq_len": seq_len, "sim_us": rep.sim_us, "total_cycles": rep.total_cycles,
                    "arch": rep.arch, "cost_model_arch": rep.cost_model_arch, "lanes": rep.lanes, "tasks": rep.tasks, "pipe_usage_pct": rep.pipe_usage_pct, "compile_s": rep.compile_s,
                    "simulate_s": rep.simulate_s, "peak_rss_mb": rep.peak_rss_mb, "flops": work.flops, "bytes": work.bytes,
                    "roofline_us": cal_us, "roofline_bound": cal_bound,
                    "roofline_fraction": cal_us / rep.sim_us if rep.sim_us else None,
                    "calibration": {"bandwidth_gb_s": cal.bandwidth_gb_s, "vector_stream_gb_s": cal.vector_stream_gb_s,
                                    "cube_stream_gb_s": cal.cube_stream_gb_s, "cube_tflops": cal.cube_tflops,
                                    "vector_gops": cal.vector_gops, "pypto": cal.pypto},
                    "nominal_roofline_us": roof_us, "nominal_roofline_bound": bound,
                    "nominal_roofline_fraction": roof_us / rep.sim_us if rep.sim_us else None,
                    "roofline_source": f"calibrated on {target.name}: {cal.bandwidth_gb_s:.0f} GB/s, {cal.cube_tflops:.0f} TFLOP/s; "
                                       f"nominal: {target.hbm_bandwidth} ({target.hbm_bandwidth.source}); "
                                       f"{target.bf16_peak} ({target.bf16_peak.source})",
                    "plan": rep.plan, "trace": str(trace) if trace else None, "max_abs_err": rep.max_abs_err,
                    "within_tolerance": rep.within_tolerance, "from_cache": rep.from_cache, "cache_key": rep.cache_key,
                    "baseline": _baseline_or_reason(phase, cfg, weights, args, one, reg, rep, say, cache) if baseline else None,
                    "paged": layout,
                }
                with (out_dir / "bench.jsonl").open("a") as f:
                    f.write(json.dumps(record, default=str) + "\n")
                points.append(BenchPoint(target.name, batch, seq_len, record, target.budgets.name))
    plot = plot_points(points, out_dir / f"{stamp}-{cfg.name}-{phase}.png", f"{cfg.name} {phase}")
    return points, plot


def _contiguous_beside(phase: Phase, cfg: Any, weights: LayerWeights, args: dict[str, Any], target: Target,
                       reg: PlatformRegistry, ours: Any, block: int, cache: bool) -> dict[str, Any]:
    """A paged point's contiguous twin: the same call and plan on contiguous caches, cost model only."""
    run = decode if phase == "decode" else prefill
    same_plan = {k: v for k, v in ours.plan.items() if k not in ("phase", "source", "origin")}
    contiguous = run(cfg, weights, **args, platform=target, values=False, plan=same_plan, registry=reg, cache=cache).report
    return {"block": block, "paged_sim_us": ours.sim_us, "contiguous_sim_us": contiguous.sim_us,
            "ratio": ours.sim_us / contiguous.sim_us if ours.sim_us and contiguous.sim_us else None,
            "contiguous_tasks": contiguous.tasks}


def _baseline_or_reason(phase: Phase, cfg: Any, weights: LayerWeights, args: dict[str, Any], target: Target,
                        reg: PlatformRegistry, ours: Any, say: Callable[[str], None], cache: bool = True) -> dict[str, Any]:
    """The baseline of a point, or why it was not measured: a baseline that fails (its compile,
    its run, or a size it cannot take) costs the comparison, never the fused point already
    measured. A warning says so; only a failure of the fused point fails ``bench``."""
    try:
        return _baseline(phase, cfg, weights, args, target, reg, ours, say, cache)
    except QwenlayersError as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        warnings.warn(f"bench: the reference-schedule baseline of {cfg.name} {phase} on {target.name} was not measured "
                      f"({reason}); the fused point is recorded", RuntimeWarning, stacklevel=2)
        return {"schedule": "reference", "not_measured": reason}


def _baseline(phase: Phase, cfg: Any, weights: LayerWeights, args: dict[str, Any], target: Target, reg: PlatformRegistry,
              ours: Any, say: Callable[[str], None], cache: bool = True) -> dict[str, Any]:
    """The reference-schedule baseline at the same point and budget set (cost model only) and our ratios to it."""
    say(f"  reference-schedule baseline on {target.name}")
    run = decode if phase == "decode" else prefill
    ref = run(cfg, weights, **args, platform=target, values=False, schedule="reference", registry=reg, cache=cache).report
    ours_tasks, ref_tasks = sum(ours.tasks.values()), sum(ref.tasks.values())
    return {
        "schedule": "reference", "sim_us": ref.sim_us, "tasks": ref.tasks, "compile_s": ref.compile_s,
        "peak_rss_mb": ref.peak_rss_mb, "pipe_usage_pct": ref.pipe_usage_pct,
        "speedup": ref.sim_us / ours.sim_us if ref.sim_us and ours.sim_us else None,
        "task_ratio": ref_tasks / ours_tasks if ours_tasks else None,
    }


def _earlier_trace(out_dir: Path, key: str | None) -> Path | None:
    """The trace an earlier run of the same program left in this results folder (a point
    answered from the result cache has no run of its own to trace)."""
    history = out_dir / "bench.jsonl"
    if not key or not history.exists():
        return None
    for line in reversed(history.read_text().splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("cache_key") == key and record.get("trace") and Path(record["trace"]).exists():
            return Path(record["trace"])
    return None


def _keep_trace(trace: str | None, run_dir: str | None, out_dir: Path, stem: str) -> Path | None:
    """Keep the Perfetto trace next to the history; drop the rest of the run folder (pypto's
    dumps are large and not asked for)."""
    kept = None
    if trace and Path(trace).exists():
        kept = out_dir / f"{stem}.trace.json"
        shutil.move(trace, kept)
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return kept


def plot_points(points: Sequence[BenchPoint], path: Path, title: str) -> Path:
    """Simulated µs and roofline fraction against size (tokens per call), one line per platform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(11, 4))
    for name in sorted({p.label for p in points}):
        mine = sorted((p for p in points if p.label == name), key=lambda p: (p.batch * p.seq_len, p.batch))
        xs = [f"{p.batch}x{p.seq_len}" for p in mine]
        line = ax_t.plot(xs, [p.record["sim_us"] for p in mine], marker="o", label=name)[0]
        refs = [(p.record.get("baseline") or {}).get("sim_us") for p in mine]
        if all(refs):  # the reference-schedule baseline of the same points, same colour, dashed
            ax_t.plot(xs, refs, marker="x", linestyle="--", color=line.get_color(), label=f"{name} reference schedule")
        ax_f.plot(xs, [100 * (p.record["roofline_fraction"] or 0) for p in mine], marker="o", label=name)
    ax_t.set_ylabel("simulated µs")
    ax_t.set_yscale("log")
    ax_f.set_ylabel("% of calibrated roofline")
    for ax in (ax_t, ax_f):
        ax.set_xlabel("batch x seq_len")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
