"""Registry behaviour with fake plugins: isolation, duplicates, selection, switches, laziness."""

import subprocess
import sys
import types
from dataclasses import replace

import pytest

from qwenlayers import hookimpl
from qwenlayers.core.platform import Availability
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.errors import DuplicatePlatformError, PlatformUnavailableError, PluginLoadError, UnknownPlatformError
from qwenlayers.registry import PlatformRegistry, get_registry


class FakeDist:
    def __init__(self, name, version="9.9"):
        self.metadata = {"Name": name}
        self.version = version


class FakeEP:
    def __init__(self, name, target, dist):
        self.name, self.value, self.dist, self._target = name, f"fake:{name}", FakeDist(dist), target

    def load(self):
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def plugin_for(name, base="a5sim", ok=True, tile=None):
    base_platform = get_registry().get(base)
    platform = replace(base_platform, name=name, probe=lambda: Availability(ok, "fake probe says " + ("yes" if ok else "no NPU here")))
    mod = types.ModuleType(f"fake_{name}")

    @hookimpl
    def qwenlayers_platform():
        return platform

    mod.qwenlayers_platform = qwenlayers_platform
    if tile is not None:

        @hookimpl
        def qwenlayers_tiling_defaults(platform, config, phase):
            return TilingPlan(phase, 4, 128, 64, 64, 64, 1, tile, source=f"plugin {name}")

        mod.qwenlayers_tiling_defaults = qwenlayers_tiling_defaults
    return mod


def registry_with(*eps):
    return PlatformRegistry(entry_points=lambda: list(eps)).load()


def test_broken_plugin_is_isolated_and_named():
    reg = registry_with(
        FakeEP("good", plugin_for("good"), "acme-good"),
        FakeEP("bad", ImportError("No module named 'acme_bad_dep'"), "acme-bad"),
    )
    assert reg.names() == ["good"]
    bad = [r for r in reg.records() if r.name == "bad"][0]
    assert bad.status == "broken" and "acme_bad_dep" in bad.error
    with pytest.raises(PluginLoadError, match="error loading platform plugin 'bad' from acme-bad 9.9: import of fake:bad failed") as info:
        reg.get("bad")
    assert isinstance(info.value.__cause__, ImportError)
    assert reg.get("good").name == "good"


def test_duplicate_names_both_distributions():
    reg = registry_with(FakeEP("x", plugin_for("x"), "acme-x"), FakeEP("x", plugin_for("x"), "other-x"))
    with pytest.raises(DuplicatePlatformError, match="provided by acme-x 9.9 and by other-x 9.9"):
        reg.get("x")


def test_entry_point_name_must_match_platform():
    reg = registry_with(FakeEP("y", plugin_for("z"), "acme-y"))
    (record,) = [r for r in reg.records() if r.name == "y"]
    assert "describes platform 'z'" in record.error


def test_selection_order(monkeypatch):
    reg = registry_with(*(FakeEP(n, plugin_for(n), f"d-{n}") for n in ("a5sim", "envpick", "explicit")))
    monkeypatch.delenv("QWENLAYERS_PLATFORM", raising=False)
    assert reg.select().name == "a5sim"
    monkeypatch.setenv("QWENLAYERS_PLATFORM", "envpick")
    assert reg.select().name == "envpick"
    assert reg.select("explicit").name == "explicit"


def test_unknown_lists_installed_and_unavailable_says_why():
    reg = registry_with(FakeEP("ok", plugin_for("ok"), "d-ok"), FakeEP("off", plugin_for("off", ok=False), "d-off"))
    with pytest.raises(UnknownPlatformError, match=r"unknown platform 'a6'. Installed: off, ok"):
        reg.select("a6")
    with pytest.raises(PlatformUnavailableError, match="fake probe says no NPU here. Usable here: ok"):
        reg.select("off", require_available=True)


def test_disable_switch(monkeypatch):
    monkeypatch.setenv("QWENLAYERS_DISABLE_PLUGINS", "d-b")
    reg = registry_with(FakeEP("a", plugin_for("a"), "d-a"), FakeEP("b", plugin_for("b"), "d-b"))
    assert reg.names() == ["a"]
    with pytest.raises(UnknownPlatformError, match="disabled by QWENLAYERS_DISABLE_PLUGINS"):
        reg.get("b")


def test_per_platform_hooks_only_reach_their_plugin():
    reg = registry_with(FakeEP("p1", plugin_for("p1", tile=32), "d1"), FakeEP("p2", plugin_for("p2", tile=16), "d2"))
    from qwenlayers.core.config import preset

    assert reg.tiling_defaults(reg.get("p1"), preset("tiny"), "decode").seq_tile == 32
    assert reg.tiling_defaults(reg.get("p2"), preset("tiny"), "decode").seq_tile == 16


def test_in_process_register_and_unregister():
    reg = registry_with()
    reg.register(plugin_for("mine"), name="mine")
    assert reg.names() == ["mine"]
    reg.unregister("mine")
    assert reg.names() == []


def test_loading_plugins_imports_no_pypto():
    code = (
        "import sys; from qwenlayers.registry import get_registry; r = get_registry(); "
        "[p.available() for p in map(r.get, r.names())]; "
        "assert 'pypto' not in sys.modules, 'pypto imported'; assert 'torch_npu' not in sys.modules; print(r.names())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "a5sim" in out and "a2a3sim" in out


def test_installed_plugins_honour_the_contract():
    from qwenlayers.testing import check_plugin

    reg = get_registry()
    assert {"a2a3", "a5", "a2a3sim", "a5sim"} <= set(reg.names())
    for name in reg.names():
        assert check_plugin(reg, name) == []
