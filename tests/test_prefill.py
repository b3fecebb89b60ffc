"""The prefill layer kernel on the platform under test, against the golden math.

A small SEQ_TILE (16) keeps multi-block cases fast: lengths 1, TOK_TILE±1, SEQ_TILE-1,
SEQ_TILE, SEQ_TILE+1, 2*SEQ_TILE+17 and MAX_SEQ share one batch. The caller's cache rows past
each length are poisoned and must come back bit-identical.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

import qwenlayers
from qwenlayers import golden, layer
from qwenlayers.core.compare import compare
from qwenlayers.core.config import preset
from qwenlayers.core.tiling import fit_kv_block
from qwenlayers.errors import InputError
from qwenlayers.registry import get_registry
from qwenlayers.runtime import chunking
from qwenlayers.runtime.traces import PHASE_PID
from qwenlayers.runtime.worker import run_job

SEQ_TILE = 16


def fp32_truth(cfg, weights, hidden, seq_lens):
    w32 = qwenlayers.LayerWeights(cfg, {k: v.float() for k, v in weights.tensors.items()})
    return golden.prefill(cfg, w32, hidden.float(), seq_lens)[0]


def run_and_check(platform, cfg, lens, *, seed=0, given_caches=True, cache_fill=(30.0, -7.0), plan=None, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    weights = qwenlayers.LayerWeights.random(cfg, seed=seed)
    b, s = len(lens), max(lens)
    hidden = torch.randn(b, s, cfg.hidden_size, generator=gen).bfloat16()
    for i, n in enumerate(lens):
        hidden[i, n:] = 50.0  # padding: must not leak into anything
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    caches = {}
    if given_caches:
        shape = (b, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
        caches = {"k_cache": torch.full(shape, cache_fill[0]).bfloat16(), "v_cache": torch.full(shape, cache_fill[1]).bfloat16()}
    before = {k: v.clone() for k, v in caches.items()}
    h0 = hidden.clone()
    result = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=platform.name, plan=plan or {"SEQ_TILE": SEQ_TILE},
                                check=True, **caches, **kwargs)
    assert torch.equal(hidden, h0)
    ref, ref_k, ref_v = golden.prefill(cfg, weights, hidden, seq_lens, max_seq=cfg.max_seq)
    out = result.out
    assert out.shape == hidden.shape and out.dtype == torch.bfloat16
    valid = torch.zeros(b, s, dtype=torch.bool)
    for i, n in enumerate(lens):
        valid[i, :n] = True
    assert (out[~valid] == 0).all(), "padding rows must be zero"
    c = compare(out[valid], ref[valid])
    assert c.ok, c
    truth = fp32_truth(cfg, weights, hidden, seq_lens)
    kernel_err = (out[valid].float() - truth[valid]).abs().mean().item()
    golden_err = (ref[valid].float() - truth[valid]).abs().mean().item()
    assert kernel_err <= 1.25 * golden_err, (kernel_err, golden_err)
    for i, n in enumerate(lens):
        assert compare(result.k_cache[i, :, :n], ref_k[i, :, :n]).ok and compare(result.v_cache[i, :, :n], ref_v[i, :, :n]).ok
        if given_caches:
            assert result.k_cache is caches["k_cache"]  # written in place
            for name in ("k_cache", "v_cache"):  # bit-identical (the fill may be NaN)
                assert torch.equal(getattr(result, name)[i, :, n:].view(torch.int16), before[name][i, :, n:].view(torch.int16))
        else:
            assert (result.k_cache[i, :, n:] == 0).all() and (result.v_cache[i, :, n:] == 0).all()
    r = result.report
    assert r.phase == "prefill" and r.within_tolerance and r.sim_us > 0 and r.tasks["AIC"] > 0
    return result


@pytest.mark.sim
def test_prefill_edge_lengths_in_one_batch(runnable_platform):
    cfg = preset("tiny-mha")  # MAX_SEQ 128
    plan = qwenlayers.plan(cfg, "prefill", platform=runnable_platform.name)
    tok = plan.tok_tile
    edges = [1, tok - 1, tok + 1, SEQ_TILE - 1, SEQ_TILE, SEQ_TILE + 1, 2 * SEQ_TILE + 17, cfg.max_seq]
    lens = list(dict.fromkeys(n for n in edges if n <= cfg.max_seq))  # a5's TOK_TILE is 128 = MAX_SEQ here
    result = run_and_check(runnable_platform, cfg, lens)
    assert result.report.plan["seq_tile"] == SEQ_TILE


@pytest.mark.sim
def test_prefill_key_blocks_wider_than_the_query_tile(runnable_platform):
    """KV_BLOCK = 4 query tiles: the diagonal sits at each of the 4 positions of a key block, and
    sequences end at every kind of block edge (the mask picked per position, valid_shape past the end)."""
    cfg = preset("tiny-mha")  # MAX_SEQ 128
    kb = 4 * SEQ_TILE
    lens = [1, SEQ_TILE + 1, 2 * SEQ_TILE + 3, kb - 1, kb, kb + 1, kb + 3 * SEQ_TILE - 5, cfg.max_seq]
    result = run_and_check(runnable_platform, cfg, lens, seed=4, plan={"SEQ_TILE": SEQ_TILE, "KV_BLOCK": kb})
    assert (result.report.plan["seq_tile"], result.report.plan["kv_block"]) == (SEQ_TILE, kb)


def test_a_prefill_key_block_follows_the_longest_sequence():
    """The plugin's KV_BLOCK drops to the query tile when every sequence fits one key block (no
    masked work), and stays when a sequence is longer; a user's value is kept."""
    pre = qwenlayers.plan("qwen3-0.6b", "prefill", platform="a5sim")
    assert pre.kv_block == 4 * pre.seq_tile
    cfg, reg = preset("qwen3-0.6b"), get_registry()
    target = reg.get("a5sim")
    assert fit_kv_block(pre, [128, 300], cfg, target).kv_block == pre.seq_tile
    assert fit_kv_block(pre, [128, 3000], cfg, target).kv_block == pre.kv_block
    user = pre.with_overrides({"kv_block": 512})
    assert fit_kv_block(user, [128], cfg, target).kv_block == 512


