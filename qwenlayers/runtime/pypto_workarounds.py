"""Workarounds for pypto 0.2.0 itself, the same on every target; plugins include them in their
``qwenlayers_workarounds`` answer. Target-specific ones live in the plugins."""

from __future__ import annotations

from qwenlayers.core.workarounds import Workaround

SIM_VERIFY_REAL_INPUTS = Workaround(
    key="pypto-sim-verify-real-inputs",
    summary="the worker registers the real host tensors for pass verification, so SIM runs fill outputs in place",
    why=(
        "pypto 0.2.0 JitCallableWrapper._setup_verify_data registers CopyToHost copies, which without a device "
        "stay zero: the tensor-graph interpreter computes on zeros and the copy-back overwrites the inputs with zeros"
    ),
    upstream="none: pypto 0.2.0 frontend/parser/entry.py, SIM mode is not meant to return values",
    remove_when="pypto returns output values in SIM mode without patching (tests/test_smoke.py passes with the patch off)",
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

PYPTO_020 = [ONE_AXIS_BROADCAST, NO_COND_IN_JIT, LOOP_RESULTS_THROUGH_GM]
PYPTO_020_SIM = [SIM_VERIFY_REAL_INPUTS, *PYPTO_020]
