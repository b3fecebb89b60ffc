"""Workarounds for pypto 0.2.0 itself, the same on every target. The built-in plugin
(:mod:`qwenlayers.runtime.builtin_plugin`) declares them for every platform, so no target plugin
copies them; target-specific records live in the plugins."""

from __future__ import annotations

from qwenlayers.core.workarounds import Workaround

SIM_VERIFY_REAL_INPUTS = Workaround(
    key="pypto-sim-verify-real-inputs",
    kind="switch",
    summary="the worker registers the real host tensors for pass verification, so SIM runs fill outputs in place",
    why=(
        "pypto 0.2.0 JitCallableWrapper._setup_verify_data registers CopyToHost copies, which without a device "
        "stay zero: the tensor-graph interpreter computes on zeros and the copy-back overwrites the inputs with zeros"
    ),
    upstream="none: pypto 0.2.0 frontend/parser/entry.py, SIM mode is not meant to return values",
    remove_when="pypto returns output values in SIM mode without patching (tests/test_smoke.py passes with the patch off)",
)

SIM_TENSOR_GRAPH_VALUES = Workaround(
    key="pypto-sim-tensor-graph-values",
    kind="switch",
    summary="an untimed SIM values run stops pypto's compile at the tensor graph and reads the interpreter's results "
    "of the output arguments from its verification dumps",
    why=(
        "pypto 0.2.0 fills a SIM run's outputs only in CostModelRunOnceDataFromHost, which returns at once unless "
        "compile_stage is ALL_COMPLETE; the values come from the tensor-graph interpreter (Program::VerifyTensorGraph, "
        "run when the function is recorded, before any pass), so the passes, codegen and cost model of a full compile "
        "add nothing to them. The interpreter writes argument k to verify_*/tensor_graph/*~k~<ts>.data when a golden "
        "is registered for k"
    ),
    upstream="none: pypto 0.2.0 python/src/bindings/cost_model.cpp and framework/src/interface/program/recorder.cpp",
    remove_when="a SIM run with compile_stage=TENSOR_GRAPH fills its output arguments itself (tests/test_tensor_graph_values.py "
    "then passes with the read-back off)",
)

INI_OVERLAY = Workaround(
    key="pypto-ini-overlay",
    kind="switch",
    summary="the worker imports a copy of pypto whose lib/configs/A2A3.ini is the descriptor's target (arch, cores, "
    "buffers), when it differs from the ini pypto ships",
    why="pypto 0.2.0 reads its compile arch only from <pypto>/lib/configs/A2A3.ini (PLATFORM_CONFIG_PATH is "
    "never read; set_global_config reaches neither the compiler nor the cost model)",
    upstream="pypto master adds per-SoC inis chosen by device_platform; not in 0.2.0",
    remove_when="the installed pypto selects its arch and buffers from a documented setting (the what-if plugin "
    "test still compiles for its own arch)",
)

ONE_AXIS_BROADCAST = Workaround(
    key="pypto-one-axis-broadcast",
    summary="builders broadcast along one axis per op (reshape first, then expand)",
    why="pypto 0.2.0 ExpandFunction: 'Errcode: FC0000! Only allow to expand one axis! Actual expanded axes count: 2'",
    upstream="none: CheckExpandTensorValid in pypto 0.2.0",
    remove_when="a [1,4,1] * [16,4,64] multiply compiles in the installed pypto",
)

NO_COND_IN_JIT = Workaround(
    key="pypto-no-cond-in-jit",
    summary="loop-carried accumulators use plain `if pypto.is_loop_begin(i)` instead of pypto.cond",
    why="pypto 0.2.0 frontend.jit: 'TypeError: Test condition must be a symbolic scalar or boolean, but got RecordIfBranch'",
    upstream="none: frontend parser of pypto 0.2.0",
    remove_when="`if pypto.cond(pypto.is_loop_begin(i)):` parses inside @pypto.frontend.jit",
)

LOOP_RESULTS_THROUGH_GM = Workaround(
    key="pypto-loop-results-through-gm",
    summary="a tensor written inside a pypto.loop and read after it is a kernel argument (GM workspace), not a pypto.tensor",
    why=(
        "pypto 0.2.0: the decode layer with its attention output in a local pypto.tensor assembled in the batch loop "
        "and reshaped for o_proj after it compiles, then the SIM run dies with SIGSEGV in "
        "DeviceSlotContext::FillInputOutputSlot (libtile_fwk_runtime_stub.so); the same data through an argument works"
    ),
    upstream="none: found building qwenlayers' decode kernel (pypto-lib reference 002 lost elements the same way)",
    remove_when="core/kernels/decode.py with `attn = pypto.tensor(...)` instead of the argument runs and matches the golden",
)

#: Notes: how the builders are written, on every target.
BUILDER_NOTES = (ONE_AXIS_BROADCAST, NO_COND_IN_JIT, LOOP_RESULTS_THROUGH_GM)
