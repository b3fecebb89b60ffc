"""The built-in plugin: what every run on pypto 0.2.0 needs, registered by the core itself (as
pytest registers its builtins and llm its default plugins), so that no target plugin copies it
and a third-party plugin that never heard of it still gets correct values.

It takes part in every platform's hook calls and answers from the descriptor alone: the pypto
0.2.0 workarounds, and for sim platforms the worker environment that makes pypto compile for the
descriptor's arch, cores and buffers and simulate it on the descriptor's cost model
(:mod:`qwenlayers.runtime.pypto_target`). It runs last (``trylast``): a target plugin's own
answer is merged over it.
"""

from __future__ import annotations

from pathlib import Path

from qwenlayers.core.hookspecs import hookimpl
from qwenlayers.core.platform import Platform
from qwenlayers.core.workarounds import Workaround
from qwenlayers.runtime.pypto_target import needs_overlay, sim_runtime_env
from qwenlayers.runtime.pypto_workarounds import BUILDER_NOTES, INI_OVERLAY, SIM_TENSOR_GRAPH_VALUES, SIM_VERIFY_REAL_INPUTS

NAME = "builtin"
DIST = "qwenlayers (built-in)"


@hookimpl(trylast=True)
def qwenlayers_workarounds(platform: Platform) -> list[Workaround]:
    found = list(BUILDER_NOTES)
    if platform.run_mode == "sim":
        found[:0] = [SIM_VERIFY_REAL_INPUTS, SIM_TENSOR_GRAPH_VALUES]
        if needs_overlay(platform):
            found.insert(2, INI_OVERLAY)
    return found


@hookimpl(trylast=True)
def qwenlayers_prepare_runtime(platform: Platform, workdir: Path) -> dict[str, str] | None:
    # on a device host pypto takes its arch from CANN: nothing to prepare
    return sim_runtime_env(platform, workdir) if platform.run_mode == "sim" else None
