"""Parent side of the runtime: start a worker for one platform, pass tensors, collect results.

The caller's tensors are pickled to the worker and never handed to pypto directly, so a
crash, a pypto bug or a verification path that writes zeros cannot touch them. Outputs come
back as new tensors; the API copies the documented ones (outputs, cache rows) into place.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qwenlayers.core.platform import Platform
from qwenlayers.errors import KernelError, PlatformUnavailableError
from qwenlayers.runtime.paths import cache_dir
from qwenlayers.runtime.pyptoenv import pypto_version

LOG_TAIL_LINES = 40


@dataclass
class WorkerResult:
    outputs: dict[str, torch.Tensor]
    report: dict[str, Any]
    wall_s: float
    kept_dir: Path | None = None
    workarounds: list[str] = field(default_factory=list)  # keys the worker honoured


def platform_workdir(platform: Platform) -> Path:
    """Persistent per-platform folder the plugin prepares its runtime in (per pypto version)."""
    return cache_dir("platforms", platform.name, f"pypto-{pypto_version() or 'none'}")


def worker_env(platform: Platform, run_dir: Path, registry: Any) -> dict[str, str]:
    """The worker's environment: ours (output folders inside the run dir) plus the plugin's."""
    env = dict(os.environ)
    env.update(
        TILE_FWK_OUTPUT_DIR=str(run_dir / "pypto_out"),
        ASCEND_PROCESS_LOG_PATH=str(run_dir / "plog"),
        PYPTO_HOME=str(run_dir / "pypto_home"),
        QWENLAYERS_CACHE_DIR=str(cache_dir()),
        PYTHONUNBUFFERED="1",
    )
    extra = registry.prepare_runtime(platform, platform_workdir(platform))
    for key, value in extra.items():
        if key == "PYTHONPATH" and env.get("PYTHONPATH"):
            value = value + os.pathsep + env["PYTHONPATH"]
        env[key] = value
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_job(
    platform: Platform,
    job: str,
    inputs: dict[str, Any],
    *,
    registry: Any = None,
    verify_passes: bool = False,
    values: bool = True,
    keep: bool = False,
    timeout: float | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> WorkerResult:
    """Run ``job`` on ``platform`` in a fresh worker process and return its outputs and report.

    ``values=False`` runs the cost model only (no output values, nothing captured: cheap at any
    size). ``keep`` keeps the run folder (pypto's output, the Perfetto trace, logs); otherwise it is
    deleted, since one big run leaves ~1.3 GB of traces.
    """
    if registry is None:
        from qwenlayers.registry import get_registry

        registry = get_registry()
    availability = platform.available()
    if not availability.ok:
        raise PlatformUnavailableError(f"platform {platform.name} cannot run here: {availability.reason}")
    run_dir = Path(tempfile.mkdtemp(prefix=f"{platform.name}-{job}-", dir=cache_dir("runs")))
    job_path, result_path, log_path = run_dir / "job.pt", run_dir / "result.pt", run_dir / "worker.log"
    workarounds = registry.workarounds(platform).keys()
    payload = {
        "job": job,
        "inputs": inputs,
        "platform": {"name": platform.name, "arch": platform.arch, "run_mode": platform.run_mode, "sim_arch": platform.sim_arch},
        "log_path": str(log_path),
        "verify_passes": verify_passes,
        "values": values,
        "workarounds": workarounds,
    }
    torch.save(payload, job_path)
    env = worker_env(platform, run_dir, registry)
    cmd = [sys.executable, "-m", "qwenlayers.runtime.worker_main", str(job_path), str(result_path)]
    if on_start:
        on_start(run_dir)
    start = time.perf_counter()
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise KernelError(
            f"pypto worker for {job} on {platform.name} did not finish within {timeout:.0f} s; "
            f"last {LOG_TAIL_LINES} log lines:\n{_tail(log_path)}\nrun folder kept: {run_dir}"
        ) from None
    wall = time.perf_counter() - start
    result = torch.load(result_path, weights_only=False) if result_path.exists() else None
    if proc.returncode != 0 or result is None or "error" in result:
        if proc.returncode < 0:
            how = f"was killed by {signal.Signals(-proc.returncode).name}"
            if proc.returncode == -signal.SIGKILL:
                how += " (often the kernel OOM killer: check `dmesg`)"
        else:
            how = f"exited with code {proc.returncode}"
        detail = result["traceback"].rstrip() if result and "traceback" in result else _tail(log_path)
        repro = " ".join(shlex.quote(c) for c in cmd)
        plugin_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k not in os.environ or os.environ[k] != v)
        raise KernelError(
            f"pypto worker for {job} on platform {platform.name} {how}.\n"
            f"{detail}\n--- last lines of {log_path} ---\n{_tail(log_path)}\n"
            f"repro: {plugin_env} {repro}\n(run folder kept: {run_dir})"
        )
    report = result["report"]
    if keep:
        kept: Path | None = run_dir
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        kept = None
        report["run_dir"] = None
        report["trace"] = None
    return WorkerResult(result["outputs"], report, wall, kept, workarounds)
