"""The ``qwenlayers`` command line: platforms, plan, smoke, run, bench, tune, generate.

Every qwenlayers error is printed as one clear message and mapped to an exit code:
2 bad input or tiling, 3 platform problem (unknown, broken, unavailable), 4 kernel failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Annotated, Any, Literal, NoReturn, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qwenlayers import __version__
from qwenlayers.errors import QwenlayersError

PLATFORM_HELP = "Target (default: $QWENLAYERS_PLATFORM or a5sim; see `qwenlayers platforms`)."
BUDGETS_HELP = "Budget set: the plugin's own (default) or pypto-lib (the reference's 2 KB / 16 KB)."
PlatformOpt = Annotated[str | None, typer.Option("--platform", "-p", help=PLATFORM_HELP)]
BudgetsOpt = Annotated[str | None, typer.Option("--budgets", help=BUDGETS_HELP)]
PhaseOpt = Annotated[Literal["decode", "prefill"], typer.Option("--phase",
                                                                help="decode (one new token per sequence) or prefill (all tokens of each sequence, causal).")]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a table (errors too).")]
KeepOpt = Annotated[bool, typer.Option("--keep", metavar="", help="Keep pypto's run folder (Perfetto trace, logs).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", metavar="",
                                          help="Simulate again even when the cost-model result cache holds this program.")]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Qwen3 layers as PyPTO kernels for Ascend NPUs.")
#: Width of tables when the output is not a terminal (a pipe, a file, a CI log): rich would
#: otherwise wrap to 80 columns and cut every bench column to a character or two. Tables take
#: their natural width up to this; ``COLUMNS`` still wins when set.
PIPED_WIDTH = 250


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=PIPED_WIDTH if piped else None)


out = _console(stderr=False)
err = _console(stderr=True)


def _print_error(exc: QwenlayersError) -> None:
    """The one-message form of every qwenlayers error (markup off: messages hold ``[..]`` shapes)."""
    err.print("[bold red]error:[/] ", end="")
    err.print(f"{type(exc).__name__}: {exc}", highlight=False, markup=False, soft_wrap=True)


def _fail(exc: QwenlayersError, as_json: bool = False) -> NoReturn:
    if as_json:  # a --json caller parses stdout: the error comes as JSON there too
        print(json.dumps({"error": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}, indent=2))
    else:
        _print_error(exc)
    raise typer.Exit(exc.exit_code)


@contextlib.contextmanager
def _handled(as_json: bool = False) -> Iterator[None]:
    """The one place a command's QwenlayersError becomes its message and its exit code."""
    try:
        yield
    except QwenlayersError as exc:
        _fail(exc, as_json)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Print a warning (e.g. a plugin isolated at call time) as one line, not with the source
    line Python adds by default, so it reads like the CLI's errors."""
    err.print(f"warning: {category.__name__}: {message}", highlight=False, markup=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        from qwenlayers.registry import get_registry

        out.print(f"qwenlayers {__version__} at {__file__.rsplit('/', 2)[0]}")
        for r in get_registry().records():
            out.print(f"  {r.dist} {r.version}: platform {r.name} ({r.status})")
        try:
            out.print(f"  pypto {metadata.version('pypto')}")
        except metadata.PackageNotFoundError:
            out.print("  pypto not installed")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="", help="Show versions of qwenlayers, plugins, pypto."),
) -> None:
    """Build, run and check the Qwen3 decoder layer on Ascend targets (real or simulated)."""


def _platform_details(reg: Any) -> dict[str, Any]:
    """Hooks and workarounds of every loaded platform, or the PluginHookError its plugin raised:
    computed before any row is built, so one broken plugin shows as its own broken row (and an
    override plugin isolated on the way shows as broken everywhere) while the others list."""
    from qwenlayers.errors import PluginHookError

    found: dict[str, Any] = {}
    for r in reg.records():
        if r.status != "ok" or r.platform is None:
            continue
        try:
            found[r.name] = (reg.hooks_of(r.name), [
                {"key": w.key, "kind": w.kind, "summary": w.summary, "why": w.why, "remove_when": w.remove_when}
                for w in reg.workarounds(r.platform)
            ])
        except PluginHookError as exc:
            found[r.name] = exc
    return found


