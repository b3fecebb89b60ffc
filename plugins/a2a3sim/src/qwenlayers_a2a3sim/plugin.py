"""a2a3sim: the a2a3 target's facts, run by pypto's cost model and tensor-graph interpreter."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qwenlayers_a2a3 import figures

from qwenlayers.plugin_kit import TargetPlugin
from qwenlayers.runtime.probes import sim_probe
from qwenlayers.runtime.pypto_workarounds import PYPTO_020_SIM
from qwenlayers.runtime.pyptoenv import write_cost_model_config


class A2A3SimPlugin(TargetPlugin):
    dist = "qwenlayers-a2a3sim"
    platform = replace(
        figures.A2A3,
        name="a2a3sim",
        description="Ascend A2/A3 (910B class) simulated on the CPU: pypto SIM cost model + tensor-graph values",
        run_mode="sim",
        sim_arch="A2A3",
        probe=sim_probe,
    )
    anchors = figures.ANCHORS
    collective_backend = "gloo"  # simulated ranks are CPU processes
    workarounds = PYPTO_020_SIM

    def runtime_env(self, workdir: Path) -> dict[str, str]:
        # pypto's own ini is already the A2A3 (Ascend910B1) one; only the cost model is set.
        config = write_cost_model_config(workdir / "tile_fwk_config.json", device_arch="A2A3")
        return {"TILEFWK_CONFIG_PATH": str(config)}


plugin = A2A3SimPlugin()
