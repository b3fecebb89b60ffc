"""The decode layer kernel on the platform under test, against the golden math.

Tiny presets keep each run a few seconds. Lengths 1, SEQ_TILE-1, SEQ_TILE, SEQ_TILE+1 and
MAX_SEQ share one batch; cache rows past each length are poisoned so a masking bug shows.
"""

import pytest
import torch

import qwenlayers
from qwenlayers import golden
from qwenlayers.core.compare import compare
from qwenlayers.core.config import preset
from qwenlayers.errors import InputError, TilingError
from qwenlayers.runtime import chunking


def make_inputs(cfg, lens, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b = len(lens)
    hidden = torch.randn(b, cfg.hidden_size, generator=gen).bfloat16()
    shape = (b, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_cache = torch.randn(shape, generator=gen).bfloat16()
    v_cache = torch.randn(shape, generator=gen).bfloat16()
    for i, n in enumerate(lens):  # rows at and past the new token: poison (the attention must never read past it)
        k_cache[i, :, n:] = 30.0
        v_cache[i, :, n:] = 1000.0
    return hidden, k_cache, v_cache, torch.tensor(lens, dtype=torch.int32)


def edge_lengths(cfg, plan):
    """1, the edges of a SEQ_TILE tile and of a KV_BLOCK iteration, and MAX_SEQ."""
    st, kb = plan.seq_tile, plan.kv_block
    return sorted({n for n in (1, st - 1, st, st + 1, kb - 1, kb, kb + 1, cfg.max_seq) if 1 <= n <= cfg.max_seq})


def assert_decode_matches_golden(cfg, weights, platform, lens, **kwargs):
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, lens)
    k0, v0, h0 = k_cache.clone(), v_cache.clone(), hidden.clone()
    ref, ref_k, ref_v = golden.decode(cfg, weights, hidden, k0, v0, seq_lens)
    result = qwenlayers.decode(cfg, weights, hidden, k_cache, v_cache, seq_lens, platform=platform.name, check=True, **kwargs)
    assert torch.equal(hidden, h0)
    assert result.out.dtype == torch.bfloat16 and result.out.shape == hidden.shape
    c = compare(result.out, ref)  # bf16 atol=rtol=1e-2 against the row's scale, see qwenlayers.core.compare
    assert c.ok, c
    # and no less accurate than the bf16 golden itself, both measured against the fp32 truth
    w = qwenlayers.LayerWeights.coerce(weights, cfg)
    w32 = qwenlayers.LayerWeights(cfg, {k: v.float() for k, v in w.tensors.items()})
    truth, _, _ = golden.decode(cfg, w32, hidden.float(), k0.float(), v0.float(), seq_lens)
    kernel_err = (result.out.float() - truth).abs().mean().item()
    golden_err = (ref.float() - truth).abs().mean().item()
    assert kernel_err <= 1.25 * golden_err, (kernel_err, golden_err)  # a few hundred elements: sampling noise ~10%
    for i, n in enumerate(lens):
        # the written row is the golden's (K after k_norm and RoPE, V as projected) ...
        assert compare(k_cache[i, :, n - 1], ref_k[i, :, n - 1]).ok
        assert compare(v_cache[i, :, n - 1], ref_v[i, :, n - 1]).ok
        # ... and every other row is bit-identical to what the caller passed
        keep = torch.ones(cfg.max_seq, dtype=torch.bool)
        keep[n - 1] = False
        assert torch.equal(k_cache[i][:, keep], k0[i][:, keep]) and torch.equal(v_cache[i][:, keep], v0[i][:, keep])
    r = result.report
    assert r.within_tolerance and r.max_abs_err <= 0.05
    return result


@pytest.mark.sim
@pytest.mark.parametrize(("model", "tiles"), [
    ("tiny", {}),  # GQA 2; the default KV_BLOCK covers MAX_SEQ: one attention iteration per sequence
    ("tiny", {"KV_BLOCK": 128}),  # two SEQ_TILE tiles per iteration, up to two iterations (online softmax)
    ("tiny-mha", {"KV_BLOCK": 64}),  # GQA 1, one tile per iteration
    ("tiny-gqa8", {}),  # GQA 8; 8x32 != hidden 128
    ("tiny", {"CUBE_MERGE": 1, "MERGE_COPY_KB": 102400}),  # no task merging: pypto's own pass options
    ("tiny", {"KV_BLOCK": 128, "SCORE_COLS": 64}),  # softmax tiles of one cube score tile
])
def test_decode_matches_golden_at_edge_lengths(runnable_platform, model, tiles):
    cfg = preset(model)
    plan = qwenlayers.plan(cfg, "decode", platform=runnable_platform.name, overrides=tiles)
    lens = edge_lengths(cfg, plan)
    result = assert_decode_matches_golden(cfg, qwenlayers.LayerWeights.random(cfg, seed=3), runnable_platform, lens,
                                          plan=tiles)
    r = result.report
    assert r.arch == runnable_platform.arch and r.cost_model_arch == runnable_platform.sim_arch
    assert r.sim_us > 0 and r.tasks["AIC"] > 0 and r.tasks["AIV"] > 0 and r.compile_s > 0
    assert r.plan["seq_tile"] == plan.seq_tile and r.seq_lens == lens
    assert "pypto-sim-verify-real-inputs" in r.workarounds  # the switches in force; notes are not listed


@pytest.mark.sim
def test_merging_cube_tasks_changes_the_task_count_not_the_values(runnable_platform):
    """CUBE_MERGE reaches pypto (fewer, longer cube tasks) and leaves the results as they were."""
    cfg = preset("tiny")
    weights = qwenlayers.LayerWeights.random(cfg, seed=3)
    lens = [1, 63, 64, 65, 200, 256]
    tasks = {}
    for merge in (1, 4):
        tiles = {"CUBE_MERGE": merge, "MERGE_COPY_KB": 102400}
        result = assert_decode_matches_golden(cfg, weights, runnable_platform, lens, plan=tiles)
        assert result.report.plan["cube_merge"] == merge
        tasks[merge] = result.report.tasks["AIC"]
    assert tasks[4] < tasks[1], tasks


@pytest.mark.sim
@pytest.mark.parametrize("model", ["tiny", "tiny-gqa8"])
def test_the_reference_schedule_baseline_computes_the_same_layer(runnable_platform, model):
    """The baseline bench compares against must be the same math, only scheduled the reference way."""
    cfg = preset(model)
    plan = qwenlayers.plan(cfg, "decode", platform=runnable_platform.name)
    result = assert_decode_matches_golden(cfg, qwenlayers.LayerWeights.random(cfg, seed=3), runnable_platform,
                                          edge_lengths(cfg, plan), schedule="reference")
    assert result.report.schedule == "reference" and result.report.sim_us > 0


def test_an_unknown_schedule_is_refused():
    cfg = preset("tiny")
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, [3])
    with pytest.raises(InputError, match="allowed: fused, reference"):
        qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg), hidden, k_cache, v_cache, seq_lens, schedule="fast")


