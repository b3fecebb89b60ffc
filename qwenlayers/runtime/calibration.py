"""Calibrated roofline: what each platform's cost model actually reaches, measured once.

Four micro-kernels run on the platform (``calibrate`` job): a streaming bf16 scale of a 64 MB
tensor (GM read + write through the vector cores), a 16-row matmul that streams a 64 MB weight
through the cube's L1 path, a 2048^3 bf16 matmul, and a chain of 32 fp32 vector ops per element.
The achievable GM bandwidth is the faster of the two streams: the cube path reaches about twice
the vector path on both sims (pypto 0.2.0: ~1,300 vs ~607 GB/s), and a decode layer moves its
weights and KV cache that way (a layer measured against the vector figure alone came out above
"100 %"). Their simulated times give that bandwidth, the cube BF16 throughput and the vector
throughput; the layer
roofline is max(bytes / bandwidth, flops / cube throughput) (the vector figure is reported, for
reading how far the vector-bound parts are from what the simulator can do). Results are cached per platform and pypto version (measuring costs tens
of seconds). Nominal descriptor figures stay what they are and are shown beside these.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qwenlayers.runtime.job_types import CalibrateJob
from qwenlayers.runtime.paths import CacheWarning, atomic_write_text, cache_dir, cache_root, file_lock, read_json
from qwenlayers.runtime.pyptoenv import pypto_version
from qwenlayers.runtime.worker import run_job
from qwenlayers.target import Target

STREAM_SHAPE = (4096, 4096)
WEIGHT_STREAM_SHAPE = (16, 4096, 8192)  # rows x [in, out]: a 64 MB weight
MATMUL_SHAPE = (2048, 2048, 2048)
VECTOR_SHAPE = (1024, 4096)


@dataclass(frozen=True)
class Calibration:
    platform: str
    pypto: str
    bandwidth_gb_s: float  # GM bytes per second the cost model streams (the faster path), in GB/s
    cube_tflops: float  # BF16 cube throughput the cost model reaches, in TFLOP/s
    vector_gops: float  # fp32 vector element-ops per second, in G/s
    stream_us: float
    matmul_us: float
    vector_us: float
    vector_stream_gb_s: float  # the two streams the bandwidth is the larger of
    cube_stream_gb_s: float

    def roofline_us(self, work: Any) -> tuple[float, str]:
        memory_us = work.bytes / (self.bandwidth_gb_s * 1e9) * 1e6
        compute_us = work.flops / (self.cube_tflops * 1e12) * 1e6
        return (memory_us, "memory") if memory_us >= compute_us else (compute_us, "compute")


def _cached(path: Path) -> Calibration | None:
    """The cached calibration, or None when it is missing, unreadable or not a calibration (a
    zero, negative or non-finite rate cannot be one): it is then measured again."""
    data = read_json(path, "calibration cache")
    if data is None:
        return None
    try:
        cal = Calibration(**data)
    except TypeError as exc:
        warnings.warn(f"ignoring the calibration cache {path}: {exc}", CacheWarning, stacklevel=2)
        return None
    rates = {"bandwidth_gb_s": cal.bandwidth_gb_s, "cube_tflops": cal.cube_tflops, "vector_gops": cal.vector_gops}
    bad = {k: v for k, v in rates.items() if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0}
    if bad:
        warnings.warn(f"ignoring the calibration cache {path}: {bad} is not a measured rate (finite, > 0)",
                      CacheWarning, stacklevel=2)
        return None
    return cal


def calibrate(target: Target, *, refresh: bool = False) -> Calibration:
    """The platform's calibration, measured on first use and cached (written atomically under
    the lock; read under a shared lock, so a read-only cache with a calibration in it works)."""
    platform = target.platform
    name = f"pypto-{pypto_version() or 'none'}-v4.json"  # v4: bandwidth from both stream paths
    folder = cache_root() / "calibration" / platform.name
    if not refresh and (folder / name).exists():
        with file_lock(folder / ".lock", shared=True):
            cal = _cached(folder / name)
        if cal is not None:
            return cal
    folder = cache_dir("calibration", platform.name)
    path = folder / name
    with file_lock(folder / ".lock"):
        cal = None if refresh else _cached(path)
        if cal is not None:
            return cal
        result = run_job(target, CalibrateJob(STREAM_SHAPE, WEIGHT_STREAM_SHAPE, MATMUL_SHAPE, VECTOR_SHAPE), values=False)
        m = result.outputs["measured"]
        vector_gb_s, cube_gb_s = (m[name]["bytes"] / (m[name]["sim_us"] * 1e-6) / 1e9 for name in ("stream", "weight_stream"))
        cal = Calibration(
            platform=platform.name, pypto=pypto_version() or "none",
            bandwidth_gb_s=max(vector_gb_s, cube_gb_s), vector_stream_gb_s=vector_gb_s, cube_stream_gb_s=cube_gb_s,
            cube_tflops=m["cube"]["flops"] / (m["cube"]["sim_us"] * 1e-6) / 1e12,
            vector_gops=m["vector"]["ops"] / (m["vector"]["sim_us"] * 1e-6) / 1e9,
            stream_us=m["stream"]["sim_us"], matmul_us=m["cube"]["sim_us"], vector_us=m["vector"]["sim_us"],
        )
        atomic_write_text(path, json.dumps(asdict(cal), indent=2))
        return cal
