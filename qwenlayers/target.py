"""One platform, resolved once per call: everything the runtime needs to run jobs on it.

A call (``decode``, ``prefill``, their tensor-parallel forms, ``smoke``, ``bench``, ``tune``)
asks the registry once: select the platform and its budget set, probe it (once), collect its
workaround switches, let its plugins prepare the worker environment, and name its collective
backend. The result is a frozen, picklable :class:`Target` that goes everywhere the platform
used to go with a registry beside it; workers and tensor-parallel ranks never ask again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from qwenlayers.core.platform import Platform
from qwenlayers.errors import PlatformUnavailableError
from qwenlayers.registry import PlatformRegistry, get_registry
from qwenlayers.runtime.pypto_target import platform_workdir


@dataclass(frozen=True)
class Target:
    """A selected, usable platform with its plugins' answers."""

    platform: Platform
    dist: str  # the plugin's distribution and version, for messages
    switches: tuple[str, ...]  # workaround switches the worker and runtime act on
    runtime_env: Mapping[str, str]  # the worker variables the plugins prepared
    collective_backend: str | None  # torch.distributed backend of TP ranks; None: no tensor parallel

    @property
    def name(self) -> str:
        return self.platform.name

    def backend_for_tp(self) -> str:
        if not self.collective_backend:
            raise PlatformUnavailableError(f"{self.dist} names no collective backend (hook qwenlayers_collective_backend), "
                                           "so it cannot run tensor parallel")
        return self.collective_backend

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:  # MappingProxyType does not pickle
        return (Target, (self.platform, self.dist, self.switches, dict(self.runtime_env), self.collective_backend))


def resolve_target(platform: str | Platform | Target | None = None, *, budgets: str | None = None,
                   registry: PlatformRegistry | None = None) -> Target:
    """Select ``platform`` (name, descriptor, or None: ``$QWENLAYERS_PLATFORM`` or the default)
    under ``budgets``, refuse it if it cannot run here, and gather its plugins' answers. A
    :class:`Target` is returned as it is (a caller that resolved once hands it on)."""
    if isinstance(platform, Target):
        if budgets is None or platform.platform.with_budgets(budgets) == platform.platform:
            return platform
        platform = platform.name
    reg = registry or get_registry()
    if isinstance(platform, Platform):
        selected = platform.with_budgets(budgets) if budgets else platform
        availability = selected.available()
        if not availability.ok:
            raise PlatformUnavailableError(f"platform {selected.name} cannot run here: {availability.reason}")
    else:
        selected = reg.select(platform, require_available=True, budgets=budgets)
    try:
        backend: str | None = reg.collective_backend(selected)
    except PlatformUnavailableError:
        backend = None
    env = reg.prepare_runtime(selected, platform_workdir(selected))
    label = reg.record(selected.name).label if selected.name in reg.names() else f"platform {selected.name}"
    return Target(selected, label, tuple(reg.workarounds(selected).switches()), MappingProxyType(dict(env)), backend)
