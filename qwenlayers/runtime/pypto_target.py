"""What a platform descriptor means to pypto 0.2.0: the ini it compiles for, the cost model it is
simulated on, and the check that a run got exactly that.

pypto 0.2.0 takes its compile arch only from ``<pypto>/lib/configs/A2A3.ini`` (the file name is
fixed) and its cost model from the JSON named by ``TILEFWK_CONFIG_PATH``. Both are written here
from the descriptor, so every sim plugin, in-tree or not, gets the same treatment and none has
to know these details (workaround ``pypto-ini-overlay``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from qwenlayers.core.platform import Platform
from qwenlayers.errors import KernelError, PlatformUnavailableError
from qwenlayers.runtime.paths import cache_dir
from qwenlayers.runtime.pyptoenv import make_ini_overlay, pypto_dir, pypto_version, write_cost_model_config

#: The cost model simulates AI cores in machines of 4 cube and 8 vector cores (pypto 0.2.0,
#: ``Model.aicpuMachineNumber``): 7 machines are the A5's 28 / 56, 6 the 910B's 24 / 48.
CUBE_PER_MACHINE, VECTOR_PER_MACHINE = 4, 8


def platform_workdir(platform: Platform) -> Path:
    """Persistent per-platform folder its runtime is prepared in (per pypto version)."""
    return cache_dir("platforms", platform.name, f"pypto-{pypto_version() or 'none'}")


@functools.lru_cache(maxsize=1)
def installed_ini() -> str:
    """The platform ini pypto ships (read once: the installed package does not change under a process)."""
    return (pypto_dir() / "lib" / "configs" / "A2A3.ini").read_text()


def _npuarch_number(arch: str) -> str:
    m = re.fullmatch(r"DAV_(\d+)", arch)
    if not m:
        raise PlatformUnavailableError(f"platform arch {arch!r} is not a pypto npuarch; allowed: DAV_<digits>, e.g. DAV_2201, DAV_3510")
    return m.group(1)


def _set_key(text: str, section: str, key: str, value: str) -> str:
    """``key=value`` in ``[section]`` of ini ``text``: replaced in place, or added at the section's
    end; every other line is kept byte for byte (comments, order)."""
    lines, ending = text.splitlines(), "\n" if text.endswith("\n") else ""
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n[{section}]\n{key}={value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = f"{key}={value}"
            break
    else:
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, f"{key}={value}")
    return "\n".join(lines) + ending


def render_ini(platform: Platform) -> str:
    """pypto's platform ini for ``platform``: its ``pypto_ini`` (or pypto's own) with the
    descriptor's arch, core counts and buffer sizes put in."""
    text = platform.pypto_ini or installed_ini()
    b, c = platform.buffers, platform.cores
    for section, key, value in (
        ("version", "NpuArch", _npuarch_number(platform.arch)),
        ("SoCInfo", "ai_core_cnt", c.cube), ("SoCInfo", "cube_core_cnt", c.cube), ("SoCInfo", "vector_core_cnt", c.vector),
        ("AICoreSpec", "l0_a_size", b.l0a), ("AICoreSpec", "l0_b_size", b.l0b), ("AICoreSpec", "l0_c_size", b.l0c),
        ("AICoreSpec", "l1_size", b.l1), ("AICoreSpec", "ub_size", b.ub),
    ):
        text = _set_key(text, section, key, str(value))
    return text


def machines(platform: Platform) -> int:
    """Cost-model machines for the descriptor's cores; a count the cost model cannot simulate is refused."""
    c = platform.cores
    if c.cube <= 0 or c.cube % CUBE_PER_MACHINE or c.vector * CUBE_PER_MACHINE != c.cube * VECTOR_PER_MACHINE:
        raise PlatformUnavailableError(
            f"platform {platform.name}: {c.cube} cube / {c.vector} vector cores cannot be simulated; pypto 0.2.0's cost "
            f"model has machines of {CUBE_PER_MACHINE} cube + {VECTOR_PER_MACHINE} vector cores, so allowed: cube a "
            f"positive multiple of {CUBE_PER_MACHINE} and vector = 2 x cube (e.g. 20 / 40, 24 / 48, 28 / 56)")
    return c.cube // CUBE_PER_MACHINE


def _device_platform(ini: str) -> str | None:
    m = re.search(r"^SoC_version=Ascend(\S+)$", ini, re.M)
    return f"ASCEND_{m.group(1).upper()}" if m else None


def needs_overlay(platform: Platform) -> bool:
    """Whether the ini ``platform`` needs differs from the one pypto ships."""
    return render_ini(platform) != installed_ini()


def sim_runtime_env(platform: Platform, workdir: Path) -> dict[str, str]:
    """The worker environment that makes pypto compile for and simulate ``platform``: a copy of
    pypto with the descriptor's ini when pypto's own differs, and a cost-model config."""
    if not platform.sim_arch:
        raise PlatformUnavailableError(f"sim platform {platform.name} names no cost-model arch (Platform.sim_arch, e.g. A5 or A2A3)")
    ini = render_ini(platform)
    env: dict[str, str] = {}
    device_platform = None
    if ini != installed_ini():
        env["PYTHONPATH"] = str(make_ini_overlay(ini, workdir / "overlay"))
        device_platform = _device_platform(ini) if platform.pypto_ini else None
    config = write_cost_model_config(
        workdir / "tile_fwk_config.json", device_arch=platform.sim_arch, device_platform=device_platform,
        extra_args=[f"Model.aicpuMachineNumber={machines(platform)}"],
    )
    env["TILEFWK_CONFIG_PATH"] = str(config)
    return env


def check_target(platform: Platform, report: dict[str, Any]) -> None:
    """A run compiled or simulated for another target than ``platform`` describes is an error
    naming both (a plugin or pypto setting that did not take)."""
    got = report.get("npuarch")
    problems = []
    if got and got != platform.arch:
        problems.append(f"pypto compiled for {got}, the descriptor says {platform.arch}")
    if platform.run_mode == "sim":
        model = report.get("cost_model_arch")
        if model and model != platform.sim_arch:
            problems.append(f"the cost model simulated {model}, the descriptor says {platform.sim_arch}")
        lanes = report.get("lanes") or {}
        if lanes.get("AIC") and lanes["AIC"] != platform.cores.cube:
            problems.append(f"the cost model simulated {lanes['AIC']} cube cores, the descriptor says {platform.cores.cube}")
    if problems:
        raise KernelError(f"platform {platform.name}: " + "; ".join(problems) + ". The run's figures are not this "
                          "target's; check the plugin's runtime environment (qwenlayers_prepare_runtime) and "
                          "`qwenlayers platforms --details`")
