"""Jobs the worker can run, by name. Each takes host tensors, builds a core kernel for the
worker's platform, runs it, and returns the output tensors; the worker adds the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

JobFn = Callable[["JobContext", dict[str, Any]], dict[str, torch.Tensor]]
JOBS: dict[str, JobFn] = {}


@dataclass
class JobContext:
    """What a job knows about where it runs (built by the worker from the job file)."""

    platform: dict[str, Any]  # name, arch, run_mode, ... of the selected Platform
    log_path: Path
    verify_passes: bool  # run the default lowered-pass verification, not only the tensor graph

    def jit_options(self) -> dict[str, Any]:
        import pypto

        mode = pypto.RunMode.SIM if self.platform["run_mode"] == "sim" else pypto.RunMode.NPU
        opts: dict[str, Any] = {"runtime_options": {"run_mode": mode}}
        if mode == pypto.RunMode.SIM:
            verify: dict[str, Any] = {"enable_pass_verify": True, "pass_verify_error_tol": [1e-2, 1e-2]}
            if not self.verify_passes:
                verify["pass_verify_pass_filter"] = []  # tensor graph only: fills outputs, cheap
            opts["verify_options"] = verify
        return opts


def job(name: str) -> Callable[[JobFn], JobFn]:
    def register(fn: JobFn) -> JobFn:
        JOBS[name] = fn
        return fn

    return register


@job("rmsnorm")
def rmsnorm_job(ctx: JobContext, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    from qwenlayers.core.kernels.rmsnorm import build_rmsnorm
    from qwenlayers.runtime import sim

    x, g = inputs["x"], inputs["g"]
    tokens, hidden = x.shape
    kernel = build_rmsnorm(tokens, hidden, inputs["eps"], vec_tile=inputs["vec_tile"], jit_options=ctx.jit_options())
    out = torch.zeros_like(x)
    with sim.quiet(ctx.log_path):
        kernel(x, g.reshape(1, hidden), out)
    return {"out": out}
