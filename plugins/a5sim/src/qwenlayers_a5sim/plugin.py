"""a5sim: the a5 target's facts, run by pypto's cost model and tensor-graph interpreter.

Everything that makes pypto compile for and simulate the A5 (its ini, the cost model of 28 / 56
cores) comes from the descriptor through the core's built-in plugin; this module holds facts."""

from __future__ import annotations

from qwenlayers_a5 import figures

from qwenlayers.plugin_kit import TargetPlugin, Workaround, sim_variant

A5_ROPE_VERIFY = Workaround(
    key="pypto-a5-rope-codegenpreproc-verify",
    summary="a missing Pass_40_CodegenPreproc verification row on A5 is reported, not treated as a failure; "
    "outputs are still compared with the golden",
    why="pypto 0.2.0 on DAV_3510: interpreting the RoPE kernel's CodegenPreproc pass throws "
    "'Errcode: FB1002!' (INVALID_INPLACE_CHAIN) into verify_exception.log; the output is still correct",
    upstream="none: observed with pypto 0.2.0 (docs/platforms.md)",
    remove_when="a RoPE kernel verifies all default passes on a5sim without a verify_exception.log",
)


class A5SimPlugin(TargetPlugin):
    platform = sim_variant(
        figures.A5, "a5sim",
        description="Ascend A5 (950 class) simulated on the CPU: pypto SIM cost model + tensor-graph values",
    )
    anchors = figures.ANCHORS
    collective_backend = "gloo"  # simulated ranks are CPU processes
    workarounds = (A5_ROPE_VERIFY,)


plugin = A5SimPlugin()
