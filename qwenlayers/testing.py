"""The plugin contract, for plugin authors' own tests and for the core's suite.

``check_plugin(registry, name)`` returns the list of contract violations of one installed
platform plugin (empty when it conforms)::

    from qwenlayers.registry import get_registry
    from qwenlayers.testing import check_plugin
    assert check_plugin(get_registry(), "mytarget") == []
"""

from __future__ import annotations

import dataclasses

from qwenlayers.core.config import PRESETS
from qwenlayers.core.platform import PHASES, Availability, Platform
from qwenlayers.errors import QwenlayersError


def check_plugin(registry, name: str) -> list[str]:
    problems: list[str] = []
    record = registry.record(name)
    p = record.platform
    if not isinstance(p, Platform):
        return [f"{name}: qwenlayers_platform() did not return a Platform"]
    if p.name != name:
        problems.append(f"{name}: descriptor name {p.name!r} differs from the entry-point name")
    try:
        hash(p)
    except TypeError as exc:
        problems.append(f"{name}: descriptor is not hashable ({exc})")
    try:
        p.name = "changed"  # a frozen dataclass refuses this
        problems.append(f"{name}: descriptor is mutable")
    except dataclasses.FrozenInstanceError:
        pass
    b = p.budgets
    if b.tilelet_bytes % b.align_bytes or b.tile_bytes % b.align_bytes:
        problems.append(f"{name}: budgets are not {b.align_bytes}-byte aligned")
    for field in ("ub", "l0a", "l0b", "l0c", "l1"):
        if getattr(p.buffers, field) <= 0:
            problems.append(f"{name}: buffer {field} is not positive")
    for fig in (p.hbm_bandwidth, p.bf16_peak):
        if not fig.source.strip():
            problems.append(f"{name}: figure {fig} has no source")
    availability = p.available()
    if not isinstance(availability, Availability) or not availability.reason.strip():
        problems.append(f"{name}: available() must return an Availability with a reason")
    for preset in PRESETS.values():
        for phase in PHASES:
            try:
                registry.tiling_defaults(p, preset, phase)
            except QwenlayersError as exc:
                problems.append(f"{name}: default {phase} plan for {preset.name} is invalid: {exc}")
    try:
        for w in registry.workarounds(p):
            if not (w.why.strip() and w.remove_when.strip()):
                problems.append(f"{name}: workaround {w.key} lacks why/remove_when")
    except QwenlayersError as exc:
        problems.append(f"{name}: workarounds: {exc}")
    return problems
