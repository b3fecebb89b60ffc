"""qwenlayers: the Qwen3 transformer layer as PyPTO kernels for Ascend NPUs.

Light names (descriptors, hook marker, errors) are imported eagerly so platform plugins load
cheaply; names that pull in torch are resolved on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from qwenlayers.core.config import PRESETS, Qwen3Config, preset
from qwenlayers.core.hookspecs import hookimpl
from qwenlayers.core.platform import Availability, Budgets, Buffers, Cores, Figure, Platform
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.core.workarounds import Workaround
from qwenlayers.errors import (
    DuplicatePlatformError,
    InputError,
    KernelError,
    PlatformUnavailableError,
    PluginLoadError,
    QwenlayersError,
    TilingError,
    UnknownPlatformError,
)

__version__ = "0.1.0"

_LAZY = {
    "LayerWeights": ("qwenlayers.core.weights", "LayerWeights"),
    "golden": ("qwenlayers.golden", None),
    "smoke": ("qwenlayers.api", "smoke"),
    "SmokeResult": ("qwenlayers.api", "SmokeResult"),
    "plan": ("qwenlayers.api", "plan"),
    "decode": ("qwenlayers.layer", "decode"),
    "prefill": ("qwenlayers.layer", "prefill"),
    "LayerResult": ("qwenlayers.layer", "LayerResult"),
    "LayerReport": ("qwenlayers.reports", "LayerReport"),
    "decode_tp": ("qwenlayers.tensor_parallel", "decode_tp"),
    "prefill_tp": ("qwenlayers.tensor_parallel", "prefill_tp"),
    "TPResult": ("qwenlayers.tensor_parallel", "TPResult"),
    "get_registry": ("qwenlayers.registry", "get_registry"),
}

__all__ = [
    "PRESETS", "Availability", "Budgets", "Buffers", "Cores", "DuplicatePlatformError", "Figure", "InputError",
    "KernelError", "Platform", "PlatformUnavailableError", "PluginLoadError", "Qwen3Config", "QwenlayersError",
    "TilingError", "TilingPlan", "UnknownPlatformError", "Workaround", "hookimpl", "preset", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qwenlayers' has no attribute {name!r}")
