import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwenlayers.api import plan
from qwenlayers.core.config import PRESETS, preset
from qwenlayers.core.tiling import (
    PYPTO_CUBE_MERGE,
    PYPTO_MERGE_COPY_KB,
    TILE_FIELDS,
    TilingPlan,
    check_plan,
    parse_overrides,
    tile_checks,
)
from qwenlayers.errors import TilingError
from qwenlayers.registry import get_registry


@pytest.mark.parametrize("phase", ["decode", "prefill"])
@pytest.mark.parametrize("model", list(PRESETS))
def test_default_plans_fit_every_platform(model, phase):
    reg = get_registry()
    for name in reg.names():
        p = reg.get(name)
        result = reg.tiling_defaults(p, preset(model), phase)
        assert all(c.ok for c in tile_checks(result, preset(model), p))


def test_32b_anchor_is_reference_000():
    p = plan("qwen3-32b", "decode", platform="a5sim", budgets="pypto-lib")
    assert p.values() == {"tok_tile": 4, "k_chunk": 128, "q_out_chunk": 64, "kv_out_chunk": 64,
                          "mlp_out_chunk": 64, "q_head_batch": 4, "seq_tile": 64,  # reference 000's table
                          "cube_m": 16, "k_l1": 1024,  # pypto cube staging (docs/decode.md)
                          "kv_block": 4096,  # decode attention rows per loop iteration (docs/decode.md)
                          "score_cols": 128,  # decode softmax tile columns (docs/decode.md)
                          "qk_cols": 512,  # decode Q@K^T rows per cube step (docs/decode.md)
                          "cube_merge": 2, "merge_copy_kb": 2048,  # pypto task merging (docs/decode.md)
                          "stitch_loops": 50}  # pypto's runtime default
    # prefill: 64-token projection tiles, 128 stitched loop iterations, the key block is the
    # query tile (SCORE_COLS / QK_COLS, decode-only fields, follow it down) (docs/prefill.md)
    assert plan("qwen3-32b", "prefill", platform="a5sim", budgets="pypto-lib").values() == {
        **p.values(), "cube_m": 64, "stitch_loops": 128, "kv_block": 64, "score_cols": 64, "qk_cols": 64}
    # under the target's own budgets decode keeps the same plan (the faster one measured at 32B, docs/budgets.md)
    assert plan("qwen3-32b", "decode", platform="a5sim").values() == p.values()


@pytest.mark.parametrize(("name", "tilelet", "tile", "tok_tile", "q_head_batch"), [("a5sim", 65536, 32768, 128, 128),
                                                                                  ("a2a3sim", 32768, 32768, 64, 64)])
def test_each_target_has_its_own_budgets_and_prefill_plan(name, tilelet, tile, tok_tile, q_head_batch):
    p = get_registry().get(name)
    assert (p.budgets.tilelet_bytes, p.budgets.tile_bytes) == (tilelet, tile) and p.budgets.source
    assert [b.name for b in p.budget_sets] == [p.budgets.name, "pypto-lib"]
    pre = plan("qwen3-32b", "prefill", platform=name)
    assert (pre.tok_tile, pre.q_head_batch, pre.seq_tile, pre.cube_m) == (tok_tile, q_head_batch, 128, 128)
    assert (pre.k_chunk, pre.q_out_chunk, pre.mlp_out_chunk) == (128, 128, 128)  # [128, 128] bf16 L0 tiles = 32 KB
    assert all(c.ok for c in tile_checks(pre, preset("qwen3-32b"), p))
    # the same plan is refused under the reference's rules, and the reference's plan is what pypto-lib gives
    with pytest.raises(TilingError, match="exceeds the (TILE|TILELET) budget of (16384|2048) B"):
        plan("qwen3-32b", "prefill", platform=name, budgets="pypto-lib", overrides=pre.values())
    assert plan("qwen3-32b", "prefill", platform=name, budgets="pypto-lib").seq_tile == 64


def test_an_unknown_budget_set_names_the_allowed_ones():
    with pytest.raises(TilingError, match="offers no budget set 'nope'; allowed: default, a5, pypto-lib"):
        plan("tiny", "decode", platform="a5sim", budgets="nope")


def test_kv_block_is_whole_seq_tiles_and_fits_the_cache():
    p = plan("tiny", "decode", platform="a5sim")  # max_seq 256: the 4096 anchor is fitted down
    assert p.kv_block == 256 and p.attention_block == 256
    pre = plan("tiny", "prefill", platform="a5sim")
    assert pre.attention_block == pre.seq_tile  # prefill: query tile = key block
    with pytest.raises(TilingError, match="kv_block=96 is not a multiple of seq_tile=64"):
        plan("tiny", "decode", platform="a5sim", overrides={"kv_block": 96})
    with pytest.raises(TilingError, match="kv_block=512 exceeds max_seq=256"):
        plan("tiny", "decode", platform="a5sim", overrides={"kv_block": 512})


