"""A base class for target plugins whose differences are data.

A plugin may implement the hooks as module functions (see the README's minimal plugin) or
subclass :class:`TargetPlugin` and set class attributes; the entry point then names an
instance (``qwenlayers_a5.plugin:plugin``). pluggy registers the instance's hookimpl methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.hookspecs import hookimpl
from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.tiling import TilingPlan, derive_plan
from qwenlayers.core.workarounds import Workaround


class TargetPlugin:
    """Hooks of one target from four pieces of data and one method."""

    dist: ClassVar[str]  # distribution name, named in plan sources and errors
    platform: ClassVar[Platform]
    anchors: ClassVar[Mapping[Phase, TilingPlan]]  # tuned plan per phase, fitted to each model
    workarounds: ClassVar[Sequence[Workaround]] = ()
    collective_backend: ClassVar[str | None] = None  # torch.distributed backend of TP runs ("gloo", "hccl")

    def runtime_env(self, workdir: Path) -> dict[str, str]:
        """Environment of the pypto worker; override for targets that need one."""
        return {}

    @hookimpl
    def qwenlayers_platform(self) -> Platform:
        return self.platform

    @hookimpl
    def qwenlayers_tiling_defaults(self, platform: Platform, config: Qwen3Config, phase: Phase) -> TilingPlan:
        anchor = replace(self.anchors[phase], source=f"plugin {self.dist}")
        return derive_plan(anchor, config, platform, phase)

    @hookimpl
    def qwenlayers_workarounds(self, platform: Platform) -> list[Workaround]:
        return list(self.workarounds)

    @hookimpl
    def qwenlayers_collective_backend(self, platform: Platform) -> str | None:
        return self.collective_backend

    @hookimpl
    def qwenlayers_prepare_runtime(self, platform: Platform, workdir: Path) -> dict[str, str]:
        return self.runtime_env(workdir)
