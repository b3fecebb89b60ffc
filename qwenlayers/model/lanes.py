"""The chains a whole-model run pushes its tokens through, one layer at a time.

A *lane* owns one chain's per-layer KV caches and runs one layer of one phase on its own hidden
states: :class:`PlatformLane` on the selected platform through the public layer API (one layer
call = one ``qwenlayers.prefill`` / ``decode``, or their tensor-parallel forms), and
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
from qwenlayers.model.generation import LayerTiming, summed_tasks
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


@dataclass
class PlatformLane:
    """The layers on the platform: bf16, values from the platform's runs (on a sim, pypto's
    interpreter), timing from the same runs' cost model. ``tp`` > 1 runs each layer
    tensor-parallel as ``qwenlayers run --tp`` does."""

    cfg: Qwen3Config
    target: Target
    tp: int
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    progress: Progress
    cache: bool | None = None
    name: str = "platform"
    dtype: torch.dtype = torch.bfloat16

    @classmethod
    def new(cls, cfg: Qwen3Config, target: Target, tp: int, layers: int, batch: int, rows: int, progress: Progress,
            cache: bool | None = None) -> "PlatformLane":
        return cls(cfg, target, tp, _caches(cfg, layers, batch, rows, torch.bfloat16), progress, cache)

    def run(self, phase: Phase, layer: int, w: LayerWeights, hidden: torch.Tensor,
            seq_lens: torch.Tensor) -> tuple[torch.Tensor, LayerTiming]:
        k, v = self.caches[layer]
        w16 = w.to(torch.bfloat16)
        common: dict[str, Any] = {"platform": self.target, "progress": self.progress}
        result: Any
        if self.tp > 1:
            if phase == "prefill":
                result = prefill_tp(self.cfg, w16, hidden, seq_lens, tp=self.tp, k_cache=k, v_cache=v, **common)
            else:
                result = decode_tp(self.cfg, w16, hidden, k, v, seq_lens, tp=self.tp, **common)
            report = result.report
            tasks = summed_tasks(part.get("tasks") or {} for rank in report.ranks for part in (rank.attention, rank.mlp))
            timing = LayerTiming(report.sim_us, tasks, max(float(r.attention.get("compile_s") or 0) + float(r.mlp.get("compile_s") or 0)
                                                           for r in report.ranks), report.wall_s,
                                 max(int(p.get("peak_rss_mb") or 0) for r in report.ranks for p in (r.attention, r.mlp)))
        else:
            run_layer = prefill if phase == "prefill" else decode
            kwargs = {"k_cache": k, "v_cache": v} if phase == "prefill" else {}
            args = (hidden, seq_lens) if phase == "prefill" else (hidden, k, v, seq_lens)
            result = run_layer(self.cfg, w16, *args, cache=self.cache, **kwargs, **common)
            r = result.report
            timing = LayerTiming(r.sim_us, dict(r.tasks), float(r.compile_s), float(r.wall_s), int(r.peak_rss_mb), bool(r.from_cache))
        out = result.out
        if out is None or not bool(torch.isfinite(out).all()):
            raise KernelError(f"layer {layer} {phase} on {self.target.name} gave non-finite outputs; the run stops here "
                              "(a NaN would pass silently through every later layer)")
        return out, timing
