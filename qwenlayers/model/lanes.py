"""The chains a whole-model run pushes its tokens through, one layer at a time.

A *lane* owns one chain's per-layer KV caches and runs one layer of one phase on its own hidden
states: :class:`PlatformLane` on the selected platform through the public layer API (a
values-only ``qwenlayers.prefill`` / ``decode`` per layer, or their tensor-parallel forms, and
one cost-model call per distinct program), and
:class:`GoldenLane` through the golden math in fp32 or bf16. Every lane sees the same layer
weights and the same tokens, so their layer outputs can be compared layer by layer and step by
step (the drift the ``--check`` table shows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from qwenlayers.core import golden
from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import Phase
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import KernelError
from qwenlayers.layer import decode, prefill
from qwenlayers.model.generation import TIMED_FROM_CACHE, TIMED_HERE, LayerTiming, summed_tasks
from qwenlayers.target import Target
from qwenlayers.tensor_parallel import decode_tp, prefill_tp

Progress = Callable[[str], None]


def _caches(cfg: Qwen3Config, layers: int, batch: int, rows: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    shape = (batch, cfg.num_key_value_heads, rows, cfg.head_dim)
    return [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(layers)]


@dataclass
class GoldenLane:
    """The golden layers in ``dtype`` (fp32: the reference every error is measured against;
    bf16: what bf16 arithmetic alone drifts by, the bar next to the platform's error)."""

    name: str
    cfg: Qwen3Config
    dtype: torch.dtype
    caches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def new(cls, name: str, cfg: Qwen3Config, layers: int, batch: int, rows: int, dtype: torch.dtype) -> "GoldenLane":
        return cls(name, cfg, dtype, _caches(cfg, layers, batch, rows, dtype))

    def run(self, phase: Phase, layer: int, w: LayerWeights, hidden: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
        mine = w.to(self.dtype)
        if phase == "prefill":
            out, k, v = golden.prefill(self.cfg, mine, hidden, seq_lens, max_seq=self.caches[layer][0].shape[2])
        else:
            out, k, v = golden.decode(self.cfg, mine, hidden, *self.caches[layer], seq_lens)
        self.caches[layer] = (k, v)
        return out


def _slowest_rank(report: Any) -> tuple[float, int]:
    """A tensor-parallel report's compile seconds (the slowest rank's two programs) and peak MB."""
    compile_s = max(float(rk.attention.get("compile_s") or 0) + float(rk.mlp.get("compile_s") or 0) for rk in report.ranks)
    peak = max(int(p.get("peak_rss_mb") or 0) for rk in report.ranks for p in (rk.attention, rk.mlp))
    return compile_s, peak


@dataclass
class PlatformLane:
    """The layers on the platform, bf16. Each layer's values come from a values-only run
    (``timed=False``: on a sim pypto's compile stops at the tensor graph, whose interpreter gives
    the values). The timing of each distinct program (a phase at one set of sequence lengths:
    every layer of a pass has the same program, only its weights differ, and the cost model
    reads no values) comes from one cost-model run (``values=False``), the first time the pass
    needs it; later layers of the pass take that timing. ``tp`` > 1 runs each layer
    tensor-parallel as ``qwenlayers run --tp`` does."""

    cfg: Qwen3Config
    target: Target
    tp: int
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    progress: Progress
    cache: bool | None = None
    name: str = "platform"
    dtype: torch.dtype = torch.bfloat16
    timed: dict[tuple[Any, ...], tuple[int, LayerTiming]] = field(default_factory=dict)  # program -> (layer, timing)

    @classmethod
    def new(cls, cfg: Qwen3Config, target: Target, tp: int, layers: int, batch: int, rows: int, progress: Progress,
            cache: bool | None = None) -> "PlatformLane":
        return cls(cfg, target, tp, _caches(cfg, layers, batch, rows, torch.bfloat16), progress, cache)

    def _call(self, phase: Phase, layer: int, w16: LayerWeights, hidden: torch.Tensor, seq_lens: torch.Tensor,
              **how: Any) -> Any:
        k, v = self.caches[layer]
        common: dict[str, Any] = {"platform": self.target, "progress": self.progress, **how}
        if self.tp > 1:
            if phase == "prefill":
                return prefill_tp(self.cfg, w16, hidden, seq_lens, tp=self.tp, k_cache=k, v_cache=v, **common)
            return decode_tp(self.cfg, w16, hidden, k, v, seq_lens, tp=self.tp, **common)
        if phase == "prefill":
            return prefill(self.cfg, w16, hidden, seq_lens, k_cache=k, v_cache=v, **common)
        return decode(self.cfg, w16, hidden, k, v, seq_lens, **common)

    def _timing(self, phase: Phase, layer: int, w16: LayerWeights, hidden: torch.Tensor,
                seq_lens: torch.Tensor) -> tuple[LayerTiming, str]:
        """The pass's timing: its cost-model run at the first layer, that layer's after."""
        key = (phase, tuple(int(n) for n in seq_lens), self.caches[layer][0].shape)
        if key in self.timed:
            first, timing = self.timed[key]
            return timing, f"as layer {first + 1}"
        r = self._call(phase, layer, w16, hidden, seq_lens, values=False, cache=self.cache).report
        if self.tp > 1:
            parts = [p for rank in r.ranks for p in (rank.attention, rank.mlp)]
            compile_s, peak = _slowest_rank(r)
            timing = LayerTiming(r.sim_us, summed_tasks(p.get("tasks") or {} for p in parts), compile_s, r.wall_s, peak)
            cached = all(p.get("from_cache") for p in parts)
        else:
            timing = LayerTiming(r.sim_us, dict(r.tasks), float(r.compile_s), float(r.wall_s), int(r.peak_rss_mb))
            cached = bool(r.from_cache)
        self.timed[key] = (layer, timing)
        return timing, TIMED_FROM_CACHE if cached else TIMED_HERE

    def run(self, phase: Phase, layer: int, w: LayerWeights, hidden: torch.Tensor,
            seq_lens: torch.Tensor) -> tuple[torch.Tensor, LayerTiming]:
        w16 = w.to(torch.bfloat16)
        timing, source = self._timing(phase, layer, w16, hidden, seq_lens)
        result = self._call(phase, layer, w16, hidden, seq_lens, timed=False)
        r = result.report
        if self.tp > 1:
            values_compile, values_peak = _slowest_rank(r)
        else:
            values_compile = sum(float(c.get("compile_s") or 0) for c in r.chunks)
            values_peak = int(r.peak_rss_mb)
        fresh = source == TIMED_HERE  # this layer paid for the cost-model run's compile
        here = not source.startswith("as layer")  # this layer made the timing call (fresh or from the cache)
        out = result.out
        if out is None or not bool(torch.isfinite(out).all()):
            raise KernelError(f"layer {layer} {phase} on {self.target.name} gave non-finite outputs; the run stops here "
                              "(a NaN would pass silently through every later layer)")
        return out, LayerTiming(timing.sim_us, timing.tasks, values_compile + (timing.compile_s if fresh else 0.0),
                                float(r.wall_s) + (timing.wall_s if here else 0.0),
                                max(values_peak, timing.peak_rss_mb if fresh else 0), source)
