"""What if the 910B had half its L1 and 16 cube cores? Simulated with pypto's cost model."""
from dataclasses import replace

from qwenlayers_a2a3 import figures

from qwenlayers.plugin_kit import Cores, TargetPlugin, sim_variant


class A2A3L1(TargetPlugin):
    platform = sim_variant(
        figures.A2A3, "a2a3l1",
        description="what-if: a 910B with a 256 KB L1 and 16 cube / 32 vector cores, simulated",
        cores=Cores(cube=16, vector=32, source="what-if"),
        buffers=replace(figures.BUFFERS, l1=256 * 1024, source="what-if"),
    )
    anchors = figures.ANCHORS
    collective_backend = "gloo"


plugin = A2A3L1()
