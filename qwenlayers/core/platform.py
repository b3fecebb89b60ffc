"""Frozen descriptors of a hardware target: what a platform plugin tells the core.

Modelled on Triton's ``GPUTarget``: every field is documented, every number that came from a
document or a measurement carries its source (:class:`Figure`), and the descriptor is hashable so
it can key on-disk caches. Probing the machine is *not* done here at load time: ``available()``
calls the plugin's probe lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

RunMode = Literal["npu", "sim"]
Phase = Literal["decode", "prefill"]
PHASES: tuple[Phase, ...] = ("decode", "prefill")


@dataclass(frozen=True)
class Figure:
    """A number that came from somewhere."""

    value: float
    unit: str  # "GB/s", "TFLOP/s", "bytes"
    source: str  # document title, ini file, or measurement script

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit}"


@dataclass(frozen=True)
class Buffers:
    """On-chip buffer sizes of one AI core, in bytes."""

    ub: int  # unified buffer (vector core)
    l0a: int  # cube left-operand buffer
    l0b: int  # cube right-operand buffer
    l0c: int  # cube accumulator buffer (fp32 results)
    l1: int  # cube-side L1 staging buffer
    source: str = ""


@dataclass(frozen=True)
class Cores:
    """Core counts of one device."""

    cube: int  # AIC cores
    vector: int  # AIV cores
    source: str = ""


@dataclass(frozen=True)
class Budgets:
    """Per-tile byte budgets the tiling plan must respect.

    ``tilelet_bytes`` bounds one vector tile (UB side), ``tile_bytes`` one cube operand tile
    (L0A/L0B side). They are far below the physical buffers on purpose: double buffering and
    several live tiles must fit at once.
    """

    tilelet_bytes: int
    tile_bytes: int
    align_bytes: int = 32

    def __post_init__(self) -> None:
        for name in ("tilelet_bytes", "tile_bytes", "align_bytes"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"Budgets.{name} must be positive, got {value}")
        for name in ("tilelet_bytes", "tile_bytes"):
            if getattr(self, name) % self.align_bytes:
                raise ValueError(f"Budgets.{name}={getattr(self, name)} is not a multiple of align_bytes={self.align_bytes}")


@dataclass(frozen=True)
class Availability:
    """Whether a platform can run on this machine, and why not. ``reason`` is always filled in."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def _always_available() -> Availability:
    return Availability(True, "no probe declared")


@dataclass(frozen=True)
class Platform:
    """Everything the core needs to know about one target.

    ``name`` equals the plugin's entry-point name. ``arch`` is the NPU arch pypto must compile for
    (its ``pypto.platform.npuarch`` string); ``backend`` the pypto-lib backend name. ``sim_arch`` is
    the cost-model arch name for sim platforms (empty for npu ones).
    """

    name: str
    description: str
    arch: str
    backend: str
    run_mode: RunMode
    buffers: Buffers
    cores: Cores
    budgets: Budgets
    hbm_bandwidth: Figure
    bf16_peak: Figure
    sim_arch: str = ""
    probe: Callable[[], Availability] = field(default=_always_available, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.run_mode not in ("npu", "sim"):
            raise ValueError(f"Platform.run_mode must be 'npu' or 'sim', got {self.run_mode!r}")
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Platform.name must be a simple identifier, got {self.name!r}")

    def available(self) -> Availability:
        """Probe the machine (lazily; may import optional packages). Never raises."""
        try:
            result = self.probe()
        except Exception as exc:  # a probe must not take the caller down
            return Availability(False, f"probe of {self.name} raised {type(exc).__name__}: {exc}")
        if not isinstance(result, Availability):
            return Availability(False, f"probe of {self.name} returned {result!r}, not an Availability")
        return result