@pytest.mark.sim
def test_decode_layer_from_a_safetensors_checkpoint(runnable_platform, tmp_path):
    cfg = preset("tiny-gqa8")
    layers = {i: qwenlayers.LayerWeights.random(cfg, seed=10 + i) for i in range(3)}
    qwenlayers.LayerWeights.write_checkpoint(tmp_path, layers, shard_layers=2)
    loaded = qwenlayers.LayerWeights.from_checkpoint(tmp_path, 2, cfg)
    assert_decode_matches_golden(cfg, loaded, runnable_platform, [5, 40, 128])


@pytest.mark.sim
def test_small_seq_tile_and_hf_named_dict_weights(runnable_platform):
    cfg = preset("tiny")
    weights = dict(qwenlayers.LayerWeights.random(cfg, seed=4).tensors)  # plain HF-named dict
    result = assert_decode_matches_golden(cfg, weights, runnable_platform, [1, 31, 32, 33, 100], plan={"SEQ_TILE": 32})
    assert result.report.plan["seq_tile"] == 32 and result.report.plan["origin"]["seq_tile"] == "user"


@pytest.mark.neutral
@pytest.mark.sim
def test_a_checked_run_over_budget_is_split_into_batch_chunks(runnable_platform, monkeypatch):
    cfg = preset("tiny-mha")
    one_row = chunking.estimate(cfg, [128], 64, part="layer")
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", str((one_row + 1) / chunking.GIB))  # one long row per worker
    result = assert_decode_matches_golden(cfg, qwenlayers.LayerWeights.random(cfg, seed=5), runnable_platform, [1, 65, 128])
    r = result.report
    assert len(r.chunks) > 1 and all(c["worker"].startswith("layer rows") for c in r.chunks)
    assert r.timing_from == "whole-batch cost-model run" and r.sim_us > 0
    if runnable_platform.run_mode == "sim":  # the chunks' own timing would be thrown away: they run no cost model
        assert all(c["sim_us"] is None for c in r.chunks)


