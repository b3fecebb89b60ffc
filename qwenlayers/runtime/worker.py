"""Parent side of the runtime: start a worker for one platform, pass tensors, collect results.

The caller's tensors go to the worker as data (runtime/exchange.py) and are never handed to pypto directly, so a
crash, a pypto bug or a verification path that writes zeros cannot touch them. Outputs come
back as new tensors; the API copies the documented ones (outputs, cache rows) into place.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qwenlayers.errors import KernelError
from qwenlayers.runtime import result_cache
from qwenlayers.runtime.chunking import DEFAULT_MEM_LIMIT_FRACTION, GIB, MEM_LIMIT_ENV, memory_limit_bytes
from qwenlayers.runtime.exchange import message_exists, read_message, write_message
from qwenlayers.runtime.job_types import Job
from qwenlayers.runtime.paths import cache_dir
from qwenlayers.runtime.pypto_target import check_target
from qwenlayers.runtime.pyptoenv import layered_env
from qwenlayers.runtime.sim import STATUS_ENV
from qwenlayers.target import Target

LOG_TAIL_LINES = 40


@dataclass
class WorkerResult:
    outputs: dict[str, torch.Tensor]
    report: dict[str, Any]
    wall_s: float
    kept_dir: Path | None = None
    workarounds: list[str] = field(default_factory=list)  # switches the worker and runtime acted on


def worker_env(target: Target, run_dir: Path) -> dict[str, str]:
    """The worker's environment: ours (output folders inside the run dir) plus the plugins'."""
    env = dict(os.environ)
    env.update(
        TILE_FWK_OUTPUT_DIR=str(run_dir / "pypto_out"),
        ASCEND_PROCESS_LOG_PATH=str(run_dir / "plog"),
        PYPTO_HOME=str(run_dir / "pypto_home"),
        QWENLAYERS_CACHE_DIR=str(cache_dir()),
        PYTHONUNBUFFERED="1",
        **{STATUS_ENV: str(run_dir / "status")},  # where the worker names its phase
    )
    return layered_env(env, target.runtime_env)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


#: signals that end a run the way Ctrl-C does: the worker is stopped, its folder removed
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_on_termination() -> Iterator[None]:
    """While a worker runs, SIGTERM and SIGHUP raise SystemExit (exit code 128 + signal) in the
    parent instead of killing it outright, so the cleanup in :func:`run_job` runs; without this
    the worker, in its own session, would be left running, reparented to init. Only the main
    thread can set handlers; elsewhere the handlers stay as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, _raise_exit) for sig in TERMINATING}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


POLL_S = 0.5


class WorkerOverMemory(Exception):
    def __init__(self, rss: int, limit: int) -> None:
        super().__init__(rss, limit)
        self.rss, self.limit = rss, limit


