"""Paged KV caches (qwenlayers.core.paged): decode and prefill through a block table.

The same data in a contiguous cache and in shuffled blocks of a pool must give the same layer
output bit for bit, write exactly the slot each new row maps to, and leave every other slot of
the pools (poisoned here) bit-identical.
"""

import pytest
import torch

import qwenlayers
from qwenlayers.core.config import preset
from qwenlayers.errors import InputError, TilingError
from qwenlayers.inputs import random_inputs
from qwenlayers.runtime import chunking

POISON = 77.0


def paged_copy(k_cache, v_cache, block, *, spare=3, seed=5):
    """The caches' rows in shuffled blocks of pools with ``spare`` more blocks, everything the
    table does not reach poisoned; returns (k_pool, v_pool, table)."""
    b, kvh, rows, d = k_cache.shape
    per = rows // block
    blocks = b * per + spare
    order = torch.randperm(blocks, generator=torch.Generator().manual_seed(seed))
    table = order[: b * per].view(b, per).to(torch.int32)
    k_pool = torch.full((blocks, kvh, block, d), POISON, dtype=torch.bfloat16)
    v_pool = k_pool.clone()
    for i in range(b):
        for j in range(per):
            k_pool[table[i, j]] = k_cache[i, :, j * block : (j + 1) * block]
            v_pool[table[i, j]] = v_cache[i, :, j * block : (j + 1) * block]
    return k_pool, v_pool, table


def changed_slots(before, after):
    as_int = before.view(torch.int16) != after.view(torch.int16)
    return sorted(map(tuple, as_int.any(dim=(1, 3)).nonzero().tolist()))


def plan_values(result):
    """A report's plan as overrides: the same program for a contiguous run."""
    return {k: v for k, v in result.report.plan.items() if k not in ("origin", "phase", "source")}


def edge_lens(block):
    return [1, block - 1, block, block + 1, 3 * block + 5]