@pytest.mark.neutral
@pytest.mark.sim
def test_when_one_row_does_not_fit_the_layer_runs_to_the_residual_in_chunks_then_mlp_shards(runnable_platform, monkeypatch):
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", "0.1")  # below any whole-layer worker (as qwen3-32b is at 10 GB)
    cfg = preset("tiny-mha")
    result = assert_decode_matches_golden(cfg, qwenlayers.LayerWeights.random(cfg, seed=6), runnable_platform, [1, 65, 128])
    workers = [c["worker"] for c in result.report.chunks]
    shards = [w for w in workers if w.startswith("mlp shard")]
    assert workers[:3] == ["to_residual rows 0..0", "to_residual rows 1..1", "to_residual rows 2..2"]
    assert len(shards) >= 2 and shards == [f"mlp shard {k}/{len(shards)}" for k in range(1, len(shards) + 1)]
    assert result.report.timing_from == "whole-batch cost-model run"


@pytest.mark.sim
def test_nan_garbage_in_unused_cache_rows_is_never_read_or_mistaken_for_a_write(runnable_platform):
    """A torch.empty cache can hold NaNs past each length: the kernel must not read them, and
    the check that only row seq_len-1 changed must compare bits (NaN != NaN)."""
    cfg = preset("tiny")
    lens = [1, 17, 63, 65]
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, lens, seed=4)
    for i, n in enumerate(lens):
        k_cache[i, :, n:] = float("nan")
        v_cache[i, :, n:] = float("nan")
    k0, v0 = k_cache.clone(), v_cache.clone()
    ref, ref_k, _ = golden.decode(cfg, qwenlayers.LayerWeights.random(cfg, seed=4), hidden, k0.clone(), v0.clone(), seq_lens)
    result = qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg, seed=4), hidden, k_cache, v_cache, seq_lens,
                               platform=runnable_platform.name, check=True)
    assert torch.isfinite(result.out).all() and compare(result.out, ref).ok
    assert result.report.within_tolerance
    for i, n in enumerate(lens):
        assert torch.equal(k_cache[i, :, n:].view(torch.int16), k0[i, :, n:].view(torch.int16))
        assert torch.equal(v_cache[i, :, n:].view(torch.int16), v0[i, :, n:].view(torch.int16))
        assert compare(k_cache[i, :, n - 1], ref_k[i, :, n - 1]).ok


def test_a_checked_reference_run_too_big_for_a_worker_is_refused_with_the_figures():
    """The baseline's projection loops hand the whole weight to every tile call, so its values
    run cannot be cut into batch chunks; qwen3-0.6b already needs tens of GB. Refused before
    any worker starts, and nothing changes."""
    cfg = preset("qwen3-0.6b").with_max_seq(128)
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, [16, 16])
    before = [t.clone() for t in (hidden, k_cache, v_cache)]
    with pytest.raises(InputError, match=r"reference-schedule decode of qwen3-0.6b .* needs about \d+\.\d GB .*values=False"):
        qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg), hidden, k_cache, v_cache, seq_lens,
                          platform="a5sim", schedule="reference")
    assert all(torch.equal(a, b) for a, b in zip((hidden, k_cache, v_cache), before))


# ---------------------------------------------------------------- bad input: refused before any work