def group_rss_bytes(pgid: int) -> int:
    """Resident bytes of every process in process group ``pgid`` (the worker and its children)."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                with open(f"/proc/{entry.name}/statm") as fh:
                    total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def _relay(status: Path | None, progress: Callable[[str], None] | None, started: float, seen: int) -> int:
    """Pass on every phase the worker named since the last call (each once, in order), or the
    current one again with the elapsed time; returns how many phases were seen so far."""
    if progress is None or status is None:
        return seen
    try:
        phases = status.read_text().splitlines()
    except OSError:
        phases = []
    elapsed = f"{time.monotonic() - started:.0f} s"
    for phase in phases[seen:] or phases[-1:] or ["starting (importing pypto)"]:
        progress(f"{phase}, {elapsed}")
    return max(seen, len(phases))


def _wait(proc: subprocess.Popen[bytes], timeout: float | None, limit: int, status: Path | None = None,
          progress: Callable[[str], None] | None = None) -> None:
    """Wait for the worker, watching its group's resident size, and pass on the phase it names
    in ``status`` (compiling, simulating, the one-time calculator build) with its elapsed time."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    seen = 0
    while proc.poll() is None:
        seen = _relay(status, progress, started, seen)
        rss = group_rss_bytes(proc.pid)
        if rss > limit:
            raise WorkerOverMemory(rss, limit)
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0)
        try:
            proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            pass
    _relay(status, progress, started, seen)  # the phases of its last half second


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Stop a worker and everything it started (its process group): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            if sig == signal.SIGTERM:  # the leader is gone; its group may not be
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def run_job(
    target: Target,
    job: Job,
    *,
    verify_passes: bool = False,
    values: bool = True,
    timed: bool = True,
    keep: bool = False,
    timeout: float | None = None,
    on_start: Callable[[Path], None] | None = None,
    progress: Callable[[str], None] | None = None,
    cache: bool | None = None,
) -> WorkerResult:
    """Run ``job`` on ``target`` (resolved and probed once by :func:`~qwenlayers.target.resolve_target`)
    in a fresh worker process and return its outputs and report.

    ``values=False`` runs the cost model only (no output values, nothing captured: cheap at any
    size). ``timed=False`` with values runs no cost model: on a sim the compile stops at the
    tensor graph, whose interpreter gives the values (``report["values_only"]``, no timing), for
    callers that take the timing from a cost-model run of the same program instead. ``keep`` keeps the run folder (pypto's output, the Perfetto trace, logs); otherwise it is
    deleted, since one big run leaves ~1.3 GB of traces. ``progress`` is told the worker's phase
    and elapsed time about twice a second.

    A cost-model run answers from the result cache when the same program ran before
    (:mod:`qwenlayers.runtime.result_cache`; ``report["from_cache"]``, no run folder); ``cache``
    None uses it unless the run folder is asked for (``keep``), False never, True also with
    ``keep`` (the caller then does without a new trace). Every cost-model run is stored.
    """
    platform = target.platform
    key = result_cache.job_key(target, job, verify_passes) if not values and not result_cache.disabled() else None
    if key and (cache if cache is not None else not keep):
        start = time.perf_counter()
        hit = result_cache.lookup(key)
        if hit is not None:
            if progress is not None:
                progress("answered from the cost-model result cache")
            return WorkerResult(hit[0], hit[1], time.perf_counter() - start, None, list(target.switches))
    run_dir = Path(tempfile.mkdtemp(prefix=f"{platform.name}-{job.kind}-", dir=cache_dir("runs")))
    job_path, result_path, log_path = run_dir / "job", run_dir / "result", run_dir / "worker.log"
    payload = {
        "job": job.kind,
        "inputs": job.fields(),
        "run_mode": platform.run_mode,  # all the worker needs of the descriptor: its env made the rest
        "log_path": str(log_path),
        "verify_passes": verify_passes,
        "values": values,
        "timed": timed,
        "workarounds": list(target.switches),
    }
    write_message(job_path, payload)
    env = worker_env(target, run_dir)
    cmd = [sys.executable, "-m", "qwenlayers.runtime.worker_main", str(job_path), str(result_path)]
    if on_start:
        on_start(run_dir)
    start = time.perf_counter()
    with open(log_path, "ab") as log:
        # its own session: a Ctrl-C at the terminal reaches the parent only, which then stops the
        # worker's whole process group (pypto's build subprocesses included), see _stop
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with exit_on_termination():
                _wait(proc, timeout, memory_limit_bytes(), run_dir / "status", progress)
        except WorkerOverMemory as over:
            _stop(proc)
            raise KernelError(
                f"pypto worker for {job.kind} on {platform.name} was stopped at {over.rss / GIB:.1f} GB resident: the limit is "
                f"{over.limit / GIB:.1f} GB ({MEM_LIMIT_ENV}, default {DEFAULT_MEM_LIMIT_FRACTION:.0%} of this machine's memory), "
                f"set so one run cannot take the machine down. A smaller batch or shorter sequences need less; a "
                f"checked run is split by QWENLAYERS_WORKER_MEM_GB. Run folder kept: {run_dir}"
            ) from None
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise KernelError(
                f"pypto worker for {job.kind} on {platform.name} did not finish within {timeout:.0f} s; "
                f"last {LOG_TAIL_LINES} log lines:\n{_tail(log_path)}\nrun folder kept: {run_dir}"
            ) from None
        except BaseException:  # KeyboardInterrupt, SystemExit from a signal handler: no worker left behind
            _stop(proc)
            if keep:
                sys.stderr.write(f"qwenlayers: interrupted; worker stopped, run folder kept: {run_dir}\n")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    wall = time.perf_counter() - start
    result = read_message(result_path) if message_exists(result_path) else None
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
            f"pypto worker for {job.kind} on platform {platform.name} {how}.\n"
            f"{detail}\n--- last lines of {log_path} ---\n{_tail(log_path)}\n"
            f"repro: {plugin_env} {repro}\n(run folder kept: {run_dir})"
        )
    report = result["report"]
    check_target(platform, report)
    if key:  # a fresh run (--no-cache too) refreshes the entry
        result_cache.store(key, result["outputs"], report)
        report["cache_key"] = key
    if keep:
        kept: Path | None = run_dir
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        kept = None
        report["run_dir"] = None
        report["trace"] = None
    return WorkerResult(result["outputs"], report, wall, kept, list(target.switches))