def _platform_rows(details: bool) -> list[dict[str, Any]]:
    from qwenlayers.registry import get_registry

    reg = get_registry()
    extra = _platform_details(reg) if details else {}
    rows = []
    for r in reg.records():
        row: dict[str, Any] = {"name": r.name, "distribution": r.dist, "version": r.version, "status": r.status}
        p = r.platform
        if p is not None:
            a = p.available()
            row.update(
                arch=p.arch, backend=p.backend, run_mode=p.run_mode,
                tilelet_bytes=p.budgets.tilelet_bytes, tile_bytes=p.budgets.tile_bytes, budgets=p.budgets.name,
                budget_sets=[{"name": b.name, "tilelet_bytes": b.tilelet_bytes, "tile_bytes": b.tile_bytes, "source": b.source}
                             for b in p.budget_sets],
                buffers={"ub": p.buffers.ub, "l0a": p.buffers.l0a, "l0b": p.buffers.l0b, "l0c": p.buffers.l0c, "l1": p.buffers.l1},
                cores={"cube": p.cores.cube, "vector": p.cores.vector},
                hbm_bandwidth=str(p.hbm_bandwidth), bf16_peak=str(p.bf16_peak),
                usable=a.ok, reason=a.reason,
            )
            if details:
                row["sources"] = {"buffers": p.buffers.source, "hbm_bandwidth": p.hbm_bandwidth.source, "bf16_peak": p.bf16_peak.source}
                row["hooks"] = []
                got = extra.get(r.name)
                if isinstance(got, Exception):  # its hook failed when called: a broken row, the others list
                    row.update(status="broken", usable=False, reason=str(got))
                elif got is not None:
                    row["hooks"], row["workarounds"] = got
        if r.status == "builtin":
            row.update(usable=True, reason="the core's answers in every platform: pypto 0.2.0's workarounds, and the "
                       "ini and cost model of a sim platform's descriptor")
        elif r.status != "ok":  # broken, disabled, duplicate, override: the record says why
            row.update(usable=False, reason=r.error.splitlines()[0] if r.error else r.status)
        rows.append(row)
    return rows


