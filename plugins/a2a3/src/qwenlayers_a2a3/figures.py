"""Hardware facts of the Ascend A2/A3 (910B) target, each with its source.

Also used by qwenlayers-a2a3sim, which simulates this same target on the CPU.
"""

from __future__ import annotations

from dataclasses import replace

from qwenlayers import Budgets, Buffers, Cores, Figure, Platform, TilingPlan
from qwenlayers.runtime.probes import npu_probe

INI = "pypto 0.2.0 lib/configs/A2A3.ini (Ascend910B1)"

BUFFERS = Buffers(ub=196608, l0a=65536, l0b=65536, l0c=131072, l1=524288, source=INI)
CORES = Cores(cube=24, vector=48, source=INI)
#: pypto-lib's per-tile budgets (reference 000): 2 KB per vector tile, 16 KB per cube tile.
BUDGETS = Budgets(tilelet_bytes=2048, tile_bytes=16384)
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
    probe=npu_probe,
)

#: The Qwen3-32B plan of pypto-lib reference 000 (TOK_TILE=4, K_CHUNK=128, *_OUT_CHUNK=64,
#: Q_HEAD_BATCH=4, SEQ_TILE=64); other presets are derived from it by qwenlayers.core.tiling.
ANCHORS = TilingPlan.per_phase(
    source="plugin qwenlayers-a2a3", tok_tile=4, k_chunk=128, q_out_chunk=64, kv_out_chunk=64, mlp_out_chunk=64, q_head_batch=4, seq_tile=64,
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
