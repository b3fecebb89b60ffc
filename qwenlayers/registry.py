"""Platform plugin discovery, isolation and selection.

Discovery iterates the ``qwenlayers.platforms`` entry points itself instead of calling pluggy's
``load_setuptools_entrypoints``: each entry point is loaded in isolation, so one broken plugin
becomes a visible ``broken`` record (distribution, version, error) while the others stay usable.
Nothing is scanned at ``import qwenlayers``; the default registry is built on first use.

Switches (as pytest's ``-p no:`` and llm's ``LLM_LOAD_PLUGINS``):

* ``QWENLAYERS_DISABLE_PLUGINS=a,b`` skips plugins by entry-point or distribution name;
* ``QWENLAYERS_LOAD_PLUGINS=a,b`` loads only those (empty string: none).

Per-platform hooks are called one implementation at a time (in pluggy's order: last registered
first, ``tryfirst``/``trylast`` honoured) so that an implementation that raises or returns a
wrong type is named: an override plugin (no platform of its own) is then isolated as a broken
record, with a warning, and the call goes on without it, because it takes part in every
platform's calls; a target plugin's failure is a :class:`PluginHookError` for its own platform
only. A :class:`QwenlayersError` a hook raises on purpose passes through unchanged. Hook
wrappers are refused at registration, since they cannot be called one at a time.
"""

from __future__ import annotations

import difflib
import os
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from qwenlayers.core import hookspecs
from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.platform import PHASES, Phase, Platform
from qwenlayers.core.tiling import TilingPlan, check_plan
from qwenlayers.core.workarounds import Workaround, WorkaroundSet
from qwenlayers.errors import (
    DuplicatePlatformError,
    InputError,
    PlatformUnavailableError,
    PluginHookError,
    PluginLoadError,
    QwenlayersError,
    TilingError,
    UnknownPlatformError,
)
from qwenlayers.runtime import builtin_plugin
from qwenlayers.runtime.pyptoenv import layered_env

ENTRY_POINT_GROUP = "qwenlayers.platforms"
ENV_PLATFORM = "QWENLAYERS_PLATFORM"
ENV_BUDGETS = "QWENLAYERS_BUDGETS"
ENV_DISABLE = "QWENLAYERS_DISABLE_PLUGINS"
ENV_LOAD = "QWENLAYERS_LOAD_PLUGINS"
DEFAULT_PLATFORM = "a5sim"


def _is_workaround_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(w, Workaround) for w in value)


def _is_env(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


#: What each per-platform hook may return besides None. Checked at every call, so a wrong type
#: is reported against the plugin that returned it, not as an AttributeError deep in the core.
HOOK_RETURNS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "qwenlayers_tiling_defaults": (lambda v: isinstance(v, TilingPlan), "a TilingPlan"),
    "qwenlayers_workarounds": (_is_workaround_list, "a list of Workaround records"),
    "qwenlayers_prepare_runtime": (_is_env, "a dict of str names to str values"),
    "qwenlayers_collective_backend": (lambda v: isinstance(v, str), "a backend name (str)"),
}