@app.command()
def platforms(
    as_json: JsonOpt = False,
    details: bool = typer.Option(False, "--details", metavar="", help="Also show sources of every figure, hooks and workarounds."),
) -> None:
    """List installed target platforms and whether each is usable on this machine."""
    with _handled(as_json):
        rows = _platform_rows(details)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="qwenlayers platforms", show_lines=False)
    for col in ("name", "distribution", "arch", "mode", "budgets (TILELET/TILE B)", "UB/L0A/L0B/L0C/L1 KB", "usable"):
        table.add_column(col, overflow="fold")
    for r in rows:
        usable = "[green]yes[/]" if r.get("usable") else "[red]no[/]"
        budgets = f"{r['budgets']} {r['tilelet_bytes']}/{r['tile_bytes']}" if "tilelet_bytes" in r else "-"
        buf = "/".join(str(v // 1024) for v in r["buffers"].values()) if "buffers" in r else "-"
        table.add_row(r["name"], f"{r['distribution']} {r['version']}", r.get("arch", "-"), r.get("run_mode", r["status"]),
                      budgets, buf, usable)
    out.print(table)
    for r in rows:
        out.print(f"  [bold]{r['name']}[/]: ", end="")
        out.print(r.get("reason", ""), markup=False, highlight=False)
    if details:
        for r in rows:
            if r.get("workarounds") or r.get("sources"):
                out.print(f"\n[bold]{r['name']}[/] hooks: {', '.join(r.get('hooks', []))}")
                for k, v in (r.get("sources") or {}).items():
                    out.print(f"  {k}: {v}")
                for b in r.get("budget_sets", []):
                    out.print(f"  budget set [cyan]{b['name']}[/] (TILELET {b['tilelet_bytes']} B, TILE {b['tile_bytes']} B): {b['source']}")
                for w in r.get("workarounds", []):
                    label = "workaround (switch)" if w["kind"] == "switch" else "note"
                    out.print(f"  {label} [cyan]{w['key']}[/]: {w['summary']}\n    why: {w['why']}\n    remove when: {w['remove_when']}")


@app.command()
def plan(
    model: str = typer.Option(..., "--model", "-m", help="Preset (qwen3-0.6b … qwen3-32b, tiny) or a HF config.json path."),
    phase: PhaseOpt = ...,
    platform: PlatformOpt = None,
    tile: list[str] = typer.Option([], "--tile", help="Override a tile size, KEY=VALUE (repeatable), e.g. SEQ_TILE=128."),
    budgets: BudgetsOpt = None,
    batch: int | None = typer.Option(None, "--batch", help="With --seq-len: show the tuned plan of this shape class, if any."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="With --batch: see --batch."),
    as_json: JsonOpt = False,
) -> None:
    """Show the tiling plan for a model and phase, each tile's bytes against its budget, and
    where each value came from (plugin default, tuned, or user)."""
    from pathlib import Path

    from qwenlayers.api import plan as make_plan
    from qwenlayers.core.config import preset
    from qwenlayers.core.tiling import TILE_FIELDS, parse_overrides, tile_checks
    from qwenlayers.core.weights import load_config
    from qwenlayers.registry import get_registry

    with _handled(as_json):
        cfg = load_config(model) if Path(model).exists() else preset(model)
        target = get_registry().select(platform, budgets=budgets)
        result = make_plan(cfg, phase, platform=target, overrides=parse_overrides(tile),  # type: ignore[arg-type]
                           batch=batch, seq_len=seq_len)
    checks = tile_checks(result, cfg, target)
    if as_json:
        print(json.dumps({"platform": target.name, "model": cfg.name, "budgets": target.budgets.name, "plan": result.as_dict(), "tiles": [
            {"name": c.tile.name, "shape": c.tile.shape, "bytes": c.tile.bytes, "kind": c.tile.kind,
             "budget": c.budget, "budget_name": c.budget_name, "ok": c.ok} for c in checks]}, indent=2))
        return
    values = Table(title=f"{cfg.name} {phase} plan on {target.name}, budget set {target.budgets.describe()}")
    values.add_column("key")
    values.add_column("value", justify="right")
    values.add_column("from")
    values.add_column("tiles")
    for name, what in TILE_FIELDS.items():
        values.add_row(name.upper(), str(getattr(result, name)), result.origin_of(name), what)
    out.print(values)
    tiles = Table(title="tiles against budgets")
    for col in ("tile", "shape", "dtype", "bytes", "budget", "use"):
        tiles.add_column(col, justify="right" if col in ("bytes", "budget", "use") else "left")
    for c in checks:
        use = c.tile.bytes / c.budget
        colour = "green" if use <= 1 else "red"
        tiles.add_row(c.tile.name, f"{c.tile.shape[0]} x {c.tile.shape[1]}", "fp32" if c.tile.dtype_bytes == 4 else "bf16",
                      str(c.tile.bytes), f"{c.budget_name} {c.budget}", f"[{colour}]{use:.0%}[/]")
    out.print(tiles)


def _report_table(title: str, report: dict[str, Any], extra: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", overflow="fold")  # left: a long plan row would push every value far right
    rows: dict[str, Any] = dict(extra)
    rows.update({
        "compiled for arch (pypto npuarch)": report.get("npuarch"),
        "cost-model deviceArch": report.get("cost_model_arch"),
        "simulated AICore time": f"{report['sim_us']:.2f} µs" if report.get("sim_us") is not None else "-",
        "AICore cycles (span)": report.get("aicore_cycles"),
        "total cycles": report.get("total_cycles"),
        "tasks AIC / AIV / HUB": " / ".join(str(report.get("tasks", {}).get(k, 0)) for k in ("AIC", "AIV", "HUB")),
        "lanes AIC / AIV": " / ".join(str(report.get("lanes", {}).get(k, 0)) for k in ("AIC", "AIV")),
        "pipe usage %": ", ".join(f"{k} {v:g}" for k, v in report.get("pipe_usage_pct", {}).items()),
        "compile wall": f"{report.get('compile_s', 0):.2f} s" + (
            f" (of which the one-time build of pypto's CPU calculator: {report['calculator_build_s']:.1f} s)"
            if report.get("calculator_build_s") else ""),
        "simulate wall": f"{report.get('simulate_s', 0):.2f} s",
        "peak worker RSS": f"{report.get('peak_rss_mb', 0)} MB",
    })
    passes = report.get("verification", {}).get("passes", {})
    if passes:
        rows["pass verification"] = ", ".join(f"{k.split('_', 2)[-1]} {v.get('PASS', 0)}/{v.get('PASS', 0) + v.get('FAILED', 0)}" for k, v in passes.items())
    if report.get("trace"):
        rows["Perfetto trace"] = report["trace"]
    for k, v in rows.items():
        table.add_row(k, str(v))
    return table


@app.command()
def smoke(
    platform: PlatformOpt = None,
    keep: KeepOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compile and run an RMSNorm kernel on the platform and check it against the golden."""
    from qwenlayers.api import smoke as run_smoke

    with _handled(as_json):
        with err.status(f"compiling and running the RMSNorm smoke kernel on {platform or 'the default platform'} …") as status:
            result = run_smoke(platform, keep=keep, progress=lambda phase: status.update(f"smoke kernel: {phase} …"))
    if as_json:
        print(json.dumps({"platform": result.platform, "ok": result.ok, "max_abs_err": result.max_abs_err,
                          "exact": result.exact, "wall_s": result.wall_s, "report": result.report}, indent=2, default=str))
    else:
        verdict = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
        out.print(_report_table(f"smoke on {result.platform}: {verdict}", result.report, {
            "max |out - golden|": f"{result.max_abs_err:.3g}" + (" (bit-exact)" if result.exact else ""),
            "worker wall": f"{result.wall_s:.2f} s",
        }))
    if not result.ok:
        raise typer.Exit(4)


def _layer_table(title: str, report: Any) -> Table:
    """The report table of a layer run (decode or prefill)."""
    r = report.as_dict()
    extra: dict[str, Any] = {
        "model / phase": f"{r['model']} {r['phase']}" + (" (reference-schedule baseline)" if r["schedule"] == "reference" else ""),
        "batch, seq_lens": f"{r['batch']}: {', '.join(map(str, r['seq_lens'][:8]))}{' …' if len(r['seq_lens']) > 8 else ''}",
        "plan": ", ".join(f"{k.upper()}={v}" for k, v in r["plan"].items() if k not in ("phase", "source", "origin")),
        "budget set": r["budgets"],
        "workers (batch chunks)": f"{len(r['chunks'])}; timing from the {r['timing_from']}"
                                  + (", answered from the cost-model result cache (--no-cache: simulate again)"
                                     if r.get("from_cache") else ""),
    }
    raw = {**r, "npuarch": r["arch"]}
    table = _report_table(title, raw, extra)
    table.add_row("worker wall (all)", f"{r['wall_s']:.2f} s")
    if r["max_abs_err"] is not None:
        verdict = "[green]within[/]" if r["within_tolerance"] else "[red]outside[/]"
        table.add_row("max |out - golden|", f"{r['max_abs_err']:.4g} ({verdict} atol=rtol=1e-2)")
        table.add_row("max |cache - golden|", f"{r['cache_max_abs_err']:.4g}")
    for failure in r.get("check_failures") or []:  # why it failed, e.g. NaN outputs with their count and first positions
        table.add_row("[red]check failed[/]", escape(failure))
    return table


def _seq_lens(batch: int, seq_len: int | None, seq_lens: str | None, max_seq: int) -> list[int]:
    from qwenlayers.errors import InputError

    if seq_len is not None and seq_lens is not None:
        raise InputError("give --seq-len L (every sequence) or --seq-lens a,b,c (one per sequence), not both")
    if seq_lens is not None:
        try:
            return [int(v) for v in seq_lens.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--seq-lens {seq_lens!r} is not a comma-separated list of ints, e.g. --seq-lens 1,64,200") from None
    if seq_len is not None:
        return [seq_len] * batch
    if batch == 1:
        return [max_seq]
    return [1 + round(i * (max_seq - 1) / (batch - 1)) for i in range(batch)]  # 1 .. max_seq, spread


@app.command()
def run(
    phase: PhaseOpt = "decode",
    model: str = typer.Option("tiny", "--model", "-m", help="Preset name (see `qwenlayers plan --help`), or ignored with --weights."),
    batch: int = typer.Option(4, "--batch", "-b", help="Sequences (ignored with --seq-lens)."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Every sequence's length, including the new token."),
    seq_lens: str | None = typer.Option(None, "--seq-lens", help="Per-sequence lengths, e.g. 1,64,200."),
    platform: PlatformOpt = None,
    weights: str | None = typer.Option(None, "--weights", help="Hugging Face checkpoint folder (config.json + safetensors)."),
    layer: int = typer.Option(0, "--layer", help="Layer index to load with --weights."),
    tile: list[str] = typer.Option([], "--tile", help="Override a tile size, e.g. --tile SEQ_TILE=32 (repeatable)."),
    budgets: BudgetsOpt = None,
    check: bool = typer.Option(True, "--check/--no-check", metavar="", help="Compare with the golden math (default on)."),
    verify_passes: bool = typer.Option(False, "--verify-passes", metavar="", help="Also verify pypto's lowered passes (verdicts in the report)."),
    cost_model_only: bool = typer.Option(False, "--cost-model-only", metavar="", help="Simulate timing only: no output values, no check (any size)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel ranks (spawned on this host; under torchrun, its processes)."),
    schedule: Literal["fused", "reference"] = typer.Option("fused", "--schedule", help="fused (ours) or reference (the baseline schedule bench compares against)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs (and weights without --weights)."),
    keep: KeepOpt = False,
    as_json: JsonOpt = False,
    allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite", metavar="",
                                         help="Run even with NaN/Inf in the weights (refused by default); the check then fails."),
    no_cache: NoCacheOpt = False,
    paged: bool = typer.Option(False, "--paged", metavar="", help="Caches as block pools with shuffled block tables (docs/paged.md)."),
    block_size: int = typer.Option(128, "--block-size", help="Rows per block with --paged."),
) -> None:
    """Run one Qwen3 layer on a platform with random inputs and show where the time goes.

    With no options: a small decode (preset tiny, 4 sequences of mixed length) on the default
    platform, checked against the golden."""

    from qwenlayers.core.config import preset
    from qwenlayers.core.tiling import parse_overrides
    from qwenlayers.core.weights import LayerWeights, load_config
    from qwenlayers.errors import InputError

    with _handled(as_json):
        if weights:
            cfg = load_config(weights, name=f"{weights}#layer{layer}")
            w = LayerWeights.from_checkpoint(weights, layer, cfg)
        else:
            cfg = preset(model)
            w = LayerWeights.random(cfg, seed=seed)
        lens = _seq_lens(batch, seq_len, seq_lens, cfg.max_seq)
        overrides = parse_overrides(tile)
        from qwenlayers.inputs import paged as paged_inputs
        from qwenlayers.inputs import random_inputs

        inputs = random_inputs(cfg, phase, lens, seed=seed)
        if paged:
            inputs = paged_inputs(inputs, cfg, phase, block_size, seed=seed)
        if tp != 1:
            if schedule != "fused":
                raise InputError("--tp runs the fused schedule only")
            _run_tp(cfg, w, phase, inputs, tp, platform, overrides, check and not cost_model_only, not cost_model_only,
                    as_json, budgets, allow_nonfinite)
            return
        with err.status(f"{cfg.name} {phase} on {platform or 'the default platform'} …") as status:
            def progress(msg: str) -> None:
                status.update(f"{cfg.name} {phase}: {msg} …")

            from qwenlayers.layer import decode, prefill

            run_layer = decode if phase == "decode" else prefill
            result = run_layer(cfg, w, **inputs, platform=platform, budgets=budgets,
                               plan=overrides, check=check and not cost_model_only, keep=keep, values=not cost_model_only,
                               verify_passes=verify_passes, schedule=schedule, progress=progress, allow_nonfinite=allow_nonfinite,
                               cache=False if no_cache else None)
    rep = result.report
    layout = ({"block": block_size, "num_blocks": int(inputs["k_cache"].shape[0]), "table": list(inputs["block_table"].shape)}
              if paged else None)
    if as_json:
        print(json.dumps({**rep.as_dict(), "paged": layout}, indent=2, default=str))
    else:
        ok = "" if rep.within_tolerance is None else (" [green]PASS[/]" if rep.within_tolerance else " [red]FAIL[/]")
        out.print(_layer_table(f"{phase} on {rep.platform}{ok}", rep))
        if layout:
            out.print(f"caches: paged, {layout['num_blocks']} blocks of {block_size} rows in the pools, block table "
                      f"{layout['table'][0]} x {layout['table'][1]} (shuffled)")
    if rep.within_tolerance is False:
        raise typer.Exit(4)


def _run_tp(cfg: Any, w: Any, phase: str, inputs: dict[str, Any], tp: int, platform: str | None, overrides: dict[str, int],
            check: bool, values: bool, as_json: bool, budgets: str | None = None, allow_nonfinite: bool = False) -> None:
    """``run --tp N``: spawn N ranks here, or be one rank of torchrun's (rank 0 prints)."""
    import os

    from qwenlayers.tensor_parallel import decode_tp, prefill_tp

    launcher = "env" if {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= set(os.environ) else "spawn"
    with err.status(f"{cfg.name} {phase} over {tp} ranks …") as status:
        run_layer = decode_tp if phase == "decode" else prefill_tp
        result = run_layer(cfg, w, **inputs, tp=tp, platform=platform, budgets=budgets,
                           plan=overrides, check=check, values=values, launcher=launcher, progress=lambda m: status.update(m + " …"),
                           allow_nonfinite=allow_nonfinite)
    if result is None:  # a torchrun rank other than 0
        return
    rep = result.report
    if as_json:
        print(json.dumps(rep.as_dict(), indent=2, default=str))
    else:
        ok = "" if rep.within_tolerance is None else (" [green]PASS[/]" if rep.within_tolerance else " [red]FAIL[/]")
        table = Table(title=f"{rep.model} {phase} on {rep.platform}, tp={tp} ({rep.backend}){ok}")
        for col in ("rank", "heads", "inter", "attn µs", "MLP µs", "rank µs", "AIC/AIV", "compile s", "peak GB", "AR wall s"):
            table.add_column(col, justify="right")
        for r in rep.ranks:
            a, m = r.attention, r.mlp
            tasks = "/".join(str(a["tasks"].get(k, 0) + m["tasks"].get(k, 0)) for k in ("AIC", "AIV"))
            table.add_row(str(r.rank), f"q{r.q_heads[0]}-{r.q_heads[1] - 1} kv{r.kv_heads[0]}-{r.kv_heads[1] - 1}",
                          f"{r.inter[0]}-{r.inter[1] - 1}",
                          f"{a['sim_us']:.1f}", f"{m['sim_us']:.1f}", f"{r.sim_us:.1f}", tasks,
                          f"{a['compile_s'] + m['compile_s']:.1f}", f"{max(a['peak_rss_mb'], m['peak_rss_mb']) / 1024:.2f}",
                          f"{r.allreduce_wall_s:.3f}")
        out.print(table)
        c = rep.communication
        out.print(f"slowest rank: {rep.sim_us:.1f} µs simulated (collectives not simulated); "
                  f"{c['allreduces']} all-reduces per layer, {c['payload_bytes']:,} B fp32 payload, "
                  f"{c['ring_bytes_per_rank']:,} B sent per rank in a ring")
        if rep.max_abs_err is not None:
            out.print(f"max |out - golden| {rep.max_abs_err:.4g}, max |cache - golden| {rep.cache_max_abs_err:.4g} "
                      f"({'within' if rep.within_tolerance else 'outside'} atol=rtol=1e-2)")
        for failure in rep.check_failures:
            out.print(f"check failed: {failure}", markup=False, highlight=False)
    if rep.within_tolerance is False:
        raise typer.Exit(4)


def _int_list(text: str, what: str) -> list[int]:
    from qwenlayers.errors import InputError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} {text!r} is not a comma-separated list of ints, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise InputError(f"{what} {text!r} must list positive ints")
    return values


@app.command()
def bench(
    phase: PhaseOpt = "decode",
    model: str = typer.Option("tiny", "--model", "-m", help="Preset name."),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch size(s), e.g. 1,4,16."),
    seq_len: str = typer.Option("64", "--seq-len", help="Sequence length(s), e.g. 128,1024,4096."),
    platform: list[str] = typer.Option([], "--platform", "-p", help="Target(s) (repeatable; default: the default platform)."),
    budgets: list[str] = typer.Option([], "--budgets", help="Budget set(s) (repeatable): default (the plugin's own) and/or "
                                      "pypto-lib; two give both side by side."),
    check: bool = typer.Option(False, "--check", metavar="", help="Checked runs (values + golden) instead of cost-model runs."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", metavar="",
                                  help="Also run the reference-schedule baseline per point and show the ratios."),
    results: str | None = typer.Option(None, "--results", help="Results folder (default: the user data dir)."),
    as_json: JsonOpt = False,
    no_cache: NoCacheOpt = False,
    paged: bool = typer.Option(False, "--paged", metavar="", help="Paged caches (shuffled block tables), next to the contiguous layout."),
    block_size: int = typer.Option(128, "--block-size", help="Rows per block with --paged."),
) -> None:
    """Sweep a layer over sizes and platforms: simulated µs, tasks, pipes, FLOPs, bytes, roofline.

    Appends one JSON record per point to <results>/bench.jsonl, keeps each point's Perfetto
    trace beside it, and writes a PNG of µs and roofline fraction against size."""
    from pathlib import Path

    from qwenlayers.bench import run_bench

    with _handled(as_json):
        batches, lens = _int_list(batch, "--batch"), _int_list(seq_len, "--seq-len")
        with err.status("bench …") as status:
            with warnings.catch_warnings():  # said below the table instead, once per point
                warnings.filterwarnings("ignore", message="bench: the reference-schedule baseline")
                points, plot_path = run_bench(phase, model, batches, lens, platform or [None], check=check, baseline=baseline,
                                              budgets=budgets or [None],
                                              results=Path(results) if results else None, cache=not no_cache,
                                              progress=lambda m: status.update(m + " …"),
                                              paged_block=block_size if paged else 0)
    if as_json:
        print(json.dumps([p.record for p in points], indent=2, default=str))
        return
    table = Table(title=f"bench: {points[0].record['model']} {phase}")
    for col in ("platform", "batch x seq_len", "sim µs", "tasks AIC/AIV/HUB", "cube/vec/MTE_IN %", "GFLOP", "MB moved",
                "roofline µs", "of roofline", "of nominal", "compile s", "peak GB", "reference µs", "speed-up", "task ratio"):
        table.add_column(col, justify="left" if col == "platform" else "right")
    for p in points:
        r = p.record
        pipes = r["pipe_usage_pct"]
        ref = r.get("baseline") or {}
        ref_cells = ((f"{ref['sim_us']:.1f}", f"{ref['speedup']:.2f}x", f"{ref['task_ratio']:.2f}x")
                     if ref.get("speedup") else ("not measured", "-", "-") if ref.get("not_measured") else ("-", "-", "-"))
        table.add_row(p.label, f"{p.batch} x {p.seq_len}", f"{r['sim_us']:.1f}",
                      "/".join(str(r["tasks"].get(k, 0)) for k in ("AIC", "AIV", "HUB")),
                      f"{pipes.get('Cube', 0):g}/{pipes.get('Vector', 0):g}/{pipes.get('MTE_IN', 0):g}",
                      f"{r['flops'] / 1e9:.2f}", f"{r['bytes'] / 1e6:.1f}", f"{r['roofline_us']:.2f} ({r['roofline_bound']})",
                      f"{100 * (r['roofline_fraction'] or 0):.2f} %", f"{100 * (r['nominal_roofline_fraction'] or 0):.2f} %",
                      f"{r['compile_s']:.1f}", f"{r['peak_rss_mb'] / 1024:.1f}", *ref_cells)
    out.print(table)
    for p in points:
        layout = p.record.get("paged")
        if layout:
            out.print(f"paged ({layout['block']}-row blocks, shuffled tables) at {p.batch} x {p.seq_len} on {p.label}: "
                      f"{layout['paged_sim_us']:.1f} µs; contiguous at the same plan {layout['contiguous_sim_us']:.1f} µs "
                      f"(paged / contiguous {layout['ratio']:.3f})")
    out.print(f"history: {plot_path.parent / 'bench.jsonl'}")
    out.print(f"plot: {plot_path}")
    out.print(f"Perfetto traces (open in ui.perfetto.dev): {', '.join(str(p.record['trace']) for p in points)}")
    out.print(f"roofline: {points[0].record['roofline_source']}")
    for p in points:
        missing = (p.record.get("baseline") or {}).get("not_measured")
        if missing:
            err.print(f"warning: reference-schedule baseline not measured at {p.batch} x {p.seq_len} on {p.label}: {missing}",
                      markup=False, highlight=False, soft_wrap=True)


@app.command()
def tune(
    phase: PhaseOpt = "decode",
    model: str = typer.Option("tiny", "--model", "-m", help="Preset name."),
    platform: PlatformOpt = None,
    batch: int = typer.Option(1, "--batch", "-b", help="Batch of the shape class to tune for."),
    seq_len: int = typer.Option(64, "--seq-len", help="Sequence length of the shape class to tune for."),
    time_limit: float = typer.Option(300.0, "--time-limit", help="Seconds to search."),
    field: list[str] = typer.Option([], "--field", help="Only tune these plan fields (repeatable), e.g. --field SEQ_TILE."),
    budgets: BudgetsOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Search the tiling plans the platform budgets allow, with the cost model, and cache the
    fastest as the default for (platform, model, phase, shape class)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from qwenlayers.tuning import tune as run_tune

    with _handled():
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task(f"tuning {model} {phase} (limit {time_limit:.0f} s) …", total=None)
            result = run_tune(phase, model, platform, batch=batch, seq_len=seq_len, time_limit_s=time_limit,
                              fields=[f.lower() for f in field] or None, budgets=budgets, cache=not no_cache,
                              progress=lambda msg, n: bar.update(task, description=f"tuning {model} {phase}: {msg}"))
    table = Table(title=f"tuned {result.key}: {result.default_us:.1f} µs -> {result.best_us:.1f} µs "
                        f"({result.default_us / result.best_us:.2f}x), {len(result.tried)} plans tried")
    table.add_column("key")
    table.add_column("value", overflow="fold")  # left: a long plan row would push every value far right
    table.add_column("from")
    for name in result.best.values():
        table.add_row(name.upper(), str(getattr(result.best, name)), result.best.origin_of(name))
    out.print(table)
    tried = Table(title="plans tried (the fields that differ from the plugin's plan)")
    tried.add_column("#", justify="right")
    tried.add_column("plan")
    tried.add_column("simulated", justify="right")
    tried.add_column("tasks AIC / AIV / HUB")
    base = result.tried[0]["values"] if result.tried else {}
    for n, t in enumerate(result.tried, 1):
        diff = ", ".join(f"{k.upper()}={v}" for k, v in t["values"].items() if v != base.get(k)) or "the plugin's plan"
        tasks = t.get("tasks") or {}
        tried.add_row(str(n), diff, f"{t['sim_us']:.1f} µs" + (" (cache)" if t.get("from_cache") else "")
                      if t["sim_us"] is not None else f"failed: {t['failed']}",
                      " / ".join(str(tasks.get(k, "-")) for k in ("AIC", "AIV", "HUB")) if tasks else "-")
    out.print(tried)
    out.print(f"cached in {result.stored}; `qwenlayers plan --batch {batch} --seq-len {seq_len}` shows it")


def _token_ids(text: str) -> list[int]:
    """One --prompt-ids value: comma-separated token ids (0 is a token; the range is checked
    against the checkpoint's vocabulary later)."""
    from qwenlayers.errors import InputError

    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--prompt-ids {text!r} is not a comma-separated list of token ids, e.g. --prompt-ids 1,2,3") from None
    if not ids:
        raise InputError("--prompt-ids is empty; give each prompt's token ids, e.g. --prompt-ids 1,2,3")
    return ids


@app.command()
def generate(
    weights: str = typer.Option(..., "--weights", help="Hugging Face Qwen3 checkpoint folder (config.json + safetensors)."),
    prompt_ids: list[str] = typer.Option(..., "--prompt-ids", help="One prompt's token ids, e.g. 1,2,3 (repeat for a batch)."),
    steps: int = typer.Option(4, "--steps", help="Greedy decode steps after the prefill (each adds one token per prompt)."),
    platform: PlatformOpt = None,
    budgets: BudgetsOpt = None,
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel ranks for every layer, as `run --tp`."),
    check: bool = typer.Option(False, "--check", metavar="",
                               help="Also run golden chains in fp32 and bf16 (and transformers, when installed): tokens and drift."),
    max_seq: int | None = typer.Option(None, "--max-seq", help="Cache rows per sequence (default: longest prompt + steps, rounded up to 64)."),
    results: str | None = typer.Option(None, "--results", help="Folder for the JSON record and the drift plot (default: the user data dir)."),
    as_json: JsonOpt = False,
) -> None:
    """Run a whole Qwen3 checkpoint: every layer's prefill on the platform, then greedy decode
    steps through every layer; embeddings, final norm and lm_head on the host.

    Prints the tokens, the simulated time of every pass and, with --check, each chain's greedy
    tokens and the drift of every layer against fp32; writes <results>/generate-*.json and, with
    --check, the drift plot beside it. Exit 4 when a checked run is outside the bar."""
    from pathlib import Path

    from qwenlayers.generate_tables import agreement_table, drift_table, timing_table, tokens_table
    from qwenlayers.model import generate as run_generate
    from qwenlayers.model.generation import drift_bar_text
    from qwenlayers.model.records import results_folder, write_generation

    with _handled(as_json):
        prompts = [_token_ids(p) for p in prompt_ids]
        folder = results_folder(Path(results) if results else None)  # before the run: its record must have a home
        with err.status("generate …") as status:
            gen = run_generate(weights, prompts, steps=steps, platform=platform, budgets=budgets, tp=tp, check=check,
                               max_seq=max_seq, progress=lambda m: status.update(f"generate: {m} …"))
        record, plot = write_generation(gen, folder)
    if as_json:
        print(json.dumps({**gen.as_dict(), "record": str(record), "plot": str(plot) if plot else None}, indent=2, default=str))
    else:
        out.print(tokens_table(gen))
        out.print(timing_table(gen))
        if gen.checked:
            out.print(agreement_table(gen))
            out.print(drift_table(gen))
            verdict = "[green]PASS[/]" if gen.ok else "[red]FAIL[/]"
            out.print(f"check: {verdict}: every layer within {drift_bar_text()}; greedy tokens equal to the fp32 chain's"
                      + (" and transformers'" if gen.transformers_version else f" ({escape(gen.transformers_note or '')})")
                      + ", except where the reference's own logits for the two tokens are within bf16 noise")
            excused = [(t.step, b) for t in gen.token_checks for b in t.excused()]
            if excused:
                out.print("  excused (within noise): " + ", ".join(f"step {s} sequence {b}" for s, b in excused))
            for failure in gen.failures():
                out.print(f"  [red]{escape(failure)}[/]")
        out.print(f"record: {record}")
        if plot:
            out.print(f"drift plot: {plot}")
    if gen.ok is False:
        raise typer.Exit(4)


def main() -> None:
    """The console entry point: every QwenlayersError a command did not catch itself is one
    message and its class's exit code (2 input, 3 platform, 4 kernel), never a traceback."""
    warnings.showwarning = _show_warning
    try:
        app()
    except QwenlayersError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