@pytest.mark.sim
def test_prefill_never_reads_nan_garbage_past_each_length(runnable_platform):
    """Caches from torch.empty may hold NaNs in rows the prefill does not write."""
    run_and_check(runnable_platform, preset("tiny"), [1, SEQ_TILE + 1, 40], seed=3, cache_fill=(float("nan"), float("nan")))


@pytest.mark.sim
def test_prefill_gqa8_allocates_the_caches(runnable_platform):
    cfg = preset("tiny-gqa8")  # 8 query heads per KV head, heads x head_dim 256 != hidden 128
    result = run_and_check(runnable_platform, cfg, [7, 40], seed=2, given_caches=False)
    assert result.k_cache.shape == (2, 1, cfg.max_seq, cfg.head_dim)


@pytest.mark.sim
@pytest.mark.parametrize("model", ["tiny", "tiny-gqa8"])
def test_the_prefill_reference_schedule_baseline_computes_the_same_layer(runnable_platform, model):
    """The prefill baseline (per-token attention, reference 000's structure) is the same math."""
    cfg = preset(model)
    result = run_and_check(runnable_platform, cfg, [1, SEQ_TILE - 1, SEQ_TILE + 1, 40], seed=6, schedule="reference")
    assert result.report.schedule == "reference"


def test_a_checked_reference_prefill_too_big_for_a_worker_is_refused_with_the_figures():
    """Four tokens of qwen3-0.6b with the baseline went past 24 GB and were OOM-killed when the
    fused kernel's estimate (1.2 GB) decided the chunks; now it is refused up front."""
    cfg = preset("qwen3-0.6b").with_max_seq(128)
    hidden = torch.randn(1, 4, cfg.hidden_size).bfloat16()
    h0 = hidden.clone()
    with pytest.raises(InputError, match=r"reference-schedule prefill of qwen3-0.6b with 1 sequence\(s\) of 4 token\(s\) needs about"):
        qwenlayers.prefill(cfg, qwenlayers.LayerWeights.random(cfg), hidden, torch.tensor([4], dtype=torch.int32),
                           platform="a5sim", schedule="reference")
    assert torch.equal(hidden, h0)


