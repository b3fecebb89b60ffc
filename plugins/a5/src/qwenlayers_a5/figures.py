"""Hardware facts of the Ascend A5 (950PR) target, each with its source.

Also used by qwenlayers-a5sim, which simulates this same target on the CPU.
"""

from __future__ import annotations

from qwenlayers.plugin_kit import Buffers, Cores, Figure, Platform, derived_budgets, npu_probe, reference_anchors

INI_SOURCE = "upstream pypto master 950PR_957x.ini (as measured on pypto 0.2.0, docs/platforms.md)"

#: The A5's description for pypto 0.2.0 (its SoC and compiler versions, from upstream pypto
#: master's 950PR ini); the core writes it, with this descriptor's arch, cores and buffers, where
#: pypto reads its target (lib/configs/A2A3.ini) for a sim run.
A5_INI = """\
# A5 (Ascend950PR) description for pypto 0.2.0; written by qwenlayers.
[version]
SoC_version=Ascend950PR_9579
Short_SoC_version=Ascend950
AIC_version=AIC-C-310
CCEC_AIC_version=dav-c310-cube
CCEC_AIV_version=dav-c310-vec
CCEC_CUBE_version=dav-c310-cube
CCEC_VECTOR_version=dav-c310-vec
NpuArch=3510
[SoCInfo]
ai_core_cnt=28
cube_core_cnt=28
vector_core_cnt=56
ai_cpu_cnt=5
l2_size=134217728
[AICoreSpec]
cube_freq=1650
l0_a_size=65536
l0_b_size=65536
l0_c_size=262144
l1_size=524288
ub_size=253952
bt_size=4096
fb0_size=4096
"""

BUFFERS = Buffers(ub=253952, l0a=65536, l0b=65536, l0c=262144, l1=524288, source=INI_SOURCE)
CORES = Cores(cube=28, vector=56, source=INI_SOURCE)
#: This target's own budget set: derived from its buffers (one vector op's three tiles plus a
#: 32 KB reserve in UB, 2 cube operand tiles in L0A/L0B) and checked against the stage sweep
#: at qwen3-32b shapes and the layer runs (docs/budgets.md,
#: benchmarks/results/budget_sweep.jsonl). pypto-lib's 2 KB / 16 KB stays available as "pypto-lib".
BUDGETS = derived_budgets("a5", BUFFERS, source="stage sweep on a5sim, docs/budgets.md")
HBM = Figure(1600.0, "GB/s", "Ascend 950PR announcement (HiBL 1.0 HBM, 1.6 TB/s), nominal, not measured")
BF16_PEAK = Figure(500.0, "TFLOP/s", "Ascend 950 announcement (1 PFLOP/s FP8; BF16 taken as half), nominal, unverified")

A5 = Platform(
    name="a5",
    description="Ascend A5 (950 class) NPU through CANN and torch_npu",
    arch="DAV_3510",
    backend="Ascend950",
    run_mode="npu",
    buffers=BUFFERS,
    cores=CORES,
    budgets=BUDGETS,
    hbm_bandwidth=HBM,
    bf16_peak=BF16_PEAK,
    sim_arch="A5",
    pypto_ini=A5_INI,
    probe=npu_probe,
)

#: Plans under this target's budgets (fitted to each model by derive_plan). Decode keeps the
#: reference-000 schedule that reached 83.5 % at qwen3-32b; prefill uses the larger tiles the
#: budgets allow (docs/prefill.md "Tiles under the target's budgets").
ANCHORS = reference_anchors(prefill=dict(
    tok_tile=128, q_out_chunk=128, kv_out_chunk=128, mlp_out_chunk=128, q_head_batch=128, seq_tile=128, cube_m=128,
    k_l1=512, kv_block=512,
))