@pytest.mark.sim
@pytest.mark.parametrize("block, kv_blocks, tile", [(16, 1, 16), (16, 4, 16), (16, 4, 64), (64, 2, 64), (128, 1, 64)])
def test_paged_decode_equals_contiguous_bit_for_bit_and_writes_one_slot(runnable_platform, block, kv_blocks, tile):
    """One block per attention iteration or several, gathered through the table (lengths that
    end inside any block of an iteration), with cube tiles inside one block or spanning
    several (16-row blocks, 64-row tiles)."""
    plan = {"kv_block": kv_blocks * block, "seq_tile": tile, "qk_cols": tile}
    cfg = preset("tiny")
    w = qwenlayers.LayerWeights.random(cfg, seed=1)
    lens = edge_lens(block)
    inputs = random_inputs(cfg, "decode", lens, seed=2, max_seq=4 * block)
    k_pool, v_pool, table = paged_copy(inputs["k_cache"], inputs["v_cache"], block)
    k0, v0 = k_pool.clone(), v_pool.clone()
    paged = qwenlayers.decode(cfg, w, inputs["hidden"], k_pool, v_pool, inputs["seq_lens"], block_table=table,
                              platform=runnable_platform.name, check=True, plan=plan)
    assert paged.report.within_tolerance, paged.report.check_failures
    assert {k: paged.report.plan[k] for k in plan} == plan  # whole blocks per iteration; tiles need not fit a block
    contiguous = qwenlayers.decode(cfg, w, **inputs, platform=runnable_platform.name, plan=plan_values(paged))
    assert torch.equal(paged.out, contiguous.out)
    want = sorted((int(table[b, (n - 1) // block]), (n - 1) % block) for b, n in enumerate(lens))
    assert changed_slots(k0, k_pool) == want and changed_slots(v0, v_pool) == want
    for b, n in enumerate(lens):  # the written rows are the contiguous run's
        blk, slot = int(table[b, (n - 1) // block]), (n - 1) % block
        assert torch.equal(k_pool[blk, :, slot], inputs["k_cache"][b, :, n - 1])
        assert torch.equal(v_pool[blk, :, slot], inputs["v_cache"][b, :, n - 1])


@pytest.mark.sim
def test_blocks_shared_by_a_common_prefix_are_read_by_every_sequence(runnable_platform):
    """Three sequences share their first two blocks (a 32-token common prefix) and write into
    blocks of their own: each attends over the shared rows and its own."""
    cfg, block = preset("tiny"), 16
    w = qwenlayers.LayerWeights.random(cfg, seed=3)
    lens = [33, 40, 47]
    gen = torch.Generator().manual_seed(4)
    kvh, d = cfg.num_key_value_heads, cfg.head_dim
    k_pool = torch.randn(8, kvh, block, d, generator=gen).bfloat16()
    v_pool = torch.randn(8, kvh, block, d, generator=gen).bfloat16()
    table = torch.tensor([[5, 2, 7], [5, 2, 0], [5, 2, 4]], dtype=torch.int32)
    hidden = torch.randn(3, cfg.hidden_size, generator=gen).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    k0 = k_pool.clone()
    # the same rows laid out contiguously: the shared blocks copied into every sequence
    k_cache = torch.stack([torch.cat([k_pool[int(i)] for i in row], dim=1) for row in table])
    v_cache = torch.stack([torch.cat([v_pool[int(i)] for i in row], dim=1) for row in table])
    paged = qwenlayers.decode(cfg, w, hidden, k_pool, v_pool, seq_lens, block_table=table, platform=runnable_platform.name,
                              check=True)
    contiguous = qwenlayers.decode(cfg, w, hidden, k_cache, v_cache, seq_lens, platform=runnable_platform.name,
                                   plan=plan_values(paged))
    assert paged.report.within_tolerance, paged.report.check_failures
    assert torch.equal(paged.out, contiguous.out)
    assert changed_slots(k0, k_pool) == sorted([(7, 0), (0, 7), (4, 14)])  # never the shared blocks 5 and 2


@pytest.mark.sim
def test_decode_steps_through_the_table_follow_the_contiguous_ones(runnable_platform):
    """A prefill into contiguous caches, its rows moved into pools, then three decode steps
    each way: every step's output and the rows it wrote are the same."""
    cfg, block = preset("tiny"), 16
    w = qwenlayers.LayerWeights.random(cfg, seed=6)
    prompt = [14, 16, 31]
    hidden = torch.randn(3, 32, cfg.hidden_size, generator=torch.Generator().manual_seed(7)).bfloat16()
    pre = qwenlayers.prefill(cfg.with_max_seq(64), w, hidden, torch.tensor(prompt, dtype=torch.int32),
                             platform=runnable_platform.name)
    k_cache, v_cache = pre.k_cache, pre.v_cache
    k_pool, v_pool, table = paged_copy(k_cache, v_cache, block)
    for step in range(1, 4):
        lens = torch.tensor([n + step for n in prompt], dtype=torch.int32)
        x = torch.randn(3, cfg.hidden_size, generator=torch.Generator().manual_seed(10 + step)).bfloat16()
        two = qwenlayers.decode(cfg, w, x, k_pool, v_pool, lens, block_table=table, platform=runnable_platform.name)
        one = qwenlayers.decode(cfg, w, x, k_cache, v_cache, lens, platform=runnable_platform.name, plan=plan_values(two))
        assert torch.equal(one.out, two.out), step
        for b, n in enumerate(lens.tolist()):
            assert torch.equal(k_pool[int(table[b, (n - 1) // block]), :, (n - 1) % block], k_cache[b, :, n - 1])


@pytest.mark.neutral
@pytest.mark.sim
def test_a_paged_decode_split_into_batch_chunks_sends_each_chunk_its_own_blocks(runnable_platform, monkeypatch):
    cfg, block = preset("tiny-mha"), 16
    lens = [1, 65, 128]
    one_row = chunking.estimate(cfg, [128], 64, part="layer")
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", str((one_row + 1) / chunking.GIB))
    w = qwenlayers.LayerWeights.random(cfg, seed=5)
    inputs = random_inputs(cfg, "decode", lens, seed=8, max_seq=128)
    k_pool, v_pool, table = paged_copy(inputs["k_cache"], inputs["v_cache"], block)
    r = qwenlayers.decode(cfg, w, inputs["hidden"], k_pool, v_pool, inputs["seq_lens"], block_table=table,
                          platform=runnable_platform.name, check=True)
    assert len(r.report.chunks) > 1 and r.report.within_tolerance, r.report.check_failures
    assert r.report.timing_from == "whole-batch cost-model run" and r.report.sim_us > 0


@pytest.mark.sim
@pytest.mark.parametrize("block", [16, 64, 128])
def test_paged_prefill_equals_contiguous_bit_for_bit_and_writes_only_rows_0_to_l(runnable_platform, block):
    cfg = preset("tiny")
    w = qwenlayers.LayerWeights.random(cfg, seed=1)
    lens = [1, block - 1, block, block + 1, 2 * block + 5]
    hidden = torch.randn(len(lens), max(lens), cfg.hidden_size, generator=torch.Generator().manual_seed(3)).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    rows = 4 * block
    k_cache = torch.zeros(len(lens), cfg.num_key_value_heads, rows, cfg.head_dim, dtype=torch.bfloat16)
    v_cache = torch.zeros_like(k_cache)
    k_pool, v_pool, table = paged_copy(k_cache, v_cache, block)
    k_pool.fill_(POISON)
    v_pool.fill_(POISON)
    k0 = k_pool.clone()
    paged = qwenlayers.prefill(cfg, w, hidden, seq_lens, k_cache=k_pool, v_cache=v_pool, block_table=table,
                               platform=runnable_platform.name, check=True)
    assert paged.report.within_tolerance, paged.report.check_failures
    assert block % paged.report.plan["seq_tile"] == 0
    contiguous = qwenlayers.prefill(cfg.with_max_seq(rows), w, hidden, seq_lens, k_cache=k_cache, v_cache=v_cache,
                                    platform=runnable_platform.name, plan=plan_values(paged))
    assert torch.equal(paged.out, contiguous.out)
    assert paged.report.sim_us == pytest.approx(contiguous.report.sim_us, rel=0.05)
    want = sorted({(int(table[b, r // block]), r % block) for b, n in enumerate(lens) for r in range(n)})
    assert changed_slots(k0, k_pool) == want
    for b, n in enumerate(lens):
        for r in range(n):
            blk, slot = int(table[b, r // block]), r % block
            assert torch.equal(k_pool[blk, :, slot], k_cache[b, :, r]) and torch.equal(v_pool[blk, :, slot], v_cache[b, :, r])


@pytest.mark.sim
def test_a_paged_prefill_then_decode_steps_all_through_the_table(runnable_platform):
    cfg, block = preset("tiny"), 16
    w = qwenlayers.LayerWeights.random(cfg, seed=9)
    prompt = [15, 16, 33]
    hidden = torch.randn(3, 33, cfg.hidden_size, generator=torch.Generator().manual_seed(2)).bfloat16()
    kvh, d = cfg.num_key_value_heads, cfg.head_dim
    table = torch.tensor([[9, 3, 6, 1], [0, 8, 2, 11], [4, 10, 7, 5]], dtype=torch.int32)
    k_pool = torch.full((12, kvh, block, d), POISON, dtype=torch.bfloat16)
    v_pool = k_pool.clone()
    r = qwenlayers.prefill(cfg, w, hidden, torch.tensor(prompt, dtype=torch.int32), k_cache=k_pool, v_cache=v_pool,
                           block_table=table, platform=runnable_platform.name, check=True)
    assert r.report.within_tolerance, r.report.check_failures
    for step in range(1, 4):
        lens = torch.tensor([n + step for n in prompt], dtype=torch.int32)
        x = torch.randn(3, cfg.hidden_size, generator=torch.Generator().manual_seed(20 + step)).bfloat16()
        r = qwenlayers.decode(cfg, w, x, k_pool, v_pool, lens, block_table=table, platform=runnable_platform.name,
                              check=True)
        assert r.report.within_tolerance, (step, r.report.check_failures)


# ---------------------------------------------------------------- refused before any work


def _paged_inputs(block=16, lens=(5, 20)):
    cfg = preset("tiny")
    inputs = random_inputs(cfg, "decode", list(lens), seed=1, max_seq=64)
    k_pool, v_pool, table = paged_copy(inputs["k_cache"], inputs["v_cache"], block)
    return cfg, qwenlayers.LayerWeights.random(cfg, seed=1), inputs, k_pool, v_pool, table


def _bad_table(table, value):
    bad = table.clone()
    bad[1, 1] = value
    return bad


@pytest.mark.parametrize("edit, message", [
    (lambda t, k, v: (_bad_table(t, 999), k, v), r"block_table\[1, 1\] = 999 is not a block of the pool: ids 0..10"),
    (lambda t, k, v: (_bad_table(t, -1), k, v), r"block_table\[1, 1\] = -1 is not a block"),
    (lambda t, k, v: (t[:, :1].contiguous(), k, v), r"sequence 1 has 20 tokens, 2 blocks of 16, but block_table has 1 entries"),
    (lambda t, k, v: (t.long(), k, v), r"block_table is torch.int64; it is int32"),
    (lambda t, k, v: (t, k.float(), v), r"paged k_cache is torch.float32"),
    (lambda t, k, v: (t, k[:, :1].contiguous(), v), r"paged k_cache has shape \[11, 1, 16, 64\]"),
    (lambda t, k, v: (t, k, v[:-1].contiguous()), r"pools differ in shape"),
    (lambda t, k, v: (_bad_table(t, int(t[0, 0])), k, v), r"sequences 0 and 1 both write block"),
])
def test_bad_pools_and_tables_are_refused_before_any_work(platform, edit, message):
    cfg, w, inputs, k_pool, v_pool, table = _paged_inputs()
    table, k_pool, v_pool = edit(table, k_pool, v_pool)
    k0, v0 = k_pool.clone(), v_pool.clone()
    with pytest.raises(InputError, match=message):
        qwenlayers.decode(cfg, w, inputs["hidden"], k_pool, v_pool, inputs["seq_lens"], block_table=table, platform=platform.name)
    assert torch.equal(k_pool, k0) and torch.equal(v_pool, v0)


def test_a_write_into_a_slot_another_sequence_reads_is_refused(platform):
    cfg, w, inputs, k_pool, v_pool, table = _paged_inputs(lens=(5, 20))
    table[1, 0] = table[0, 0]  # sequence 1 reads sequence 0's first block, where sequence 0 writes its row 4
    with pytest.raises(InputError, match=r"sequence 0 writes block \d+ slot 4, which sequence 1 reads"):
        qwenlayers.decode(cfg, w, inputs["hidden"], k_pool, v_pool, inputs["seq_lens"], block_table=table, platform=platform.name)


def test_tiles_that_do_not_fit_the_block_size_and_the_reference_schedule_are_refused(runnable_platform):
    platform = runnable_platform  # the plan is fitted to a resolved target, so the target must be usable here
    cfg, w, inputs, k_pool, v_pool, table = _paged_inputs()
    args = (cfg, w, inputs["hidden"], k_pool, v_pool, inputs["seq_lens"])
    with pytest.raises(TilingError, match=r"kv_block=24 \(from user\) is not a multiple of the paged cache.s 16-row blocks"):
        qwenlayers.decode(*args, block_table=table, platform=platform.name, plan={"kv_block": 24, "seq_tile": 8, "qk_cols": 8, "score_cols": 8})
    with pytest.raises(InputError, match="reference schedule uses contiguous caches only"):
        qwenlayers.decode(*args, block_table=table, platform=platform.name, schedule="reference")
    prompt = torch.zeros(2, 20, cfg.hidden_size, dtype=torch.bfloat16)
    with pytest.raises(TilingError, match=r"seq_tile=12 \(from user\) does not divide the paged cache's block of 16"):
        qwenlayers.prefill(cfg, w, prompt, inputs["seq_lens"], k_cache=k_pool, v_cache=v_pool, block_table=table,
                           platform=platform.name, plan={"seq_tile": 12})
    with pytest.raises(InputError, match="sequences 0 and 1 both write block"):  # prefill writes every block it reaches
        qwenlayers.prefill(cfg, w, prompt, inputs["seq_lens"], k_cache=k_pool, v_cache=v_pool,
                           block_table=_bad_table(table, int(table[0, 0])), platform=platform.name)


@pytest.mark.sim
def test_tensor_parallel_ranks_hold_their_kv_heads_of_every_block(runnable_platform):
    """tp=2: each rank reads and writes its KV head of every block; the pools come back as the
    one-rank paged decode leaves them, the output as the contiguous tensor-parallel one."""
    cfg, block = preset("tiny"), 16
    w = qwenlayers.LayerWeights.random(cfg, seed=2)
    lens = [1, 16, 17, 40]
    inputs = random_inputs(cfg, "decode", lens, seed=4, max_seq=64)
    k_pool, v_pool, table = paged_copy(inputs["k_cache"], inputs["v_cache"], block)
    k_one, v_one = k_pool.clone(), v_pool.clone()
    k0 = k_pool.clone()
    plan = {"kv_block": block, "seq_tile": block}
    contiguous = qwenlayers.decode_tp(cfg, w, **inputs, tp=2, platform=runnable_platform.name, plan=plan)
    paged = qwenlayers.decode_tp(cfg, w, inputs["hidden"], k_pool, v_pool, inputs["seq_lens"], tp=2, block_table=table,
                                 platform=runnable_platform.name, plan=plan, check=True)
    assert paged.report.within_tolerance, paged.report.check_failures
    assert torch.equal(paged.out, contiguous.out)
    qwenlayers.decode(cfg, w, inputs["hidden"], k_one, v_one, inputs["seq_lens"], block_table=table,
                      platform=runnable_platform.name)
    assert torch.equal(k_pool, k_one) and torch.equal(v_pool, v_one)
    assert changed_slots(k0, k_pool) == sorted((int(table[b, (n - 1) // block]), (n - 1) % block) for b, n in enumerate(lens))


@pytest.mark.sim
def test_tensor_parallel_prefill_writes_the_pools_through_the_table(runnable_platform):
    cfg, block = preset("tiny"), 16
    w = qwenlayers.LayerWeights.random(cfg, seed=3)
    lens = [5, 33]
    hidden = torch.randn(2, 33, cfg.hidden_size, generator=torch.Generator().manual_seed(6)).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    table = torch.tensor([[4, 0, 6], [2, 5, 1]], dtype=torch.int32)
    k_pool = torch.full((7, cfg.num_key_value_heads, block, cfg.head_dim), POISON, dtype=torch.bfloat16)
    v_pool = k_pool.clone()
    k_one, v_one = k_pool.clone(), v_pool.clone()
    r = qwenlayers.prefill_tp(cfg, w, hidden, seq_lens, tp=2, k_cache=k_pool, v_cache=v_pool, block_table=table,
                              platform=runnable_platform.name, check=True)
    assert r.report.within_tolerance, r.report.check_failures
    qwenlayers.prefill(cfg, w, hidden, seq_lens, k_cache=k_one, v_cache=v_one, block_table=table, platform=runnable_platform.name)
    assert torch.equal(k_pool, k_one) and torch.equal(v_pool, v_one)
    assert torch.equal(k_pool[3], torch.full_like(k_pool[3], POISON))  # a block no sequence reaches


# ---------------------------------------------------------------- CLI


@pytest.mark.neutral
@pytest.mark.sim
@pytest.mark.parametrize("args", [
    ["run", "--paged", "--block-size", "16", "--seq-lens", "1,16,17,40"],
    ["run", "--phase", "prefill", "--paged", "--block-size", "64", "--seq-lens", "5,70"],
    ["run", "--paged", "--block-size", "16", "--seq-lens", "3,20", "--tp", "2"],
])
def test_cli_run_paged(runnable_platform, args):
    import json

    from typer.testing import CliRunner

    from qwenlayers.cli import app

    res = CliRunner().invoke(app, [*args, "--platform", runnable_platform.name, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["within_tolerance"] is True
    if "--tp" not in args:
        assert data["paged"]["block"] == int(args[args.index("--block-size") + 1])


@pytest.mark.neutral
@pytest.mark.sim
def test_cli_bench_paged_sets_the_paged_time_beside_the_contiguous_one(runnable_platform, tmp_path):
    from typer.testing import CliRunner

    from qwenlayers.cli import app

    res = CliRunner().invoke(app, ["bench", "--paged", "--block-size", "16", "--batch", "2", "--seq-len", "40", "--no-baseline",
                                   "--platform", runnable_platform.name, "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "paged (16-row blocks, shuffled tables) at 2 x 40" in res.output and "paged / contiguous" in res.output