def test_an_unknown_prefill_schedule_is_refused():
    cfg = preset("tiny")
    with pytest.raises(InputError, match="schedule='fast'; allowed: fused, reference"):
        qwenlayers.prefill(cfg, qwenlayers.LayerWeights.random(cfg), torch.randn(1, 4, cfg.hidden_size).bfloat16(),
                           torch.tensor([4], dtype=torch.int32), platform="a5sim", schedule="fast")


@pytest.mark.sim
def test_prefill_then_decode_steps_match_golden_prefill_and_decode(runnable_platform):
    cfg = preset("tiny")
    weights = qwenlayers.LayerWeights.random(cfg, seed=4)
    gen = torch.Generator().manual_seed(4)
    lens = [5, 17, 33]
    hidden = torch.randn(3, max(lens), cfg.hidden_size, generator=gen).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    pre = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=runnable_platform.name, plan={"SEQ_TILE": SEQ_TILE})
    _, gk, gv = golden.prefill(cfg, weights, hidden, seq_lens, max_seq=cfg.max_seq)
    k_cache, v_cache = pre.k_cache, pre.v_cache
    for step in range(2):
        seq_lens = seq_lens + 1
        x = torch.randn(3, cfg.hidden_size, generator=gen).bfloat16()
        ref, gk, gv = golden.decode(cfg, weights, x, gk, gv, seq_lens)
        res = qwenlayers.decode(cfg, weights, x, k_cache, v_cache, seq_lens, platform=runnable_platform.name)
        assert compare(res.out, ref).ok, (step, compare(res.out, ref))
        for i, n in enumerate(seq_lens.tolist()):
            assert compare(k_cache[i, :, :n], gk[i, :, :n]).ok and compare(v_cache[i, :, :n], gv[i, :, :n]).ok


@pytest.mark.neutral
@pytest.mark.sim
def test_prefill_over_budget_runs_sequences_in_separate_workers(runnable_platform, monkeypatch):
    cfg = preset("tiny-mha")
    plan = qwenlayers.plan(cfg, "prefill", platform=runnable_platform.name, overrides={"SEQ_TILE": SEQ_TILE})
    plan = fit_kv_block(plan, [3, 40, 9], cfg, get_registry().select(runnable_platform.name))
    longest = chunking.prefill_estimate(cfg, [40], SEQ_TILE, plan.cube_m, plan.kv_block)
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", str((longest + 1) / chunking.GIB))
    result = run_and_check(runnable_platform, cfg, [3, 40, 9], seed=5)
    assert len(result.report.chunks) > 1 and result.report.timing_from == "whole-batch cost-model run"


# ---------------------------------------------------------------- refused before any work


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(hidden=a["hidden"][0]), r"prefill hidden must be \[batch, seq, 128\]"),
        (lambda a: a.update(hidden=a["hidden"].float()), r"hidden has dtype torch.float32; allowed: torch.bfloat16"),
        (lambda a: a.update(seq_lens=torch.tensor([0, 4], dtype=torch.int32)), r"seq_lens\[0\]=0; .* 1 <= seq_len <= 8"),
        (lambda a: a.update(seq_lens=torch.tensor([9, 4], dtype=torch.int32)), r"seq_lens\[0\]=9; .* 1 <= seq_len <= 8"),
        (lambda a: a.update(k_cache=torch.zeros(2, 2, 4, 64).bfloat16(), v_cache=torch.zeros(2, 2, 4, 64).bfloat16()),
         r"8 positions but max_seq=4"),
        (lambda a: a.update(k_cache=torch.zeros(2, 2, 16, 64).bfloat16()), r"pass both k_cache and v_cache, or neither"),
        (lambda a: a.update(k_cache=torch.zeros(2, 2, 16, 64).bfloat16(), v_cache=torch.zeros(2, 2, 16, 32).bfloat16()),
         r"v_cache has shape \(2, 2, 16, 32\), expected \(2, 2, 16, 64\)"),
    ],
)
def test_bad_prefill_input_is_refused_and_nothing_changes(change, message):
    cfg = preset("tiny-mha")
    args = {"hidden": torch.randn(2, 8, cfg.hidden_size).bfloat16(), "seq_lens": torch.tensor([8, 4], dtype=torch.int32)}
    change(args)
    before = {k: v.clone() for k, v in args.items()}
    with pytest.raises(InputError, match=message):
        qwenlayers.prefill(cfg, qwenlayers.LayerWeights.random(cfg), platform="a5sim", **args)
    for k, v in args.items():
        assert torch.equal(v, before[k]), f"{k} was modified by a refused call"


