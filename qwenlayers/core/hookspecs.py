"""Hook specifications: the only extension surface of qwenlayers.

A target plugin is a distribution with one entry point in the group ``qwenlayers.platforms``;
the module it names holds ``@qwenlayers.hookimpl`` functions. That module must import nothing
heavy (no pypto, no device runtime) at module level: loading it only describes the target.

Five hooks: ``qwenlayers_platform`` (firstresult), ``qwenlayers_tiling_defaults`` (firstresult),
``qwenlayers_workarounds`` (all results concatenated), ``qwenlayers_prepare_runtime`` (all results
merged) and ``qwenlayers_collective_backend`` (firstresult).

Per-platform hooks (all but ``qwenlayers_platform``) are called for the selected platform's
plugin only, plus plugins registered without a platform (overrides, and the core's built-in
plugin), so a plugin never needs an ``if platform.name != ...`` guard. pluggy calls implementations
last-registered first; an override plugin that must win uses ``@hookimpl(tryfirst=True)``.
Implementations may accept any subset of a hook's parameters; parameters are only ever added.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from pathlib import Path

    from qwenlayers.core.config import Qwen3Config
    from qwenlayers.core.platform import Phase, Platform
    from qwenlayers.core.tiling import TilingPlan
    from qwenlayers.core.workarounds import Workaround

PROJECT = "qwenlayers"
hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def qwenlayers_platform() -> Platform | None:
    """Describe the target this plugin provides.

    When it is called: once, when the registry loads the plugin's entry point. It must be cheap:
    return constants; never probe hardware here (``Platform.probe`` does that, lazily).

    Stops at first non-None result.

    :returns: a frozen :class:`~qwenlayers.core.platform.Platform` whose ``name`` equals the
        entry-point name, or None for a plugin that only overrides other hooks.

    Implement in: target plugins only (exactly one platform per distribution).

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def qwenlayers_tiling_defaults(platform: Platform, config: Qwen3Config, phase: Phase) -> TilingPlan | None:
    """Choose the default tiling of one layer build.

    When it is called: each time a plan is needed for ``platform`` (the selected platform), a
    model ``config`` and a ``phase`` ("decode" or "prefill") and the user gave no full plan.

    Stops at first non-None result. The core validates the plan against ``platform.budgets``
    and buffers before building; an invalid plan is a TilingError naming the plugin.

    :param platform: the selected platform's descriptor.
    :param config: the model configuration (a preset, a Hugging Face config, or a TP shard).
    :param phase: "decode" or "prefill".
    :returns: a :class:`~qwenlayers.core.tiling.TilingPlan`, or None to defer.

    Implement in: the target plugin; override plugins may use ``tryfirst=True``.

    .. versionadded:: 0.1
    """


@hookspec
def qwenlayers_workarounds(platform: Platform) -> list[Workaround]:
    """List the named workarounds in force on ``platform``.

    When it is called: when a job is started on ``platform`` (the switches among them go to the
    worker), and by ``qwenlayers platforms --details``. Results of all implementations are
    concatenated; a key declared twice is an error. The core's built-in plugin declares pypto
    0.2.0's own (the same on every target); a target plugin adds only its target's.

    :param platform: the selected platform's descriptor.
    :returns: a list of :class:`~qwenlayers.core.workarounds.Workaround` (may be empty):
        ``switch`` records the runtime acts on, ``note`` records the builders are written around.

    Implement in: the core's built-in plugin; target and override plugins for their own.

    .. versionadded:: 0.1
    """


@hookspec
def qwenlayers_prepare_runtime(platform: Platform, workdir: Path) -> dict[str, str] | None:
    """Return environment variables of the pypto worker process for ``platform``.

    When it is called: before the runtime starts a worker process that imports pypto (pypto
    0.2.0 fixes its target at import time, so each platform gets its own process). ``workdir``
    is a persistent per-platform cache folder the plugin may write into (config files, a
    package overlay); it is the same across calls for one pypto version.

    All results are merged: the core's built-in plugin answers first for every sim platform
    (the pypto ini of the descriptor's arch, cores and buffers, and its cost-model config, see
    ``qwenlayers.runtime.pypto_target``), then each other implementation's variables are laid
    over it (``PYTHONPATH`` entries are prepended, other names replaced). A target plugin
    implements this only for what its descriptor cannot say.

    :param platform: the selected platform's descriptor.
    :param workdir: the platform's persistent cache folder.
    :returns: environment variables to add for the worker (str to str), or None for none.

    Implement in: the core's built-in plugin; a target or override plugin that needs more.

    .. versionchanged:: 0.3 results are merged over the built-in plugin's (was ``firstresult``).
    """


@hookspec(firstresult=True)
def qwenlayers_collective_backend(platform: Platform) -> str | None:
    """Name the ``torch.distributed`` backend that tensor-parallel ranks on ``platform`` use for
    the layer's two all-reduces.

    When it is called: when a tensor-parallel run (``qwenlayers run --tp N``,
    ``qwenlayers.decode_tp``) starts its ranks on the selected platform. The core never names a
    backend; a platform without an answer cannot run tensor parallel (a PlatformError says so).

    Stops at first non-None result.

    :param platform: the selected platform's descriptor.

    :returns: a backend name ``torch.distributed.init_process_group`` accepts (a CPU backend
        for simulated ranks, the device's collective library for NPU ranks), or None to defer.

    Implement in: the target plugin.

    .. versionadded:: 0.2
    """