def test_override_over_budget_names_tile_bytes_budget_and_origin():
    with pytest.raises(TilingError) as info:
        plan("qwen3-32b", "decode", platform="a5sim", budgets="pypto-lib", overrides={"seq_tile": 256})
    msg = str(info.value)
    assert "'attn scores' [4 x 256] fp32 = 4096 B" in msg and "TILELET budget of 2048 B" in msg
    assert "SEQ_TILE from user override" in msg and "use SEQ_TILE <= 64" in msg


def test_override_divisibility_and_unknown_key():
    with pytest.raises(TilingError, match="k_chunk=96 does not divide hidden_size=5120"):
        plan("qwen3-32b", "prefill", platform="a5sim", overrides={"k_chunk": 96})
    with pytest.raises(TilingError, match="unknown tile key"):
        plan("qwen3-32b", "prefill", platform="a5sim", overrides={"warp": 4})
    with pytest.raises(TilingError, match="not KEY=INT"):
        parse_overrides(["SEQ_TILE"])


def test_origin_is_recorded():
    p = plan("tiny", "decode", platform="a5sim", overrides={"seq_tile": 32})
    assert p.origin_of("seq_tile") == "user" and p.origin_of("k_chunk").startswith("plugin qwenlayers-a5sim")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(list(TILE_FIELDS)), st.sampled_from([1, 2, 4, 8, 16, 32, 48, 64, 128, 256, 512]), max_size=3))
def test_any_override_passes_or_raises_tiling_error(overrides):
    reg = get_registry()
    platform = reg.get("a5sim")
    cfg = preset("qwen3-14b")
    base = reg.tiling_defaults(platform, cfg, "prefill")
    candidate = base.with_overrides(overrides)
    try:
        check_plan(candidate, cfg, platform)
    except TilingError as exc:
        assert "B" in str(exc) or "divide" in str(exc) or "multiple" in str(exc)
        return
    for c in tile_checks(candidate, cfg, platform):
        assert c.tile.bytes <= c.budget


def test_the_default_kv_block_shrinks_to_the_longest_sequence_of_the_call():
    assert plan("qwen3-0.6b", "decode", platform="a5sim").kv_block == 4096  # no lengths: the anchor
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=128).kv_block == 128
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=1000).kv_block == 1024
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=5).kv_block == 64  # never below SEQ_TILE
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=5).score_cols == 64  # follows KV_BLOCK down
    user = plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=128, overrides={"kv_block": 2048})
    assert user.kv_block == 2048 and user.origin_of("kv_block") == "user"  # a user value is kept
    # prefill: the key block drops to the query tile when one key block holds every sequence
    assert plan("qwen3-0.6b", "prefill", platform="a5sim", batch=1, seq_len=128).kv_block == 128
    assert plan("qwen3-0.6b", "prefill", platform="a5sim", batch=1, seq_len=2048).kv_block == 512


def test_row_vector_tiles_keep_the_plan_tile_bytes_and_divide_the_row():
    """The [rows, H] vector ops run in one-row tiles of at most tok_tile x chunk elements that
    divide the row (qwen3-32b hidden 5120: 512; a width of 3200 in 64-wide chunks: 128)."""
    from qwenlayers.core.kernels.layer_blocks import _row_tile

    assert _row_tile(5120, 128, 4) == 512
    assert _row_tile(3200, 64, 4) == 128
    assert _row_tile(4096, 128, 1) == 128  # one decode row: the plan's chunk itself


def test_task_merging_fields_are_plan_values_handed_to_pypto_as_pass_options():
    p = plan("qwen3-32b", "decode", platform="a2a3sim")
    assert p.pass_options() == {"cube_nbuffer_setting": {-1: 2}, "mg_copyin_upper_bound": 2048 * 1024}
    assert p.origin_of("cube_merge").startswith("plugin qwenlayers-a2a3sim")
    user = plan("qwen3-32b", "decode", platform="a2a3sim", overrides={"CUBE_MERGE": 1, "MERGE_COPY_KB": 102400})
    assert user.origin_of("cube_merge") == "user"
    assert user.pass_options() == {"cube_nbuffer_setting": {-1: 1}, "mg_copyin_upper_bound": 100 * 1024 * 1024}
    # a plan that never names them (an older tuned or hand-written plan) compiles as pypto would
    bare = TilingPlan(phase="decode", tok_tile=4, k_chunk=128, q_out_chunk=64, kv_out_chunk=64, mlp_out_chunk=64,
                      q_head_batch=4, seq_tile=64)
    assert (bare.cube_merge, bare.merge_copy_kb) == (PYPTO_CUBE_MERGE, PYPTO_MERGE_COPY_KB)
    with pytest.raises(TilingError, match=r"CUBE_MERGE=0 \(from user\)"):
        plan("tiny", "decode", platform="a5sim", overrides={"cube_merge": 0})