def _short(value: Any) -> str:
    """A wrong return value for a message: its type and a bounded repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '…' if len(text) > 80 else text}"


@dataclass
class PluginRecord:
    """What the registry knows about one plugin, loaded or not."""

    name: str  # entry-point name (= platform name)
    dist: str  # distribution that provides it
    version: str
    target: str  # "module:attr" of the entry point
    status: str = "ok"  # ok | broken | disabled | duplicate
    platform: Platform | None = None
    plugin: Any = None
    error: str = ""
    cause: BaseException | None = None

    @property
    def label(self) -> str:
        return f"{self.dist} {self.version}".strip()


def _csv_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


class PlatformRegistry:
    """Loads platform plugins lazily and answers per-platform hook calls."""

    def __init__(self, *, group: str = ENTRY_POINT_GROUP, entry_points: Callable[[], Iterable[Any]] | None = None) -> None:
        self.group = group
        self._entry_points = entry_points or (lambda: metadata.entry_points(group=self.group))
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._records: dict[str, list[PluginRecord]] = {}
        self._loaded = False

    # ------------------------------------------------------------------ loading
    def load(self) -> "PlatformRegistry":
        if self._loaded:
            return self
        self._loaded = True
        # the core's own answers (pypto 0.2.0's workarounds, the descriptor-driven runtime), first,
        # so every plugin's implementations are called before it (pluggy: last registered first)
        self._register(PluginRecord(builtin_plugin.NAME, builtin_plugin.DIST, "", builtin_plugin.__name__), builtin_plugin)
        disabled = _csv_env(ENV_DISABLE) or set()
        allowed = _csv_env(ENV_LOAD)
        for ep in sorted(self._entry_points(), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "<unknown>"
            version = dist.version if dist is not None else ""
            record = PluginRecord(ep.name, dist_name, version, ep.value)
            if ep.name in disabled or dist_name in disabled or (allowed is not None and ep.name not in allowed and dist_name not in allowed):
                record.status = "disabled"
                record.error = f"disabled by {ENV_DISABLE if allowed is None else ENV_LOAD}"
                self._add(record)
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - any import failure must stay contained
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self._broken(record, f"import of {ep.value} failed: {type(exc).__name__}: {exc}", exc)
                continue
            self._register(record, plugin)
        return self

    def register(self, plugin: Any, *, name: str | None = None, dist: str = "<in-process>", version: str = "") -> PluginRecord:
        """Register a plugin object in process (tests, notebooks, override plugins).

        A plugin whose ``qwenlayers_platform`` returns None (or that has none) is an override
        plugin: it takes part in every platform's hook calls.
        """
        self.load()
        record = PluginRecord(name or getattr(plugin, "__name__", repr(plugin)), dist, version, repr(plugin))
        self._register(record, plugin)
        return record

    def unregister(self, name: str) -> None:
        for record in self._records.pop(name, []):
            if record.plugin is not None and self.pm.is_registered(record.plugin):
                self.pm.unregister(record.plugin)
        for records in self._records.values():  # a duplicate may become unique again
            ok = [r for r in records if r.status in ("ok", "duplicate")]
            if len(ok) == 1:
                ok[0].status, ok[0].error = "ok", ""

    def _register(self, record: PluginRecord, plugin: Any) -> None:
        try:
            self.pm.register(plugin, name=f"{record.dist}:{record.name}:{id(plugin)}")
            self.pm.check_pending()
            _refuse_wrappers(self.pm, plugin)
            described = getattr(plugin, "qwenlayers_platform", None)
            platform = described() if callable(described) else None
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._broken(record, f"{type(exc).__name__}: {exc}", exc)
            return
        record.plugin = plugin
        if platform is None:
            record.status = "builtin" if plugin is builtin_plugin else "override"
            self._add(record)
            return
        if not isinstance(platform, Platform):
            self.pm.unregister(plugin)
            self._broken(record, f"qwenlayers_platform() returned {type(platform).__name__}, expected a Platform", None)
            return
        if record.dist != "<in-process>" and platform.name != record.name:
            self.pm.unregister(plugin)
            self._broken(record, f"entry point is named {record.name!r} but the plugin describes platform {platform.name!r}", None)
            return
        record.name = platform.name
        record.platform = platform
        self._add(record)

    def _broken(self, record: PluginRecord, message: str, exc: BaseException | None) -> None:
        record.status = "broken"
        record.error = message
        record.cause = exc
        if exc is not None:
            record.error += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        self._add(record)

    def _owner(self, plugin: Any) -> PluginRecord:
        """The record of a registered plugin object (every registered plugin has one)."""
        for records in self._records.values():
            for record in records:
                if record.plugin is plugin:
                    return record
        raise LookupError(f"plugin {plugin!r} is registered with pluggy but unknown to the registry")

    def _add(self, record: PluginRecord) -> None:
        same = self._records.setdefault(record.name, [])
        same.append(record)
        live = [r for r in same if r.status in ("ok", "duplicate")]
        if len(live) > 1:
            for r in live:
                r.status = "duplicate"
                r.error = "platform {!r} is also provided by {}".format(
                    record.name, ", ".join(o.label for o in live if o is not r)
                )

    # ------------------------------------------------------------------ queries
    def records(self) -> list[PluginRecord]:
        self.load()
        return [r for name in sorted(self._records) for r in self._records[name]]

    def names(self) -> list[str]:
        """Names of the platforms that loaded cleanly."""
        return [r.name for r in self.records() if r.status == "ok"]

    def record(self, name: str) -> PluginRecord:
        self.load()
        records = self._records.get(name, [])
        live = [r for r in records if r.status in ("ok", "duplicate")]
        if len(live) > 1:
            labels = " and by ".join(r.label for r in live)
            raise DuplicatePlatformError(
                f"platform {name!r} is provided by {labels}; uninstall one or block it with "
                f"{ENV_DISABLE}={live[-1].dist}"
            )
        if live:
            return live[0]
        broken = [r for r in records if r.status == "broken"]
        if broken:
            r = broken[0]
            raise PluginLoadError(
                f"error loading platform plugin {name!r} from {r.label}: {r.error.splitlines()[0]}"
            ) from r.cause
        known = self._describe_installed()
        disabled = [r for r in records if r.status == "disabled"]
        if disabled:
            raise UnknownPlatformError(f"platform {name!r} is {disabled[0].error}. Installed: {known}")
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = (f"Did you mean {close[0]!r}?" if close else
                "Install a target plugin, e.g. `pip install 'qwenlayers[a5sim]'`, or from a checkout "
                "`pip install -e plugins/<target>` (built wheels: `pip install --find-links dist qwenlayers-<target>`)")
        raise UnknownPlatformError(f"unknown platform {name!r}. Installed: {known}. {hint}; see `qwenlayers platforms`.")

    def _describe_installed(self) -> str:
        parts = []
        for r in self.records():
            if r.status == "ok":
                parts.append(r.name)
            elif r.status in ("broken", "duplicate", "disabled"):
                parts.append(f"{r.name} ({r.status}, see `qwenlayers platforms`)")
        return ", ".join(parts) or "none"

    def get(self, name: str) -> Platform:
        record = self.record(name)
        assert record.platform is not None
        return record.platform

    def select(self, explicit: str | None = None, *, require_available: bool = False, budgets: str | None = None) -> Platform:
        """Resolve the platform: explicit argument > $QWENLAYERS_PLATFORM > 'a5sim', under the
        budget set ``budgets`` (argument > $QWENLAYERS_BUDGETS > the plugin's own set)."""
        name = explicit or os.environ.get(ENV_PLATFORM) or DEFAULT_PLATFORM
        platform = self.get(name.strip()).with_budgets(budgets or os.environ.get(ENV_BUDGETS) or None)
        if require_available:
            availability = platform.available()
            if not availability.ok:
                raise PlatformUnavailableError(
                    f"platform {platform.name} is installed but not usable here: {availability.reason}. "
                    f"Usable here: {', '.join(n for n in self.names() if self.get(n).available().ok) or 'none'}"
                )
        return platform

    # ------------------------------------------------------------------ per-platform hooks
    def _caller(self, hook: str, platform: Platform):
        others = [
            r.plugin
            for rs in self._records.values()
            for r in rs
            if r.plugin is not None and r.platform is not None and r.name != platform.name
        ]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def hooks_of(self, name: str) -> list[str]:
        record = self.record(name)
        return sorted(h.name for h in (self.pm.get_hookcallers(record.plugin) or []))

    def _call(self, hook: str, *, firstresult: bool, **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        """The non-None results of ``hook``'s implementations for ``kwargs["platform"]``, each with
        the record of the plugin that gave it, called one at a time in pluggy's order (the first
        only, when ``firstresult``), so that a failing one is named and, for an override plugin,
        isolated (see the module docstring)."""
        platform: Platform = kwargs["platform"]
        results = []
        for impl in reversed(self._caller(hook, platform).get_hookimpls()):
            value = self._call_one(impl, hook, platform, kwargs)
            if value is None:
                continue
            results.append((self._owner(impl.plugin), value))
            if firstresult:
                break
        return results

    def _call_one(self, impl: Any, hook: str, platform: Platform, kwargs: dict[str, Any]) -> Any:
        """One implementation's result, checked against :data:`HOOK_RETURNS`; None when it
        deferred or was isolated."""
        try:
            value = impl.function(*(kwargs[name] for name in impl.argnames))
        except QwenlayersError:
            raise  # raised on purpose: already a clear message
        except Exception as exc:  # noqa: BLE001 - a plugin bug must name the plugin
            self._hook_failed(self._owner(impl.plugin), hook, platform, f"raised {type(exc).__name__}: {exc}", exc)
            return None
        if value is not None and not HOOK_RETURNS[hook][0](value):
            self._hook_failed(self._owner(impl.plugin), hook, platform, f"returned {_short(value)}", None)
            return None
        return value

    def _hook_failed(self, record: PluginRecord, hook: str, platform: Platform, what: str, exc: BaseException | None) -> None:
        """Report a hook implementation that failed at call time, as an import failure is: an
        override plugin becomes a broken record, leaves pluggy and the call goes on (a warning
        says so); a target plugin's failure is a PluginHookError (its platform cannot work
        without its answer, the other platforms are untouched)."""
        in_process = record.dist == "<in-process>"
        kind = "override plugin" if record.platform is None else "platform plugin"
        origin = "registered in process" if in_process else f"from {record.label}"
        message = (f"{kind} {record.name!r} ({origin}): hook {hook} {what} when called for platform {platform.name}; "
                   f"it must return {HOOK_RETURNS[hook][1]} or None, and not raise")
        remedy = (f"fix it or unregister it (registry.unregister({record.name!r}))" if in_process
                  else f"fix or upgrade {record.dist}, or block it with {ENV_DISABLE}={record.dist}")
        if record.status == "builtin":  # the core's own: a bug to report, never skipped silently
            raise PluginHookError(f"{message}. This is a qwenlayers bug; please report it with this message") from exc
        if record.platform is not None:
            raise PluginHookError(f"{message}. Platform {platform.name} cannot be used until then: {remedy}") from exc
        if self.pm.is_registered(record.plugin):
            self.pm.unregister(record.plugin)
        record.status, record.error, record.cause = "broken", message, exc
        if exc is not None:
            record.error += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        warnings.warn(f"{message}. It is skipped from now on; {remedy}", RuntimeWarning, stacklevel=5)

    def tiling_defaults(self, platform: Platform, config: Qwen3Config, phase: Phase) -> TilingPlan:
        """The plugin's default plan, validated against the platform before it is returned."""
        if phase not in PHASES:
            raise InputError(f"phase={phase!r}; allowed: {', '.join(PHASES)}")
        found = self._call("qwenlayers_tiling_defaults", firstresult=True, platform=platform, config=config, phase=phase)
        if not found:
            raise TilingError(f"no plugin gives a tiling for {config.name} {phase} on {platform.name}; pass plan= explicitly")
        owner, plan = found[0]
        if not plan.source:  # named after the distribution that answered, from its entry point
            plan = replace(plan, source=f"plugin {owner.dist}")
        plan = plan.with_defaults_marked()
        try:
            check_plan(plan, config, platform)
        except TilingError as exc:
            raise TilingError(f"default plan of {self.record(platform.name).label}: {exc}") from exc
        return plan

    def workarounds(self, platform: Platform) -> WorkaroundSet:
        results = self._call("qwenlayers_workarounds", firstresult=False, platform=platform)
        return WorkaroundSet(w for _, batch in reversed(results) for w in batch)  # the built-in's first

    def collective_backend(self, platform: Platform) -> str:
        """The torch.distributed backend of tensor-parallel ranks on ``platform`` (its plugin's choice)."""
        found = self._call("qwenlayers_collective_backend", firstresult=True, platform=platform)
        backend = found[0][1] if found else None
        if not backend:
            raise PlatformUnavailableError(f"{self.record(platform.name).label} names no collective backend "
                                "(hook qwenlayers_collective_backend), so it cannot run tensor parallel")
        return str(backend)

    def prepare_runtime(self, platform: Platform, workdir: Path) -> dict[str, str]:
        """The worker's variables: the built-in plugin's, with every other answer laid over them
        (``PYTHONPATH`` entries prepended, other names replaced; see the hookspec)."""
        env: dict[str, str] = {}
        for _, answer in reversed(self._call("qwenlayers_prepare_runtime", firstresult=False, platform=platform,
                                             workdir=workdir)):
            env = layered_env(env, answer)
        return env


def _refuse_wrappers(pm: pluggy.PluginManager, plugin: Any) -> None:
    """Refuse hook wrappers: per-platform hooks are called one implementation at a time (to
    name a failing one), which a wrapper around the others cannot take part in."""
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                raise PluginLoadError(f"hook {caller.name} is a hook wrapper; qwenlayers hooks take plain "
                                      "implementations only (use tryfirst=True to run first)")


_default: PlatformRegistry | None = None


def get_registry() -> PlatformRegistry:
    """The process-wide registry, built on first use."""
    global _default
    if _default is None:
        _default = PlatformRegistry().load()
    return _default

