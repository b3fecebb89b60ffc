"""Frozen descriptors of a hardware target: what a platform plugin tells the core.

Modelled on Triton's ``GPUTarget``: every field is documented, every number that came from a
document or a measurement carries its source (:class:`Figure`), and the descriptor is hashable so
it can key on-disk caches. Probing the machine is *not* done here at load time: ``available()``
calls the plugin's probe lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from qwenlayers.errors import TilingError

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
    """Per-tile byte budgets the tiling plan must respect: one named set.

    ``tilelet_bytes`` bounds one vector tile (UB side), ``tile_bytes`` one cube operand tile
    (L0A/L0B side). They sit below the physical buffers on purpose: double buffering and the
    other tiles live at the same time must fit too. Each plugin's default set is its own
    measured choice for its target and compiler (``source`` says how it was chosen);
    :data:`PYPTO_LIB_BUDGETS` is the set of pypto-lib's reference, offered on every platform.
    """

    tilelet_bytes: int
    tile_bytes: int
    align_bytes: int = 32
    name: str = "custom"
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("tilelet_bytes", "tile_bytes", "align_bytes"):
            value = getattr(self, field_name)
            if value <= 0:
                raise ValueError(f"Budgets.{field_name} must be positive, got {value}")
        for field_name in ("tilelet_bytes", "tile_bytes"):
            if getattr(self, field_name) % self.align_bytes:
                raise ValueError(f"Budgets.{field_name}={getattr(self, field_name)} is not a multiple of align_bytes={self.align_bytes}")
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"Budgets.name must be a simple identifier, got {self.name!r}")

    def describe(self) -> str:
        return f"{self.name} (TILELET {self.tilelet_bytes} B, TILE {self.tile_bytes} B)"


#: pypto-lib's rules for its own compiler (reference 000's plan table): 2 KB per vector tile,
#: 16 KB per cube operand tile. Every platform offers it by this name, so a plan can still be
#: checked and run under the reference's rules.
PYPTO_LIB_BUDGETS = Budgets(
    tilelet_bytes=2048, tile_bytes=16384, name="pypto-lib",
    source="pypto-lib reference 000: its compiler's per-tile rules (TILELET 2 KB, TILE 16 KB), not a buffer limit",
)

#: The name that always means a platform's own (first) budget set.
DEFAULT_BUDGETS = "default"


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
    the cost-model arch (``Model.deviceArch``) that simulates this target.

    The descriptor drives what a sim run compiles for and simulates: the runtime writes pypto's
    platform ini from ``pypto_ini`` (the target's own description, or pypto's installed one when
    empty) with ``arch``, ``cores`` and ``buffers`` put into it, and the cost model from
    ``sim_arch`` and ``cores``; a run whose pypto arch differs from ``arch`` is an error. So a
    variant that changes a field gets exactly that field (``plugin_kit.sim_variant``).
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
    #: pypto's platform description of this target (the text of its platform ini: SoC and
    #: compiler versions, frequencies); empty: the one pypto ships. Arch, cores and buffers in it
    #: are always overwritten from this descriptor.
    pypto_ini: str = field(default="", repr=False)
    probe: Callable[[], Availability] = field(default=_always_available, compare=False, hash=False, repr=False)
    #: Every budget set the platform offers, its own default first. Filled in from ``budgets``
    #: when empty; :data:`PYPTO_LIB_BUDGETS` is always added. ``budgets`` is the set in force.
    budget_sets: tuple[Budgets, ...] = ()

    def __post_init__(self) -> None:
        sets = tuple(self.budget_sets) or (self.budgets,)
        if all(b.name != self.budgets.name for b in sets):
            sets = (self.budgets, *sets)
        if all(b.name != PYPTO_LIB_BUDGETS.name for b in sets):
            sets = (*sets, PYPTO_LIB_BUDGETS)
        names = [b.name for b in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"Platform.budget_sets names must be unique, got {names}")
        object.__setattr__(self, "budget_sets", sets)
        if self.run_mode not in ("npu", "sim"):
            raise ValueError(f"Platform.run_mode must be 'npu' or 'sim', got {self.run_mode!r}")
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Platform.name must be a simple identifier, got {self.name!r}")

    @property
    def default_budgets(self) -> Budgets:
        """The plugin's own budget set (its measured choice for the target)."""
        return self.budget_sets[0]

    def with_budgets(self, name: str | None) -> Platform:
        """This platform under the budget set ``name`` (``None`` or ``"default"``: its own)."""
        if name is None or name == DEFAULT_BUDGETS:
            chosen = self.default_budgets
        else:
            found = [b for b in self.budget_sets if b.name == name]
            if not found:
                allowed = ", ".join([DEFAULT_BUDGETS, *(b.name for b in self.budget_sets)])
                raise TilingError(f"platform {self.name} offers no budget set {name!r}; allowed: {allowed}")
            chosen = found[0]
        return self if chosen == self.budgets else replace(self, budgets=chosen)

    def available(self) -> Availability:
        """Probe the machine (lazily; may import optional packages). Never raises."""
        try:
            result = self.probe()
        except Exception as exc:  # a probe must not take the caller down
            return Availability(False, f"probe of {self.name} raised {type(exc).__name__}: {exc}")
        if not isinstance(result, Availability):
            return Availability(False, f"probe of {self.name} returned {result!r}, not an Availability")
        return result
