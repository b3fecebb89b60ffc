"""Neutral helpers a sim platform plugin uses to point pypto 0.2.0 at its target.

pypto 0.2.0 takes its compile arch *only* from ``<pypto>/lib/configs/A2A3.ini`` next to its
shared libraries (the file name is fixed; ``PLATFORM_CONFIG_PATH`` is never read), and its cost
model arch from the legacy JSON named by ``TILEFWK_CONFIG_PATH``. So a plugin that targets
another arch gets a copy of the package with its own ini (an overlay put first on PYTHONPATH)
and its own cost-model JSON. Neither helper imports pypto.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from qwenlayers.errors import PlatformUnavailableError
from qwenlayers.runtime.paths import file_lock

SUPPORTED_PYPTO = ("0.2.0",)


def pypto_dir() -> Path:
    """The installed pypto package folder, found without importing it."""
    spec = importlib.util.find_spec("pypto")
    if spec is None or spec.origin is None:
        raise PlatformUnavailableError("pypto is not installed; install it with `pip install pypto==0.2.0`")
    return Path(spec.origin).parent


def pypto_version() -> str:
    try:
        return metadata.version("pypto")
    except metadata.PackageNotFoundError:
        return ""


def check_pypto() -> str | None:
    """None when a supported pypto is installed, else the reason it is not usable."""
    version = pypto_version()
    if not version:
        return "pypto is not installed (pip install pypto==0.2.0)"
    if version not in SUPPORTED_PYPTO:
        return f"pypto {version} is installed; qwenlayers supports {', '.join(SUPPORTED_PYPTO)}"
    return None


def layered_env(base: Mapping[str, str], over: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``over``'s variables laid on top: ``PYTHONPATH`` entries are prepended (an
    overlay package must be found first), every other name is replaced."""
    env = dict(base)
    for key, value in over.items():
        env[key] = value + os.pathsep + env[key] if key == "PYTHONPATH" and env.get(key) else value
    return env


def make_ini_overlay(ini_text: str, dest: Path) -> Path:
    """A copy of the pypto package under ``dest`` whose ``lib/configs/A2A3.ini`` is ``ini_text``.

    Returns the folder to put first on PYTHONPATH. Built once per pypto version (the copy is
    about 26 MB), under a lock so parallel workers do not race.
    """
    src = pypto_dir()
    marker = dest / f".built-{pypto_version()}"
    ini_path = dest / "pypto" / "lib" / "configs" / "A2A3.ini"
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if not (marker.exists() and ini_path.exists() and ini_path.read_text() == ini_text):
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            shutil.copytree(src, dest / "pypto", ignore=shutil.ignore_patterns("__pycache__"))
            ini_path.write_text(ini_text)
            marker.write_text(str(src))
    return dest


def write_cost_model_config(
    path: Path,
    *,
    device_arch: str,
    device_platform: str | None = None,
    extra_args: Iterable[str] = (),
) -> Path:
    """Write pypto's legacy tile_fwk_config.json with the cost model set to ``device_arch``.

    The swim-lane helper scripts are switched off (``drawPngThresholdCycle=0``): they need
    matplotlib and cost seconds; the Perfetto trace is written regardless.
    """
    src = pypto_dir() / "lib" / "configs" / "tile_fwk_config.json"
    data = json.loads(src.read_text())
    args = [
        a
        for a in data["global"]["simulation"]["args"]
        if not a.startswith(("Model.deviceArch=", "Model.drawPngThresholdCycle="))
    ]
    args += [f"Model.deviceArch={device_arch}", "Model.drawPngThresholdCycle=0", *extra_args]
    data["global"]["simulation"]["args"] = args
    if device_platform:
        data["global"]["platform"]["device_platform"] = device_platform
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
