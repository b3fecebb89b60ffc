"""Worker-side helpers for pypto's SIM mode on a CPU-only machine (the parent imports only the
name of the status file, :data:`STATUS_ENV`; nothing here imports pypto at module level).

* :func:`install_real_input_verify` replaces ``JitCallableWrapper._setup_verify_data``: upstream
  registers device copies that, without a device, are zeros, so the tensor-graph interpreter
  computes on zeros and the copy-back *overwrites the caller's inputs with zeros*. Registering the
  real host tensors makes the interpreter fill the output arguments in place.
* :func:`load_calculator` builds pypto's libtorch "calculator" once into the qwenlayers cache and
  loads it (upstream rebuilds it with cmake in a temp dir in every process, ~30 s).
* :func:`run_to_tensor_graph` runs a kernel for its values only: the compile stops at the tensor
  graph, whose interpreter is where a SIM run's values come from anyway, and the interpreted
  output arguments are read back from its dumps (workaround pypto-sim-tensor-graph-values).
* :func:`sim_report` reads the cost-model files of one run.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import glob
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qwenlayers.runtime.paths import cache_dir, file_lock

PHASE_TIMES: dict[str, float] = {}

#: The file the worker names its current phase in, for the parent to show (runtime/worker.py).
STATUS_ENV = "QWENLAYERS_WORKER_STATUS"


def say_status(text: str) -> None:
    """Name the worker's next phase (compiling, simulating, the one-time calculator build): one
    line appended in one write, so the parent sees every phase, however short, in order."""
    path = os.environ.get(STATUS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (text.replace("\n", " ") + "\n").encode())
        finally:
            os.close(fd)


def calculator_dir() -> Path:
    import torch

    from qwenlayers.runtime.pyptoenv import pypto_version

    return cache_dir("calculator", f"pypto-{pypto_version()}-torch-{torch.__version__}")


def load_calculator() -> None:
    from pypto._utils import BuildOnlineManager

    mgr = BuildOnlineManager()
    if mgr.calculator_loaded:
        return
    root = calculator_dir()
    so = root / "install" / "lib" / "libtile_fwk_calculator.so"
    with file_lock(root.parent / f".{root.name}.lock"):
        if not so.exists():
            tc, cc = mgr._TorchContext(), mgr._CMakeContext()
            ctx = cc.CompileContext(src_dir=Path(mgr.pkg_lib_dir, "calculator"), tmp_dir=root)
            ctx.build_job_num = max(1, min(4, os.cpu_count() or 1))
            ctx.cfg_cmd_ext = (
                f"-DPY3_MOD_TORCH_VERSION={tc.torch_version} -DPY3_MOD_TORCH_ROOT_PATH={tc.torch_root_dir}"
                f" -DPY3_MOD_TORCH_C_GLIBCXX_USE_CXX11_ABI={tc.torch_c_use_cxx11_abi}"
            )
            print(f"[qwenlayers] building pypto's calculator once into {root} (about 30 s)", file=sys.stderr, flush=True)
            say_status("building pypto's CPU calculator (once per machine, about 30-70 s)")
            start = time.perf_counter()
            cc.compile(ctx)
            PHASE_TIMES["calculator_build_s"] = time.perf_counter() - start
    ctypes.CDLL(str(so), mode=ctypes.RTLD_GLOBAL)
    mgr.calculator_loaded = True


def _setup_verify_real_inputs(pto_tensors: Any) -> None:
    import pypto
    from pypto import pypto_impl
    from pypto.runtime import _pto_to_tensor_data, _pto_verify_datas

    if not pypto.get_verify_options().get("enable_pass_verify"):
        return
    load_calculator()
    pypto_impl.SetVerifyData(_pto_to_tensor_data(pto_tensors), [], _pto_verify_datas.get_data())


def _timed(name: str, status: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        say_status(status)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASE_TIMES[name] = PHASE_TIMES.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def install_real_input_verify() -> None:
    """Patch pypto so SIM runs compute real outputs in place (workaround pypto-sim-verify-real-inputs)."""
    from pypto.frontend.parser import entry

    entry.JitCallableWrapper._setup_verify_data = staticmethod(_setup_verify_real_inputs)


def install_phase_timers() -> None:
    """Time pypto's compile (parse, passes, interpretation) and simulate (cost model) phases."""
    from pypto.frontend.parser import entry

    wrapper = entry.JitCallableWrapper
    if getattr(wrapper, "_qwenlayers_timed", False):
        return
    wrapper.compile = _timed("compile_s", "compiling (pypto passes)", wrapper.compile)
    wrapper._run_with_cpu = _timed("simulate_s", "simulating (cost model, tensor-graph values)", wrapper._run_with_cpu)
    wrapper._qwenlayers_timed = True


def last_run_dir() -> Path:
    from pypto import pypto_impl

    return Path(pypto_impl.LogTopFolder())


