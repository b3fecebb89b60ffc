"""Hardware facts of the Ascend A5 (950PR) target, each with its source.

Also used by qwenlayers-a5sim, which simulates this same target on the CPU.
"""

from __future__ import annotations

from dataclasses import replace

from qwenlayers import Budgets, Buffers, Cores, Figure, Platform, TilingPlan
from qwenlayers.runtime.probes import npu_probe

INI_SOURCE = "upstream pypto master 950PR_957x.ini (as measured in shared/pypto-on-cpu.md)"

#: pypto 0.2.0 reads its compile target only from <pypto>/lib/configs/A2A3.ini; this is the A5
#: description that the a5sim plugin puts there (the file name must stay A2A3.ini).
A5_INI = """\
# A5 (Ascend950PR) description for pypto 0.2.0; written by qwenlayers-a5sim.
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
BUDGETS = Budgets(tilelet_bytes=2048, tile_bytes=16384)
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
    probe=npu_probe,
)

#: Same anchor as A2A3 (pypto-lib reference 000's Qwen3-32B plan): the budgets are equal.
ANCHORS = TilingPlan.per_phase(
    source="plugin qwenlayers-a5", tok_tile=4, k_chunk=128, q_out_chunk=64, kv_out_chunk=64, mlp_out_chunk=64, q_head_batch=4, seq_tile=64,
    cube_m=16, k_l1=1024, kv_block=4096,  # decode: one attention iteration per 4096 cache rows (simulated 7x faster than 64 at 0.6B 16x4096)
    # pypto task merging (docs/decode.md "Task merging"): same-shape cube tasks in pairs, a merged
    # task's GM->L1 copies capped at 2 MiB (qwen3-8b decode 16 x 4096, a2a3sim: 1,147 -> 969 us)
    cube_merge=2, merge_copy_kb=2048,
    # decode softmax reads the scores in [Q_HEAD_BATCH, 128] fp32 tiles (2 KB), two cube tiles
    # per copy (qwen3-32b 16 x 4096, a2a3sim: 1,483 -> 1,462 us, compile 389 -> 315 s)
    score_cols=128,
    # decode Q @ K^T copies 512 cache rows of K per cube step (L0 tiles [512, 16]) instead of
    # one 16 KB [64, 128] tile per copy (qwen3-32b 16 x 4096, a2a3sim: 1,462 -> 1,228 us)
    qk_cols=512,
)
# prefill projects 64-token tiles (L0A [64, 128] bf16 = 16 KB): the weights are read once per
# tile, so 16-token tiles capped a long prefill's cube use (docs/prefill.md; qwen3-0.6b, 128
# tokens, a2a3sim: 1,300 -> 949 us). Decode's m tile is the batch (at most 16 rows here).
ANCHORS["prefill"] = replace(ANCHORS["prefill"], cube_m=64)
