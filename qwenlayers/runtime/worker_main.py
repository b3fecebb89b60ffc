"""Entry of the worker process: ``python -m qwenlayers.runtime.worker_main JOB RESULT``.

Runs with the environment the platform plugin prepared; this is the only place pypto is
imported. JOB and RESULT are message stems (runtime/exchange.py: JSON + safetensors, data only);
the result (or the error with its traceback) goes to RESULT.
"""

from __future__ import annotations

import resource
import sys
import time
import traceback
from pathlib import Path

from qwenlayers.runtime.exchange import read_message, write_message


def main(job_path: str, result_path: str) -> int:
    started = time.perf_counter()
    try:
        payload = read_message(Path(job_path))
        import pypto

        from qwenlayers.runtime import sim
        from qwenlayers.runtime.job_types import job_from_message
        from qwenlayers.runtime.jobs import JOBS, JobContext
        from qwenlayers.runtime.pypto_workarounds import SIM_TENSOR_GRAPH_VALUES, SIM_VERIFY_REAL_INPUTS

        sim.install_phase_timers()
        if SIM_VERIFY_REAL_INPUTS.key in payload.get("workarounds", ()):
            sim.install_real_input_verify()
        ctx = JobContext(payload["run_mode"], Path(payload["log_path"]), payload.get("verify_passes", False),
                         payload.get("values", True), payload.get("timed", True),
                         SIM_TENSOR_GRAPH_VALUES.key in payload.get("workarounds", ()))
        job = job_from_message(payload["job"], payload["inputs"])
        outputs = JOBS[job.kind](ctx, job)
        run = sim.last_run_dir()
        report = sim.sim_report(run) if payload["run_mode"] == "sim" else {}
        # a values-only run registered placeholder goldens only to get the interpreter's dumps: no verdict to report
        report["verification"] = {"passes": {}, "exceptions": []} if ctx.values_only else sim.verify_verdicts(run)
        report["values_only"] = ctx.values_only
        report["npuarch"] = str(pypto.platform.npuarch).split(".")[-1]
        report.update({k: round(v, 3) for k, v in sim.PHASE_TIMES.items()})
        report["worker_s"] = round(time.perf_counter() - started, 3)
        report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        write_message(Path(result_path), {"outputs": outputs, "report": report})
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        write_message(Path(result_path), {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
