"""Hook implementations of the a5 platform (imports nothing heavy)."""

from __future__ import annotations

from qwenlayers.plugin_kit import TargetPlugin

from . import figures


class A5Plugin(TargetPlugin):
    platform = figures.A5
    anchors = figures.ANCHORS
    collective_backend = "hccl"  # HCCL through torch-npu on the device host


plugin = A5Plugin()
