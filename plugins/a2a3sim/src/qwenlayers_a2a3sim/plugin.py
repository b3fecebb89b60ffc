"""a2a3sim: the a2a3 target's facts, run by pypto's cost model and tensor-graph interpreter.

pypto's own ini is already the 910B's; the cost model of 24 / 48 cores comes from the descriptor
through the core's built-in plugin."""

from __future__ import annotations

from qwenlayers_a2a3 import figures

from qwenlayers.plugin_kit import TargetPlugin, sim_variant


class A2A3SimPlugin(TargetPlugin):
    platform = sim_variant(
        figures.A2A3, "a2a3sim",
        description="Ascend A2/A3 (910B class) simulated on the CPU: pypto SIM cost model + tensor-graph values",
    )
    anchors = figures.ANCHORS
    collective_backend = "gloo"  # simulated ranks are CPU processes


plugin = A2A3SimPlugin()
