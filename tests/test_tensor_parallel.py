"""Tensor parallel: the shard plan, the weight shards, the collective hook, and TP runs of the
decode and prefill layers on the platform under test against the unsharded golden.

The sim runs spawn ``tp`` rank processes that all-reduce over gloo on localhost; caller cache
rows outside the documented writes are poisoned and must come back bit-identical.
"""

import pytest
import torch

import qwenlayers
from qwenlayers import golden
from qwenlayers.core.compare import compare
from qwenlayers.core.config import preset
from qwenlayers.core.sharding import allreduce_bytes, check_tp, shard_config, shard_plan
from qwenlayers.errors import InputError, KernelError, PlatformUnavailableError
from qwenlayers.registry import PlatformRegistry, get_registry

# ---------------------------------------------------------------- the plan and the shards


@pytest.mark.parametrize("tp", [1, 2, 4, 8, 16])
def test_shard_plan_covers_every_head_and_column_once(tp):
    cfg = preset("qwen3-32b")  # 64 query heads, 8 KV heads, intermediate 25600
    plans = [shard_plan(cfg, tp, r) for r in range(tp)]
    assert [p.q_heads for p in plans] == [(r * 64 // tp, (r + 1) * 64 // tp) for r in range(tp)]
    assert [p.inter for p in plans] == [(r * 25600 // tp, (r + 1) * 25600 // tp) for r in range(tp)]
    g = cfg.group_size
    for p in plans:  # each rank's query heads belong to the KV heads it holds
        assert p.kv_heads == (p.q_heads[0] // g, -(-p.q_heads[1] // g))
    if tp <= 8:
        assert [p.kv_heads for p in plans] == [(r * 8 // tp, (r + 1) * 8 // tp) for r in range(tp)]
        assert all(p.owns_kv for p in plans)
    else:  # 16 ranks: each KV head on two ranks, written back by one of them
        assert plans[0].kv_replicas == 2 and [p.owns_kv for p in plans[:2]] == [True, False]
    sc = shard_config(cfg, tp)
    assert (sc.num_attention_heads, sc.num_key_value_heads, sc.intermediate_size) == (64 // tp, max(8 // tp, 1), 25600 // tp)
    assert sc.hidden_size == cfg.hidden_size and sc.head_dim == cfg.head_dim


def test_a_tp_the_layer_cannot_be_split_by_says_what_is_allowed():
    with pytest.raises(InputError, match=r"tp=3 cannot split qwen3-32b .* allowed: 1, 2, 4, 8, 16"):
        check_tp(preset("qwen3-32b"), 3)
    with pytest.raises(InputError, match="tp=0"):
        check_tp(preset("tiny"), 0)


def test_weight_shards_recompose_the_layer_math():
    """Summing the ranks' partial o_proj and down_proj (what the all-reduces do) gives the
    unsharded layer: the shards cut exactly the heads and columns the plan says."""
    cfg = preset("tiny")  # 4 heads / 2 KV heads: tp=4 replicates each KV head twice
    w = qwenlayers.LayerWeights.random(cfg, seed=7).to(torch.float32)
    x = torch.randn(3, cfg.hidden_size)
    for tp in (2, 4):
        shards = [w.shard(r, tp) for r in range(tp)]
        assert all(s.config == shard_config(cfg, tp) for s in shards)
        for name in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_norm.weight"):
            assert all(torch.equal(s[name], w[name]) for s in shards)
        full_q = torch.cat([s["self_attn.q_proj.weight"] for s in shards])
        assert torch.equal(full_q, w["self_attn.q_proj.weight"])
        attn = torch.randn(3, cfg.q_width)  # per-head attention output, split by the ranks' heads
        d = cfg.head_dim
        parts = [attn[:, shard_plan(cfg, tp, r).q_heads[0] * d : shard_plan(cfg, tp, r).q_heads[1] * d]
                 @ shards[r]["self_attn.o_proj.weight"].T for r in range(tp)]
        assert torch.allclose(sum(parts), attn @ w["self_attn.o_proj.weight"].T, atol=1e-4)
        mlp = [(torch.nn.functional.silu(x @ s["mlp.gate_proj.weight"].T) * (x @ s["mlp.up_proj.weight"].T))
               @ s["mlp.down_proj.weight"].T for s in shards]
        full = (torch.nn.functional.silu(x @ w["mlp.gate_proj.weight"].T) * (x @ w["mlp.up_proj.weight"].T)) @ w["mlp.down_proj.weight"].T
        assert torch.allclose(sum(mlp), full, atol=1e-4)
        kv = shard_plan(cfg, tp, tp - 1).kv_heads
        assert torch.equal(shards[-1]["self_attn.k_proj.weight"], w["self_attn.k_proj.weight"][kv[0] * d : kv[1] * d])


def test_communication_volume_of_one_layer():
    c = allreduce_bytes(16, preset("qwen3-32b"), 8)  # decode, batch 16
    assert c == {"allreduces": 2, "payload_bytes": 2 * 16 * 5120 * 4, "ring_bytes_per_rank": 2 * 16 * 5120 * 4 * 2 * 7 // 8}


def test_the_collective_backend_is_the_plugins_choice():
    reg = get_registry()
    assert reg.collective_backend(reg.get("a5sim")) == "gloo" and reg.collective_backend(reg.get("a2a3sim")) == "gloo"
    assert reg.collective_backend(reg.get("a5")) == "hccl" and reg.collective_backend(reg.get("a2a3")) == "hccl"


def test_the_core_never_names_a_collective_backend():
    from pathlib import Path

    core = Path(qwenlayers.__file__).parent / "core"
    hits = [p.name for p in core.rglob("*.py") if any(b in p.read_text().lower() for b in ("gloo", "hccl", "nccl"))]
    assert hits == []


def test_a_platform_naming_no_backend_cannot_run_tensor_parallel():
    from qwenlayers_a5sim.plugin import A5SimPlugin

    class Silent(A5SimPlugin):
        collective_backend = None

    reg = PlatformRegistry(entry_points=lambda: [])
    reg.register(Silent(), name="a5sim")
    with pytest.raises(PlatformUnavailableError, match="names no collective backend"):
        reg.collective_backend(reg.get("a5sim"))


# ---------------------------------------------------------------- TP runs on the sim


def _decode_inputs(cfg, lens, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = len(lens)
    hidden = torch.randn(b, cfg.hidden_size, generator=gen).bfloat16()
    shape = (b, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_cache, v_cache = torch.randn(shape, generator=gen).bfloat16(), torch.randn(shape, generator=gen).bfloat16()
    for i, n in enumerate(lens):  # past the new token: poison
        k_cache[i, :, n:] = 30.0
        v_cache[i, :, n:] = 1000.0
    return hidden, k_cache, v_cache, torch.tensor(lens, dtype=torch.int32)


def check_decode_tp(platform, model, tp, lens, **kwargs):
    cfg = preset(model)
    w = qwenlayers.LayerWeights.random(cfg, seed=11)
    hidden, k_cache, v_cache, seq_lens = _decode_inputs(cfg, lens)
    k0, v0 = k_cache.clone(), v_cache.clone()
    ref, ref_k, ref_v = golden.decode(cfg, w, hidden, k0, v0, seq_lens)
    result = qwenlayers.decode_tp(cfg, w, hidden, k_cache, v_cache, seq_lens, tp=tp, platform=platform.name, check=True, **kwargs)
    c = compare(result.out, ref)
    assert c.ok, c
    for i, n in enumerate(lens):  # each rank's cache shard, put back: the written row is the golden's ...
        assert compare(k_cache[i, :, n - 1], ref_k[i, :, n - 1]).ok and compare(v_cache[i, :, n - 1], ref_v[i, :, n - 1]).ok
        keep = torch.ones(cfg.max_seq, dtype=torch.bool)
        keep[n - 1] = False  # ... and every other row is bit-identical
        assert torch.equal(k_cache[i][:, keep], k0[i][:, keep]) and torch.equal(v_cache[i][:, keep], v0[i][:, keep])
    r = result.report
    assert r.within_tolerance and r.tp == tp and r.backend == "gloo" and len(r.ranks) == tp
    assert all(rank.sim_us > 0 and rank.attention["tasks"]["AIC"] > 0 for rank in r.ranks)
    assert r.communication["payload_bytes"] == 2 * len(lens) * cfg.hidden_size * 4
    return result


@pytest.mark.sim
def test_decode_tp2_matches_the_unsharded_golden_at_mixed_lengths(runnable_platform):
    check_decode_tp(runnable_platform, "tiny", 2, [1, 63, 64, 65, 256])


@pytest.mark.sim
def test_decode_tp4_on_four_kv_heads(runnable_platform):
    result = check_decode_tp(runnable_platform, "tiny-kv4", 4, [1, 40, 128])
    assert [r.kv_heads for r in result.report.ranks] == [(0, 1), (1, 2), (2, 3), (3, 4)]


@pytest.mark.sim
def test_decode_tp4_replicates_kv_heads_when_tp_exceeds_them(runnable_platform):
    result = check_decode_tp(runnable_platform, "tiny", 4, [7, 100])  # 2 KV heads over 4 ranks
    assert [r.kv_heads for r in result.report.ranks] == [(0, 1), (0, 1), (1, 2), (1, 2)]


def check_prefill_tp(platform, model, tp, lens):
    cfg = preset(model)
    w = qwenlayers.LayerWeights.random(cfg, seed=12)
    gen = torch.Generator().manual_seed(1)
    b, s = len(lens), max(lens)
    hidden = torch.randn(b, s, cfg.hidden_size, generator=gen).bfloat16()
    for i, n in enumerate(lens):
        hidden[i, n:] = 50.0  # padding must not leak
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    shape = (b, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_cache, v_cache = torch.full(shape, 30.0).bfloat16(), torch.full(shape, -7.0).bfloat16()
    result = qwenlayers.prefill_tp(cfg, w, hidden, seq_lens, tp=tp, k_cache=k_cache, v_cache=v_cache,
                                   platform=platform.name, plan={"SEQ_TILE": 16}, check=True)
    ref, ref_k, ref_v = golden.prefill(cfg, w, hidden, seq_lens, max_seq=cfg.max_seq)
    for i, n in enumerate(lens):
        assert compare(result.out[i, :n], ref[i, :n]).ok and not result.out[i, n:].any()
        assert compare(k_cache[i, :, :n], ref_k[i, :, :n]).ok and compare(v_cache[i, :, :n], ref_v[i, :, :n]).ok
        assert (k_cache[i, :, n:] == 30.0).all() and (v_cache[i, :, n:] == -7.0).all()
    r = result.report
    assert r.within_tolerance and r.plan["seq_tile"] == 16 and r.communication["payload_bytes"] == 2 * sum(lens) * cfg.hidden_size * 4
    return result


@pytest.mark.sim
def test_prefill_tp2_matches_the_unsharded_golden_at_mixed_lengths(runnable_platform):
    check_prefill_tp(runnable_platform, "tiny", 2, [1, 15, 16, 17, 49])


@pytest.mark.sim
def test_prefill_tp4_on_four_kv_heads(runnable_platform):
    check_prefill_tp(runnable_platform, "tiny-kv4", 4, [3, 33, 64])


@pytest.mark.sim
def test_a_failing_rank_fails_the_run_with_its_error_and_changes_nothing(runnable_platform):
    cfg = preset("tiny")
    w = qwenlayers.LayerWeights.random(cfg, seed=1)
    hidden, k_cache, v_cache, seq_lens = _decode_inputs(cfg, [5, 9])
    k0, v0 = k_cache.clone(), v_cache.clone()
    with pytest.raises(KernelError, match=r"rank 1 of 2 failed(.|\n)*injected fault on rank 1"):
        # rank 0 reaches the first all-reduce and waits; it must be stopped, not hang until the timeout
        qwenlayers.decode_tp(cfg, w, hidden, k_cache, v_cache, seq_lens, tp=2, platform=runnable_platform.name,
                             fault_rank=1, timeout_s=120)
    assert torch.equal(k_cache, k0) and torch.equal(v_cache, v0)


def test_bad_tp_is_refused_before_any_rank_starts():
    cfg = preset("tiny")
    hidden, k_cache, v_cache, seq_lens = _decode_inputs(cfg, [3])
    with pytest.raises(InputError, match="tp=3 cannot split tiny"):
        qwenlayers.decode_tp(cfg, qwenlayers.LayerWeights.random(cfg), hidden, k_cache, v_cache, seq_lens, tp=3)


@pytest.mark.sim
def test_rank_cost_times_one_rank_without_values_or_collectives(runnable_platform):
    """What benchmarks/tp_decode.py runs at full size, here at tiny size."""
    from qwenlayers.tensor_parallel import rank_cost

    r = rank_cost("tiny-kv4", "decode", [100, 128], tp=4, rank=2, platform=runnable_platform.name)
    assert r.rank == 2 and r.q_heads == (4, 6) and r.kv_heads == (2, 3) and r.inter == (128, 192)
    assert r.sim_us == pytest.approx(r.attention["sim_us"] + r.mlp["sim_us"]) and r.attention["tasks"]["AIC"] > 0