@contextlib.contextmanager
def quiet(log_path: Path) -> Iterator[None]:
    """Send fd 1/2 (C++ printf, helper scripts) to a log file for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            ctypes.CDLL(None).fflush(None)
        except OSError:
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _dumped(run: Path, index: int) -> Path:
    """The interpreter's dump of argument ``index`` (``verify_*/tensor_graph/<name>~<index>~<us>.data``;
    its golden twin has ``~golden~`` in the name)."""
    pattern = re.compile(rf"~{index}~(\d+)\.data$")
    found = sorted((int(m.group(1)), p) for p in glob.glob(str(run / "verify_*" / "tensor_graph" / "*.data"))
                   if (m := pattern.search(p)))
    if not found:
        raise RuntimeError(f"pypto's tensor-graph interpreter left no dump of argument {index} under {run}/verify_*/tensor_graph "
                           "(workaround pypto-sim-tensor-graph-values: its file layout may have changed)")
    return Path(found[-1][1])


def run_to_tensor_graph(kernel: Any, args: Sequence[Any], returns: Sequence[Any], log_path: Path) -> None:
    """Run ``kernel(*args)`` for its values only and copy the interpreter's results into the
    ``returns`` arguments (given by identity). The kernel must be built with
    ``host_options={"compile_stage": TENSOR_GRAPH}`` and pass verification on: pypto then records
    and interprets the tensor graph and stops, no passes, no codegen, no cost model. A golden is
    registered for each wanted argument only so that the interpreter dumps it; it is the
    argument's own value before the run, and the verdict against it means nothing."""
    import numpy as np
    import pypto
    import torch

    wanted = [i for i, a in enumerate(args) if any(a is r for r in returns)]
    if len(wanted) != len(returns):
        raise ValueError("every tensor to return must be one of the kernel's arguments")
    pypto.set_verify_golden_data(goldens=[a if i in wanted else None for i, a in enumerate(args)])
    with quiet(log_path):
        kernel(*args)
    run = last_run_dir()
    for i in wanted:
        arg = args[i]
        path = _dumped(run, i)
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size != arg.numel() * arg.element_size():
            raise RuntimeError(f"pypto's dump {path} holds {raw.size} bytes; argument {i} {tuple(arg.shape)} {arg.dtype} "
                               f"needs {arg.numel() * arg.element_size()} (workaround pypto-sim-tensor-graph-values)")
        arg.copy_(torch.from_numpy(raw).view(arg.dtype).reshape(arg.shape))


def verify_verdicts(run: Path) -> dict[str, Any]:
    """Per-pass verification rows of one run, and any interpreter exception text."""
    ctypes.CDLL(None).fflush(None)  # the CSV is stdio-buffered until exit
    rows: list[dict[str, str]] = []
    for f in glob.glob(str(run / "verify_*" / "verify_result_brief.csv")):
        with open(f) as fh:
            rows.extend(csv.DictReader(fh))
    summary: dict[str, dict[str, int]] = {}
    for r in rows:
        entry = summary.setdefault(r.get("passName", "?"), {"PASS": 0, "FAILED": 0})
        verdict = r.get("verifyResult", "?")
        entry[verdict] = entry.get(verdict, 0) + 1
    exceptions = []
    for f in glob.glob(str(run / "verify_*" / "verify_exception.log")):
        # the file also logs every verdict; keep only the lines that report a failure
        lines = [
            ln for ln in Path(f).read_text(errors="replace").splitlines()
            if ("Errcode" in ln or "xception" in ln or "FAILED" in ln or "ERROR" in ln) and "result PASS" not in ln
        ]
        exceptions.extend(lines[-20:])
    return {"passes": summary, "exceptions": exceptions}


def _num(text: str, label: str) -> float | None:
    m = re.search(re.escape(label) + r"\.*:\s+([\d.]+)", text)
    return float(m.group(1)) if m else None


def sim_report(run: Path) -> dict[str, Any]:
    """Cost-model figures of one run: µs at pypto's assumed 1.8 GHz, cycles, tasks, pipe usage."""
    d = run / "CostModelSimulationOutput"
    report: dict[str, Any] = {"run_dir": str(run)}
    swim_path = d / "_simulate.swim.json"
    if not swim_path.exists():
        return report
    swim = json.loads(swim_path.read_text())
    lanes = [c for c in swim if c.get("coreType") in ("AIC", "AIV")]
    tasks = [(c["coreType"], t) for c in lanes for t in c["tasks"]]
    hub = sum(len(c["tasks"]) for c in swim if c.get("coreType") == "HUB")
    report.update(
        lanes={"AIC": sum(c["coreType"] == "AIC" for c in lanes), "AIV": sum(c["coreType"] == "AIV" for c in lanes)},
        tasks={"AIC": sum(k == "AIC" for k, _ in tasks), "AIV": sum(k == "AIV" for k, _ in tasks), "HUB": hub},
    )
    if tasks:
        start = min(t["execStart"] for _, t in tasks)
        end = max(t["execEnd"] for _, t in tasks)
        busy = sum(t["execEnd"] - t["execStart"] for _, t in tasks)
        span = max(end - start, 1)
        report.update(aicore_cycles=end - start, sim_us=(end - start) / 1800.0, aicore_util=busy / (len(lanes) * span))
    stat = d / "_simulate.stat.report.txt"
    if stat.exists():
        text = stat.read_text()
        report["total_cycles"] = _num(text, "Total Cycles")
        report["submit_tasks"] = _num(text, "Total Submit Tasks")
        report["resolve_times"] = _num(text, "Total Resolve Times")
        pipes = {}
        for pipe in ("Cube", "Vector", "MTE_IN", "MTE1", "MTE_OUT"):
            m = re.search(rf"Average {pipe} Usage\.*:\s+([\d.]+)\s+([\d.]+)%", text)
            if m:
                pipes[pipe] = float(m.group(2))
        report["pipe_usage_pct"] = pipes
    cfg = d / "_simulate.config.ini"
    if cfg.exists():
        m = re.search(r"deviceArch\s*=\s*(\S+)", cfg.read_text())
        report["cost_model_arch"] = m.group(1) if m else None
    trace = d / "_simulate.pefetto.trace.json"
    report["trace"] = str(trace) if trace.exists() else None
    return report
