"""Cost-model results, kept so that an identical program is never simulated twice.

A cost-model run (``values=False``) depends on the program and the target, not on the numbers
in its tensors. Its report is stored under a key made of everything that changes the program:
the job kind and every field (tensors by shape and dtype, the config, the plan's values), the
platform descriptor (budgets and pypto ini included), the workaround switches, the pypto and
torch versions, and a fingerprint of the qwenlayers sources that build and run programs. An
identical run then answers from the cache in well under a second, and says so
(``report["from_cache"]``). pypto 0.2.0 cannot load a compiled program in another process, so
the compile itself is not reusable: what is kept is its result.

Tensor outputs of a cost-model run are meaningless (nothing was interpreted), so only their
shapes are kept; JSON outputs (the calibration's and the stage sweep's figures) are kept whole.
``QWENLAYERS_NO_CACHE=1`` or ``cache=False`` forces a fresh run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.errors import KernelError
from qwenlayers.runtime.exchange import message_exists, read_message, write_message
from qwenlayers.runtime.job_types import Job
from qwenlayers.runtime.paths import CacheWarning, cache_dir, file_lock
from qwenlayers.runtime.pyptoenv import pypto_version
from qwenlayers.target import Target

NO_CACHE_ENV = "QWENLAYERS_NO_CACHE"
PACKAGE = Path(__file__).resolve().parents[1]
#: the sources whose change changes a program or its report
PROGRAM_SOURCES = ("core", "runtime/jobs.py", "runtime/job_types.py", "runtime/sim.py", "runtime/worker_main.py",
                   "runtime/pypto_target.py", "runtime/pyptoenv.py", "runtime/builtin_plugin.py")


def disabled() -> bool:
    return os.environ.get(NO_CACHE_ENV, "").strip() not in ("", "0")


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for entry in PROGRAM_SOURCES:
        path = PACKAGE / entry
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(f.relative_to(PACKAGE)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ["tensor", list(value.shape), str(value.dtype)]
    if isinstance(value, TilingPlan):
        return {"phase": value.phase, **value.values()}
    if isinstance(value, Qwen3Config):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"no cache description for {type(value).__name__}")


def job_key(target: Target, job: Job, verify_passes: bool) -> str:
    """The key of a cost-model run of ``job`` on ``target``."""
    p = target.platform
    blob = json.dumps({
        "kind": job.kind, "fields": _describe(job.fields()), "verify_passes": verify_passes,
        "platform": repr(p), "pypto_ini": hashlib.sha256(p.pypto_ini.encode()).hexdigest(),
        "switches": list(target.switches), "env": sorted(target.runtime_env),
        "pypto": pypto_version(), "torch": torch.__version__, "sources": source_fingerprint(),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _stem(key: str) -> Path:
    return cache_dir("results") / key


def lookup(key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(outputs, report) of a stored run, or None. A damaged entry is absent (one warning)."""
    stem = _stem(key)
    if not message_exists(stem):
        return None
    with file_lock(stem.parent / ".lock", shared=True):
        try:
            data = read_message(stem)
            shapes, report = data["shapes"], dict(data["report"])
        except (KernelError, KeyError, TypeError, ValueError) as exc:
            warnings.warn(f"ignoring the cost-model result cache entry {stem}: {exc}", CacheWarning, stacklevel=3)
            return None
    outputs: dict[str, Any] = dict(data.get("json_outputs") or {})
    for name, (shape, dtype) in shapes.items():
        outputs[name] = torch.zeros(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
    report.update(from_cache=True, cache_key=key, run_dir=None, trace=None)
    return outputs, report


def store(key: str, outputs: Mapping[str, Any], report: Mapping[str, Any]) -> None:
    """Keep a finished cost-model run's report (and its outputs' shapes, or JSON outputs whole)."""
    shapes = {k: [list(v.shape), str(v.dtype)] for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    json_outputs = {k: v for k, v in outputs.items() if not isinstance(v, torch.Tensor)}
    kept = {k: v for k, v in report.items() if k not in ("run_dir", "trace")}
    stem = _stem(key)
    with file_lock(stem.parent / ".lock"):
        write_message(stem, {"shapes": shapes, "json_outputs": json_outputs, "report": kept})
