"""Hardware facts of the Ascend A2/A3 (910B) target, each with its source.

Also used by qwenlayers-a2a3sim, which simulates this same target on the CPU.
"""

from __future__ import annotations

from qwenlayers.plugin_kit import Buffers, Cores, Figure, Platform, derived_budgets, npu_probe, reference_anchors

INI = "pypto 0.2.0 lib/configs/A2A3.ini (Ascend910B1)"

BUFFERS = Buffers(ub=196608, l0a=65536, l0b=65536, l0c=131072, l1=524288, source=INI)
CORES = Cores(cube=24, vector=48, source=INI)
#: This target's own budget set: derived from its buffers (one vector op's three tiles plus a
#: 32 KB reserve in UB, 2 cube operand tiles in L0A/L0B) and checked against the stage sweep
#: at qwen3-32b shapes and the layer runs (docs/budgets.md,
#: benchmarks/results/budget_sweep.jsonl). pypto-lib's 2 KB / 16 KB stays available as "pypto-lib".
BUDGETS = derived_budgets("a2a3", BUFFERS, source="stage sweep on a2a3sim, docs/budgets.md")
HBM = Figure(1600.0, "GB/s", "Ascend 910B vendor material (HBM2e, ~1.6 TB/s), nominal, not measured")
BF16_PEAK = Figure(313.0, "TFLOP/s", "Atlas 800T A2 vendor material (~313 TFLOP/s FP16/BF16 dense), nominal")

A2A3 = Platform(
    name="a2a3",
    description="Ascend A2/A3 (910B class) NPU through CANN and torch_npu",
    arch="DAV_2201",
    backend="A2A3",
    run_mode="npu",
    buffers=BUFFERS,
    cores=CORES,
    budgets=BUDGETS,
    hbm_bandwidth=HBM,
    bf16_peak=BF16_PEAK,
    sim_arch="A2A3",  # pypto_ini empty: pypto's own ini is this target's (Ascend910B1)
    probe=npu_probe,
)

#: Plans under this target's budgets (fitted to each model by derive_plan). Decode keeps the
#: reference-000 schedule that reached 83.5 % at qwen3-32b; prefill uses the larger tiles the
#: budgets allow (docs/prefill.md "Tiles under the target's budgets"); half the A5's vector rows (32 KB TILELET).
ANCHORS = reference_anchors(prefill=dict(
    tok_tile=64, q_out_chunk=128, kv_out_chunk=128, mlp_out_chunk=128, q_head_batch=64, seq_tile=128, cube_m=128,
    k_l1=512, kv_block=512,
))
