"""Hook implementations of the a2a3 platform (imports nothing heavy)."""

from __future__ import annotations

from qwenlayers.plugin_kit import TargetPlugin
from qwenlayers.runtime.pypto_workarounds import PYPTO_020

from . import figures


class A2A3Plugin(TargetPlugin):
    dist = "qwenlayers-a2a3"
    platform = figures.A2A3
    anchors = figures.ANCHORS
    collective_backend = "hccl"  # HCCL through torch-npu on the device host
    workarounds = PYPTO_020  # on a device host pypto takes its arch from CANN: no runtime env


plugin = A2A3Plugin()