def _bad(cfg, **changes):
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, [3, 9])
    args = {"hidden": hidden, "k_cache": k_cache, "v_cache": v_cache, "seq_lens": seq_lens, **changes}
    return args


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(hidden=a["hidden"].float()), r"hidden has dtype torch.float32; allowed: torch.bfloat16"),
        (lambda a: a.update(hidden=a["hidden"][:, :64].contiguous()), r"hidden has shape \(2, 64\), expected \(2, 256\)"),
        (lambda a: a.update(seq_lens=torch.tensor([0, 9], dtype=torch.int32)), r"seq_lens\[0\]=0; .* 1 <= seq_len <= 256"),
        (lambda a: a.update(seq_lens=torch.tensor([3, 257], dtype=torch.int32)), r"seq_lens\[1\]=257; .* 1 <= seq_len <= 256"),
        (lambda a: a.update(seq_lens=torch.tensor([3, 9, 4], dtype=torch.int32)), r"seq_lens has shape \(3,\), expected \(2,\)"),
        (lambda a: a.update(k_cache=a["k_cache"][:1].contiguous()), r"k_cache holds 1 sequences but hidden has batch 2"),
        (lambda a: a.update(v_cache=a["v_cache"].transpose(2, 3).contiguous().transpose(2, 3)), r"v_cache is not contiguous"),
        (lambda a: a.update(k_cache=a["k_cache"].float()), r"k_cache has dtype torch.float32; allowed: torch.bfloat16"),
        (lambda a: a.update(seq_lens=torch.tensor([3.0, 9.0])), r"seq_lens has dtype torch.float32"),
    ],
)
def test_bad_input_is_refused_and_nothing_changes(change, message):
    cfg = preset("tiny")
    args = _bad(cfg)
    change(args)
    before = {k: v.clone() for k, v in args.items()}
    with pytest.raises(InputError, match=message):
        qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg), platform="no-such-platform", **args)
    for k, v in args.items():
        assert torch.equal(v, before[k]), f"{k} was modified by a refused call"


def test_a_plan_over_budget_is_a_tiling_error_before_compiling():
    cfg = preset("tiny")
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, [3, 9])
    with pytest.raises(TilingError, match=r"kv block.*exceeds the TILE budget.*SEQ_TILE from user override"):
        qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg), hidden, k_cache, v_cache, seq_lens,
                          platform="a5sim", plan={"SEQ_TILE": 512})
    prefill_plan = qwenlayers.plan(cfg, "prefill", platform="a5sim")
    with pytest.raises(TilingError, match="the plan given is a prefill plan; decode needs a decode plan"):
        qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg), hidden, k_cache, v_cache, seq_lens,
                          platform="a5sim", plan=prefill_plan)


def test_compare_scales_rtol_by_the_row_and_still_counts_elementwise_misses():
    ref = torch.tensor([[1.0, -1.25, 0.125, 1.5]]).bfloat16()
    one_step = ref.clone()
    one_step[0, 2] += 0.015625  # a bf16 step of a value near 1, landed on a small element
    c = compare(one_step, ref)
    assert c.ok and c.outside_elementwise == 1 and c.max_abs_err == pytest.approx(0.015625)
    wrong = ref.clone()
    wrong[0, 2] = 0.5
    assert not compare(wrong, ref).ok


def test_compare_treats_identical_nans_as_exact_only_where_passed_through_and_any_other_nan_as_a_miss():
    ref = torch.tensor([[1.0, float("nan"), 0.5]]).bfloat16()
    through = torch.tensor([[False, True, False]])  # passed-through garbage (cache rows nobody may touch)
    assert compare(ref.clone(), ref, passthrough=through).ok
    assert not compare(ref.clone(), ref).ok  # anywhere else NaN == NaN is no match (issue 17)
    out = ref.clone()
    out[0, 0] = float("nan")
    c = compare(out, ref, passthrough=through)
    assert not c.ok and c.max_abs_err == float("inf")


@pytest.mark.sim
def test_lowered_pass_verification_verdicts_are_reported(runnable_platform):
    cfg = preset("tiny-mha")
    hidden, k_cache, v_cache, seq_lens = make_inputs(cfg, [1, 70])
    result = qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg, seed=7), hidden, k_cache, v_cache, seq_lens,
                               platform=runnable_platform.name, verify_passes=True)
    passes = result.report.verification["passes"]
    assert any(name.endswith("CodegenPreproc") for name in passes), passes  # Pass_36 on A2A3, Pass_40 on A5
    assert all(v["FAILED"] == 0 and v["PASS"] > 0 for v in passes.values()), passes