def test_a_prefill_that_not_even_its_parts_fit_is_refused_with_the_figures(monkeypatch):
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", "0.5")  # below one worker's base: no part of the split fits
    cfg = preset("tiny-mha")
    with pytest.raises(InputError, match=r"checked prefill split over workers still needs about .* GB for one .* budget is 0.5 GB"):
        qwenlayers.prefill(cfg, qwenlayers.LayerWeights.random(cfg), torch.randn(1, 128, cfg.hidden_size).bfloat16(),
                           torch.tensor([128], dtype=torch.int32), platform="a5sim")


@pytest.mark.neutral
@pytest.mark.sim
def test_a_prefill_too_big_for_one_worker_runs_in_parts_and_matches(runnable_platform, monkeypatch):
    """The split checked run (one program per loop and group) on tiny, forced, every loop cut into
    one-unit groups and the MLP into two intermediate shards: same bits as the one-program run,
    golden within the bar, the caller's cache rows past each length untouched."""
    from dataclasses import replace

    from qwenlayers import layer

    def one_unit_groups(config, lens, seq_tile, token_tile, mlp_step, **kwargs):
        s = chunking.split_prefill(config, lens, seq_tile, token_tile, mlp_step)
        per = [chunking.Group(i, i + 1, 0) for i in range(s.tiles)]
        items = [chunking.Group(i, i + 1, 0) for i in range(sum(-(-n // seq_tile) for n in lens))]
        return replace(s, qkv=per, attend=items, o_proj=per, mlp_shards=2,
                       mlp_groups=[chunking.Group(0, 2, 0), chunking.Group(2, s.tiles, 0)])

    cfg = preset("tiny")
    lens, tiles = [20, 45], {"SEQ_TILE": SEQ_TILE, "CUBE_M": 32}
    weights = qwenlayers.LayerWeights.random(cfg, seed=5)
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(len(lens), max(lens), cfg.hidden_size, generator=gen).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    shape = (len(lens), cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_poison, v_poison = torch.full(shape, float("nan")).bfloat16(), torch.full(shape, 9.0).bfloat16()
    whole = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=runnable_platform.name, plan=tiles)
    monkeypatch.setattr(layer, "prefill_fits_one_worker", lambda *a, **k: False)
    monkeypatch.setattr(layer, "split_prefill", one_unit_groups)
    kc, vc = k_poison.clone(), v_poison.clone()
    parts = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=runnable_platform.name, plan=tiles, check=True,
                               k_cache=kc, v_cache=vc)
    assert len(parts.report.chunks) == 3 + 5 + 3 + 4 and parts.report.timing_from == "whole-batch cost-model run"
    assert parts.report.within_tolerance is True
    assert torch.equal(parts.out, whole.out)
    for i, n in enumerate(lens):
        assert torch.equal(kc[i, :, :n], whole.k_cache[i, :, :n]) and torch.equal(vc[i, :, :n], whole.v_cache[i, :, :n])
        assert kc[i, :, n:].isnan().all() and torch.equal(vc[i, :, n:], v_poison[i, :, n:])


def test_the_split_is_sized_by_the_worker_budget_and_refuses_what_cannot_fit():
    big = preset("qwen3-32b").with_max_seq(4096)
    split = chunking.split_prefill(big, [1024], 128, 128, 128, kv_block=512, budget=10 * chunking.GIB)
    assert split.tiles == 8 and split.mlp_shards >= 2 and len(split.attend) >= 3
    assert max(g.estimate_bytes for part in (split.qkv, split.attend, split.o_proj, split.mlp_groups) for g in part) <= 10 * chunking.GIB
    assert not chunking.prefill_fits_one_worker(big, [1024], 128, 128, kv_block=512, budget=10 * chunking.GIB)
    # loop B's calls capture all its tensor arguments, the causal mask among them: wider key
    # blocks mean a bigger mask per call (a 32B 1,024-token attention worker estimated at 7.7 GB
    # without it peaked past 21.6 GB)
    items = [(1024, q) for q in range(8)]
    assert chunking._attention_loop_capture(big, [1024], 128, 512, items[:1]) > chunking._attention_loop_capture(big, [1024], 128, 128, items[:1])
    with pytest.raises(InputError, match=r"query tile of the attention"):  # whole 4096-token workspaces per call
        chunking.split_prefill(big, [4096], 128, 128, 128, kv_block=512, budget=10 * chunking.GIB)
    with pytest.raises(InputError, match=r"still needs about .* GB for one .*budget is 1.0 GB"):
        chunking.split_prefill(big, [1024], 128, 128, 128, budget=1 * chunking.GIB)


@pytest.mark.neutral
@pytest.mark.sim
def test_a_prefill_too_long_for_one_cost_model_run_is_timed_in_phases(runnable_platform, monkeypatch):
    """Past MAX_COST_MODEL_SCORES the timing comes from loop A, loop B in groups of query tiles,
    loop C and the MLP simulated one after another: the same tasks as the one program, their
    times added; a checked run takes its timing from the phases and its values as before."""
    cfg = preset("tiny")
    lens, tiles = [200], {"SEQ_TILE": 32}
    weights = qwenlayers.LayerWeights.random(cfg, seed=2)
    hidden = torch.randn(1, 200, cfg.hidden_size).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    whole = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=runnable_platform.name, plan=tiles, values=False)
    monkeypatch.setattr(chunking, "MAX_COST_MODEL_SCORES", chunking.attention_scores(cfg, lens, 32) // 3)
    phase_folders = []

    def recording(*args, **kwargs):
        result = run_job(*args, **kwargs)
        phase_folders.append(result.kept_dir)
        return result

    monkeypatch.setattr(layer, "run_job", recording)
    phased = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=runnable_platform.name, plan=tiles, values=False,
                                keep=True)
    rep = phased.report
    assert phased.out is None and rep.timing_from.startswith("phased cost-model runs") and len(rep.chunks) > 4
    assert rep.sim_us == pytest.approx(sum(c["sim_us"] for c in rep.chunks))
    assert rep.tasks == whole.report.tasks  # the same work, cut at the loop boundaries
    assert len(phase_folders) == len(rep.chunks) and all(f is not None and not f.exists() for f in phase_folders)
    monkeypatch.setattr(layer, "run_job", run_job)
    checked = qwenlayers.prefill(cfg, weights, hidden, seq_lens, platform=runnable_platform.name, plan=tiles, check=True)
    assert checked.report.within_tolerance is True and checked.report.sim_us == pytest.approx(rep.sim_us)
    trace = json.loads(Path(rep.trace).read_text())["traceEvents"]
    spans = [e for e in trace if e.get("pid") == PHASE_PID and e.get("ph") == "X"]
    assert [s["name"] for s in spans] == [c["worker"] for c in rep.chunks]  # one span per phase, in run order
    assert all(a["ts"] + a["dur"] == b["ts"] for a, b in zip(spans, spans[1:]))  # laid end to end
    tasks = [e for e in trace if e.get("ph") == "X" and "event-hint" in e.get("args", {})]
    assert tasks and min(e["ts"] for e in tasks) >= 0 and max(e["ts"] + e["dur"] for e in tasks) <= spans[-1]["ts"] + spans[-1]["dur"]
    assert sorted(p.name for p in Path(rep.run_dir).iterdir()) == ["phased.pefetto.trace.json"]  # phase folders removed
    shutil.rmtree(rep.run_dir)