def test_a_bad_user_value_is_blamed_on_the_user_not_the_plugin():
    with pytest.raises(TilingError, match=r"SEQ_TILE=0 \(from user\)") as info:
        plan("tiny", "prefill", platform="a5sim", overrides={"seq_tile": 0})
    assert "plugin" not in str(info.value)


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_the_plugins_kv_block_follows_a_users_seq_tile(phase):
    p = plan("qwen3-0.6b", phase, platform="a5sim", overrides={"seq_tile": 48})
    assert p.seq_tile == 48 and p.kv_block % 48 == 0
    assert p.origin_of("seq_tile") == "user" and p.origin_of("kv_block") == "plugin qwenlayers-a5sim, fitted"


@pytest.mark.parametrize(("model", "overrides", "message"), [
    ("tiny", {"score_cols": 96}, "score_cols=96 is not a multiple of seq_tile=64"),
    ("tiny", {"score_cols": 128, "kv_block": 64}, "score_cols=128 does not divide kv_block=64"),
    ("qwen3-32b", {"score_cols": 256}, "'softmax scores' \\[4 x 256\\] fp32 = 4096 B"),
    ("qwen3-32b", {"qk_cols": 192}, "qk_cols=192 is not a multiple of seq_tile=64 by a power of two"),
    ("qwen3-32b", {"qk_cols": 512, "kv_block": 256}, "qk_cols=512 does not divide kv_block=256"),
    ("qwen3-32b", {"qk_cols": 1024}, "'Q@K\\^T K tile' \\[1024 x 8\\] bf16 = 16384 B has rows of 16 B"),
])
def test_attention_column_overrides_that_break_a_rule_say_which(model, overrides, message):
    with pytest.raises(TilingError, match=message):
        plan(model, "decode", platform="a5sim", budgets="pypto-lib", overrides=overrides)


def test_score_cols_are_whole_seq_tiles_inside_one_kv_block():
    assert plan("tiny", "decode", platform="a5sim").score_cols == 128
    assert plan("tiny", "decode", platform="a5sim", overrides={"kv_block": 64}).score_cols == 64  # the plugin's follows
    # a user SCORE_COLS keeps the fitted KV_BLOCK from going below it
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=5, overrides={"score_cols": 128}).kv_block == 128


def test_qk_cols_copy_whole_seq_tiles_and_split_head_dim_to_keep_the_l0_tile():
    p = plan("qwen3-32b", "decode", platform="a2a3sim")
    assert p.qk_cols == 512 and p.qk_k_l0(128) == 16  # L0 K tile [512, 16] = the [64, 128] kv block's bytes
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=200).qk_cols == 256  # follows KV_BLOCK down
    assert plan("tiny-gqa8", "decode", platform="a5sim").qk_k_l0(32) >= 16  # head_dim 32: at most 2 splits of 16
    # a user QK_COLS keeps the fitted KV_BLOCK from going below it
    assert plan("qwen3-0.6b", "decode", platform="a5sim", batch=4, seq_len=5, overrides={"qk_cols": 128}).kv_block == 128


def test_prefill_attention_rows_are_token_head_pairs_not_one_kv_group():
    # decode's vector tiles hold heads of one KV group (G = 2 at 0.6B); prefill's hold (token, head)
    # rows of a query tile, so its plan keeps the anchor's 4 (128 under the a5's own budgets)
    assert plan("qwen3-0.6b", "decode", platform="a5sim").q_head_batch == 2
    assert plan("qwen3-0.6b", "prefill", platform="a5sim", budgets="pypto-lib").q_head_batch == 4
    assert plan("qwen3-0.6b", "prefill", platform="a5sim").q_head_batch == 128
    with pytest.raises(TilingError, match="q_head_batch=3 does not divide seq_tile x query heads per KV group=256"):
        plan("qwen3-0.6b", "prefill", platform="a5sim", overrides={"q_head_batch": 3})
