"""Budget sets: each platform's own (its measured choice) and pypto-lib's, offered everywhere.

The suite runs under each platform's own set; this file also builds and runs decode and prefill
under ``pypto-lib`` (reference 000's 2 KB / 16 KB) and checks them against the golden.
"""

import pytest
import torch

import qwenlayers
from qwenlayers import golden
from qwenlayers.core.compare import compare
from qwenlayers.core.config import preset
from qwenlayers.core.platform import PYPTO_LIB_BUDGETS, Budgets, Buffers
from qwenlayers.core.tiling import batch_tile_rows
from qwenlayers.errors import TilingError
from qwenlayers.plugin_kit import derived_budgets
from qwenlayers.registry import get_registry


def test_the_rule_derives_each_targets_budgets_from_its_buffers():
    small_ub = Buffers(ub=196608, l0a=65536, l0b=65536, l0c=131072, l1=524288)
    large_ub = Buffers(ub=253952, l0a=65536, l0b=65536, l0c=262144, l1=524288)
    # one op's three tiles + 32 KB: 3 x 64 KB + 32 KB = 224 KB fits the A5's 248 KB UB, not the a2a3's 192 KB
    assert (derived_budgets("x", small_ub).tilelet_bytes, derived_budgets("x", small_ub).tile_bytes) == (32768, 32768)
    assert derived_budgets("x", large_ub).tilelet_bytes == 65536
    assert derived_budgets("x", large_ub, op_tiles=6).tilelet_bytes == 32768
    assert derived_budgets("x", large_ub, ub_reserve=64 * 1024).tilelet_bytes == 32768
    assert "3 TILELET tiles (one op's inputs and output) + 32768 B in UB 253952 B" in derived_budgets("x", large_ub).source


def test_every_platform_offers_its_own_set_first_and_pypto_lib():
    reg = get_registry()
    for name in reg.names():
        p = reg.get(name)
        assert p.default_budgets is p.budget_sets[0] and p.budgets == p.default_budgets
        assert PYPTO_LIB_BUDGETS in p.budget_sets
        lib = p.with_budgets("pypto-lib")
        assert lib.budgets == PYPTO_LIB_BUDGETS and lib.name == p.name and lib.with_budgets("default").budgets == p.budgets
        assert lib.default_budgets == p.default_budgets  # switching keeps the plugin's own set known


def test_budget_sets_are_validated():
    with pytest.raises(ValueError, match="simple identifier"):
        Budgets(2048, 16384, name="has space")
    with pytest.raises(TilingError, match="allowed: default, a5, pypto-lib"):
        get_registry().get("a5sim").with_budgets("a6")


def test_the_environment_selects_a_set_and_an_argument_wins(monkeypatch):
    reg = get_registry()
    monkeypatch.setenv("QWENLAYERS_BUDGETS", "pypto-lib")
    assert reg.select("a5sim").budgets.name == "pypto-lib"
    assert reg.select("a5sim", budgets="default").budgets.name == "a5"


def test_plans_are_checked_under_the_set_in_force():
    own = qwenlayers.plan("qwen3-32b", "prefill", platform="a5sim")
    assert own.seq_tile == 128 and own.cube_m == 128
    with pytest.raises(TilingError, match="exceeds the TILE budget of 16384 B"):
        qwenlayers.plan("qwen3-32b", "prefill", platform="a5sim", budgets="pypto-lib", overrides={"cube_m": 128})


@pytest.mark.sim
def test_decode_and_prefill_run_under_pypto_lib_budgets(runnable_platform):
    cfg = preset("tiny")
    weights = qwenlayers.LayerWeights.random(cfg, seed=3)
    gen = torch.Generator().manual_seed(3)
    # 10 sequences: 20 new K/V rows, more than one 2 KB cache-write tile holds (16 rows of 64 bf16)
    lens = [5, 70, 1, 3, 9, 17, 33, 2, 100, 64]
    rows = len(lens) * cfg.num_key_value_heads
    assert batch_tile_rows(2 * cfg.head_dim, PYPTO_LIB_BUDGETS.tilelet_bytes, rows) < rows
    shape = (len(lens), cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    hidden = torch.randn(len(lens), cfg.hidden_size, generator=gen).bfloat16()
    k, v = torch.randn(shape, generator=gen).bfloat16(), torch.randn(shape, generator=gen).bfloat16()
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    ref, ref_k, ref_v = golden.decode(cfg, weights, hidden, k.clone(), v.clone(), seq_lens)
    dec = qwenlayers.decode(cfg, weights, hidden, k, v, seq_lens, platform=runnable_platform.name, budgets="pypto-lib")
    assert dec.report.budgets == "pypto-lib" and dec.report.plan["seq_tile"] == 64
    assert compare(dec.out, ref).ok
    assert compare(k, ref_k).ok and compare(v, ref_v).ok  # every tile of the cache write landed

    ph = torch.randn(len(lens), max(lens), cfg.hidden_size, generator=gen).bfloat16()
    pre = qwenlayers.prefill(cfg, weights, ph, seq_lens, platform=runnable_platform.name, budgets="pypto-lib", check=True)
    assert pre.report.budgets == "pypto-lib" and pre.report.plan["cube_m"] == 64
    assert pre.report.within_tolerance is True
