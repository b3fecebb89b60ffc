"""Hook implementations of the a2a3 platform (imports nothing heavy)."""

from __future__ import annotations

from qwenlayers.plugin_kit import TargetPlugin

from . import figures


class A2A3Plugin(TargetPlugin):
    platform = figures.A2A3
    anchors = figures.ANCHORS
    collective_backend = "hccl"  # HCCL through torch-npu on the device host


plugin = A2A3Plugin()
