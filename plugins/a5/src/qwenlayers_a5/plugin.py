"""Hook implementations of the a5 platform (imports nothing heavy)."""

from __future__ import annotations

from qwenlayers.plugin_kit import TargetPlugin
from qwenlayers.runtime.pypto_workarounds import PYPTO_020

from . import figures


class A5Plugin(TargetPlugin):
    dist = "qwenlayers-a5"
    platform = figures.A5
    anchors = figures.ANCHORS
    collective_backend = "hccl"  # HCCL through torch-npu on the device host
    workarounds = PYPTO_020  # on a device host pypto takes its arch from CANN: no runtime env


plugin = A5Plugin()
