"""What a whole-model run produced: tokens, per-step timing, and (checked) drift and token
agreement. Plain frozen records, so the CLI, JSON and the plot read the same figures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from qwenlayers.core.platform import Phase

#: The drift bar: a platform layer output may be off the fp32 chain by at most this many times
#: what the bf16 golden chain alone is off by, plus a floor (relative RMS error). Both chains
#: round to bf16 at every layer boundary; the kernels also accumulate in other orders (tiled
#: matmuls, online softmax), which is what the factor leaves room for.
DRIFT_FACTOR = 3.0
DRIFT_FLOOR = 2e-3


#: Where a layer's timing came from (``LayerTiming.timing``): its program was compiled and
#: simulated for it, or answered from the result cache (the same program ran before, in an
#: earlier run); otherwise "as layer N", the timing of an earlier layer of the same pass.
TIMED_HERE, TIMED_FROM_CACHE = "cost-model run", "result cache"


@dataclass(frozen=True)
class LayerTiming:
    """What one layer of the platform lane cost: the simulated figures of its program, and what
    this run spent on the layer (compile seconds: its values run's tensor graph, plus the full
    compile when this layer's cost-model run was fresh; wall seconds of its calls)."""

    sim_us: float | None
    tasks: dict[str, int]
    compile_s: float
    wall_s: float
    peak_rss_mb: int
    timing: str = ""  # where the figures came from (model.lanes: a cost-model run, the result cache, an earlier layer)


def summed_tasks(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Task counts (AIC / AIV / HUB) of several programs added up."""
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + int(n)
    return total


def drift_bar_text() -> str:
    return f"{DRIFT_FACTOR:g} x the bf16 golden chain's own relative error + {DRIFT_FLOOR:g}"


@dataclass(frozen=True)
class StepTiming:
    """One pass through every layer: the prefill (step 0) or one decode step."""

    step: int
    phase: Phase
    seq_lens: list[int]
    layers: list[LayerTiming]

    @property
    def sim_us(self) -> float | None:
        """The layers' simulated µs added: the step on the device, host ops not counted."""
        times = [t.sim_us for t in self.layers]
        return None if any(t is None for t in times) else float(sum(t for t in times if t is not None))

    @property
    def tokens(self) -> int:
        """Tokens this pass processed: every prompt token in the prefill, one per sequence in decode."""
        return sum(self.seq_lens) if self.phase == "prefill" else len(self.seq_lens)

    @property
    def tokens_per_s(self) -> float | None:
        us = self.sim_us
        return self.tokens / (us * 1e-6) if us else None

    def tasks(self) -> dict[str, int]:
        return summed_tasks(t.tasks for t in self.layers)

    @property
    def programs_compiled(self) -> int:
        """Full compiles (passes, codegen, cost model) this pass ran: one per distinct program
        that the result cache did not already hold, however many layers share it."""
        return sum(t.timing == TIMED_HERE for t in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sim_us": self.sim_us, "tokens": self.tokens, "tokens_per_s": self.tokens_per_s,
                "tasks": self.tasks(), "programs_compiled": self.programs_compiled}


@dataclass(frozen=True)
class LayerDrift:
    """How far one layer's output is from the fp32 chain's, on the real tokens of one step:
    the platform's and, next to it, the bf16 golden chain's own (max abs and relative RMS)."""

    step: int
    layer: int
    platform_max_abs: float
    platform_rel: float
    bf16_max_abs: float
    bf16_rel: float

    @property
    def bar(self) -> float:
        return DRIFT_FACTOR * self.bf16_rel + DRIFT_FLOOR

    @property
    def within(self) -> bool:
        return self.platform_rel <= self.bar

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bar": self.bar, "within": self.within}


@dataclass(frozen=True)
class StepTokens:
    """Each chain's greedy choice at one step, all given the same prefix (the platform's tokens).

    A choice that differs from a reference is excused only when the reference itself nearly
    could have made it: ``fp32_gap[b]`` is how far below the fp32 chain's best logit its logit
    for the platform's token lies, ``transformers_gap[b]`` the same in transformers' own logits,
    and ``tie_bar[b]`` how much bf16 rounding alone moves a difference of two logits (sigmas of
    noise, :data:`~qwenlayers.model.host.NEAR_TIE_SIGMAS`). A platform token far down the
    reference's ranking fails, however close the reference's own top two were. ``near_tie[b]``
    marks rows whose fp32 top two are within the bar (the tables' ``*``)."""

    step: int
    platform: list[int]
    golden_fp32: list[int]
    golden_bf16: list[int]
    transformers: list[int] | None
    fp32_margin: list[float]
    near_tie: list[bool]
    tie_bar: list[float]
    fp32_gap: list[float]
    transformers_gap: list[float] | None = None

    def _references(self) -> list[tuple[str, list[int], list[float]]]:
        refs = [("golden fp32", self.golden_fp32, self.fp32_gap)]
        if self.transformers is not None and self.transformers_gap is not None:
            refs.append(("transformers", self.transformers, self.transformers_gap))
        return refs

    def disagreements(self) -> list[str]:
        return [f"step {self.step}, sequence {b}: platform chose {mine}, {name} {theirs[b]} ({name}'s logit for {mine} "
                f"is {gaps[b]:.3g} below its best, over the bf16 noise bar {self.tie_bar[b]:.3g})"
                for name, theirs, gaps in self._references()
                for b, mine in enumerate(self.platform) if mine != theirs[b] and gaps[b] > self.tie_bar[b]]

    def excused(self) -> list[int]:
        """Sequences whose platform token differs from a reference's, every time within the bar."""
        differs = {b for _, theirs, _ in self._references() for b, mine in enumerate(self.platform) if mine != theirs[b]}
        beyond = {b for _, theirs, gaps in self._references() for b, mine in enumerate(self.platform)
                  if mine != theirs[b] and gaps[b] > self.tie_bar[b]}
        return sorted(differs - beyond)


@dataclass(frozen=True)
class Generation:
    """A whole-model run: prompts, the tokens generated (steps + 1 per sequence: one from the
    prefill, one per decode step), the timing of every pass, and, when checked, drift and
    token agreement."""

    model: str
    platform: str
    tp: int
    layers: int
    prompts: list[list[int]]
    tokens: list[list[int]]
    timings: list[StepTiming]
    wall_s: float
    checked: bool = False
    token_checks: list[StepTokens] = field(default_factory=list)
    drift: list[LayerDrift] = field(default_factory=list)
    transformers_version: str | None = None  # None: not installed (or unusable), its column is absent
    transformers_note: str | None = None  # why its column is absent, when checked

    def failures(self) -> list[str]:
        found = [f"step {d.step}, layer {d.layer}: platform drift {d.platform_rel:.3g} over the bar {d.bar:.3g} "
                 f"(bf16 golden {d.bf16_rel:.3g})" for d in self.drift if not d.within]
        for t in self.token_checks:
            found.extend(t.disagreements())
        return found

    @property
    def ok(self) -> bool | None:
        """None when not checked; else every layer within the drift bar and every greedy token
        equal to the fp32 chain's and transformers' (near ties excepted)."""
        return None if not self.checked else not self.failures()

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "platform": self.platform, "tp": self.tp, "layers": self.layers,
            "prompts": self.prompts, "tokens": self.tokens, "wall_s": self.wall_s, "checked": self.checked, "ok": self.ok,
            "failures": self.failures(), "transformers_version": self.transformers_version,
            "transformers_note": self.transformers_note,
            "timings": [t.as_dict() for t in self.timings], "token_checks": [asdict(t) for t in self.token_checks],
            "drift": [d.as_dict() for d in self.drift],
            "drift_bar": {"factor": DRIFT_FACTOR, "floor": DRIFT_FLOOR},
        }
