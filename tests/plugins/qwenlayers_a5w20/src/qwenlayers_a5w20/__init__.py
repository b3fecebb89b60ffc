"""What if the A5 had 20 cube cores and a 128 KB UB? Simulated with pypto's cost model."""
from dataclasses import replace

from qwenlayers_a5 import figures

from qwenlayers.plugin_kit import Cores, TargetPlugin, sim_variant


class A5W20(TargetPlugin):
    platform = sim_variant(
        figures.A5, "a5w20",
        description="what-if: an A5 with 20 cube / 40 vector cores and a 128 KB UB, simulated",
        cores=Cores(cube=20, vector=40, source="what-if"),
        buffers=replace(figures.BUFFERS, ub=128 * 1024, source="what-if"),  # budgets re-derived from it
    )
    anchors = figures.ANCHORS  # fitted down to the new budgets by the core
    collective_backend = "gloo"


plugin = A5W20()
