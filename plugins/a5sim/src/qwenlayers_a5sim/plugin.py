"""a5sim: the a5 target's facts, run by pypto's cost model and tensor-graph interpreter."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qwenlayers_a5 import figures

from qwenlayers.core.workarounds import Workaround
from qwenlayers.plugin_kit import TargetPlugin
from qwenlayers.runtime.probes import sim_probe
from qwenlayers.runtime.pypto_workarounds import PYPTO_020_SIM
from qwenlayers.runtime.pyptoenv import make_ini_overlay, write_cost_model_config

A5_TARGET_SELECTION = Workaround(
    key="pypto-a5-target-selection",
    summary="the worker imports a copy of pypto whose lib/configs/A2A3.ini describes the A5 (NpuArch=3510), "
    "and a cost-model JSON with Model.deviceArch=A5 and 28/56 cores",
    why="pypto 0.2.0 reads its compile arch only from <pypto>/lib/configs/A2A3.ini (PLATFORM_CONFIG_PATH is "
    "never read; set_global_config reaches neither the compiler nor the cost model)",
    upstream="pypto master adds per-SoC inis chosen by device_platform; not in 0.2.0",
    remove_when="the installed pypto selects DAV_3510 from a documented setting (qwenlayers smoke still reports DAV_3510)",
)

A5_ROPE_VERIFY = Workaround(
    key="pypto-a5-rope-codegenpreproc-verify",
    summary="a missing Pass_40_CodegenPreproc verification row on A5 is reported, not treated as a failure; "
    "outputs are still compared with the golden",
    why="pypto 0.2.0 on DAV_3510: interpreting the RoPE kernel's CodegenPreproc pass throws "
    "'Errcode: FB1002!' (INVALID_INPLACE_CHAIN) into verify_exception.log; the output is still correct",
    upstream="none: observed with pypto 0.2.0 (shared/pypto-on-cpu.md section C)",
    remove_when="a RoPE kernel verifies all default passes on a5sim without a verify_exception.log",
)


class A5SimPlugin(TargetPlugin):
    dist = "qwenlayers-a5sim"
    platform = replace(
        figures.A5,
        name="a5sim",
        description="Ascend A5 (950 class) simulated on the CPU: pypto SIM cost model + tensor-graph values",
        run_mode="sim",
        sim_arch="A5",
        probe=sim_probe,
    )
    anchors = figures.ANCHORS
    collective_backend = "gloo"  # simulated ranks are CPU processes
    workarounds = (*PYPTO_020_SIM, A5_TARGET_SELECTION, A5_ROPE_VERIFY)

    def runtime_env(self, workdir: Path) -> dict[str, str]:
        overlay = make_ini_overlay(figures.A5_INI, workdir / "overlay")
        config = write_cost_model_config(
            workdir / "tile_fwk_config.json",
            device_arch="A5",
            device_platform="ASCEND_950PR_9579",
            extra_args=["Model.aicpuMachineNumber=7"],  # 7 x (4 AIC + 8 AIV) = the A5's 28/56 cores
        )
        return {"PYTHONPATH": str(overlay), "TILEFWK_CONFIG_PATH": str(config)}


plugin = A5SimPlugin()
