"""A minimal third-party target: its own name, reused A5 buffers, its own tiling default."""

from qwenlayers import Availability, Budgets, Buffers, Cores, Figure, Platform, TilingPlan, hookimpl

DUMMY = Platform(
    name="dummy",                      # must equal the entry-point name
    description="an example target that exists only in the README",
    arch="DAV_3510", backend="Ascend950", run_mode="npu",
    buffers=Buffers(ub=253952, l0a=65536, l0b=65536, l0c=262144, l1=524288, source="example"),
    cores=Cores(cube=1, vector=2, source="example"),
    budgets=Budgets(tilelet_bytes=2048, tile_bytes=16384),
    hbm_bandwidth=Figure(100.0, "GB/s", "example"),
    bf16_peak=Figure(10.0, "TFLOP/s", "example"),
    probe=lambda: Availability(False, "dummy hardware does not exist"),   # called lazily, never at load
)

@hookimpl
def qwenlayers_platform():
    return DUMMY

@hookimpl
def qwenlayers_tiling_defaults(platform, config, phase):
    return TilingPlan(phase, tok_tile=1, k_chunk=64, q_out_chunk=32, kv_out_chunk=32,
                      mlp_out_chunk=32, q_head_batch=1, seq_tile=32)  # the rest: defaults, or fitted
