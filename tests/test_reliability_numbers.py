"""Issue 17, "PASS only when the numbers are right" and "arguments that share memory".

A NaN never matches a NaN: a check with any non-finite value in an output or a written cache
row fails and says where. Non-finite inputs (hidden, weights, the cache rows the attention
reads), configs with impossible constants or coerced sizes, arguments whose memory overlaps,
and an empty batch are refused before any work with an InputError naming the culprit, and the
caller's tensors are bit-identical afterwards.

Almost every refusal happens before pypto is touched, so those tests need no simulator: an
accepted call is shown by running it against a platform name that does not exist, which
fails only after every input check passed.
"""

import json

import pytest
import torch
from typer.testing import CliRunner

import qwenlayers
from qwenlayers import golden
from qwenlayers.cli import app
from qwenlayers.core import contract
from qwenlayers.core.compare import compare, verdict
from qwenlayers.core.config import Qwen3Config, as_config, preset
from qwenlayers.errors import CheckpointError, InputError, UnknownPlatformError
from qwenlayers.inputs import random_inputs
from qwenlayers.reports import compare_layer as _compare_layer

runner = CliRunner()
NOWHERE = "no-such-platform"  # reached only once every input check passed
NAN, INF = float("nan"), float("inf")


def bits(t):
    """A NaN-aware, bit-exact snapshot of a tensor."""
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.detach().clone().view(as_int[t.element_size()])


def snapshot(*tensors):
    return [bits(t) for t in tensors]


def assert_unchanged(tensors, before):
    for t, b in zip(tensors, before):
        assert torch.equal(bits(t), b)


def decode_inputs(cfg=None, lens=(3, 9)):
    cfg = cfg or preset("tiny")
    inputs = random_inputs(cfg, "decode", list(lens))
    return cfg, qwenlayers.LayerWeights.random(cfg), inputs


def prefill_inputs(cfg=None, lens=(3, 9)):
    cfg = cfg or preset("tiny")
    inputs = random_inputs(cfg, "prefill", list(lens))
    return cfg, qwenlayers.LayerWeights.random(cfg), inputs


def call_decode(cfg, w, hidden, k_cache, v_cache, seq_lens, **kwargs):
    return qwenlayers.decode(cfg, w, hidden, k_cache, v_cache, seq_lens, platform=NOWHERE, **kwargs)


# ------------------------------------------------------------------ compare(): a NaN is never a match
def test_compare_all_nan_output_against_all_nan_golden_fails():
    nan = torch.full((2, 256), NAN).bfloat16()
    c = compare(nan.clone(), nan)
    assert not c.ok and c.nonfinite == 512 and c.ref_nonfinite == 512
    assert c.nonfinite_first == ((0, 0), (0, 1), (0, 2))
    assert "512 of 512 values are non-finite" in c.failure("out")


def test_compare_nan_output_where_golden_is_finite_fails_with_count_and_positions():
    ref = torch.randn(3, 8).bfloat16()
    out = ref.clone()
    out[1, 4], out[2, 0] = NAN, INF
    c = compare(out, ref)
    assert not c.ok and c.nonfinite == 2 and c.ref_nonfinite == 0 and c.nonfinite_first == ((1, 4), (2, 0))
    assert c.max_abs_err == INF
    assert c.failure("out") == "out: 2 of 24 values are non-finite (NaN/Inf), first at [1, 4], [2, 0]"


def test_compare_nan_golden_where_output_is_finite_fails():
    out = torch.randn(2, 8).bfloat16()
    ref = out.clone()
    ref[0, 3] = NAN
    c = compare(out, ref)
    assert not c.ok and c.nonfinite == 0 and c.ref_nonfinite == 1 and "the golden has 1 non-finite" in c.failure("out")


def test_compare_identical_inf_is_not_a_match():
    ref = torch.tensor([[1.0, INF, 0.5]]).bfloat16()
    c = compare(ref.clone(), ref)
    assert not c.ok and c.nonfinite == 1 and c.nonfinite_first == ((0, 1),)


def test_compare_passthrough_rows_may_hold_identical_nan_garbage():
    ref = torch.randn(2, 1, 4, 8).bfloat16()
    ref[:, :, 2:] = NAN  # rows nobody may touch, from torch.empty
    through = torch.tensor([False, False, True, True])[None, None, :, None].expand(2, 1, 4, 1)
    c = compare(ref.clone(), ref, passthrough=through)
    assert c.ok and c.nonfinite == 0 and c.checked == 2 * 4 * 8 // 2 and c.failure("k_cache") is None


def test_compare_passthrough_does_not_excuse_nan_in_a_written_row():
    ref = torch.randn(1, 1, 4, 8).bfloat16()
    through = torch.tensor([True, True, False, True])[None, None, :, None]
    out = ref.clone()
    out[0, 0, 2, 5] = NAN  # the written row
    c = compare(out, ref, passthrough=through)
    assert not c.ok and c.nonfinite == 1 and c.nonfinite_first == ((0, 0, 2, 5),)
    changed = ref.clone()
    changed[0, 0, 0, 0] = NAN  # a passthrough element that changed is still a miss
    assert not compare(changed, ref, passthrough=through).ok


def test_verdict_names_each_failing_tensor_and_counts_its_nonfinite_values():
    good = torch.randn(2, 8).bfloat16()
    bad = good.clone()
    bad[1, 1] = NAN
    v = verdict({"out": compare(bad, good), "k_cache": compare(good.clone(), good), "v_cache": compare(good.clone(), good)})
    assert not v.ok and v.nonfinite == {"out": {"count": 1, "golden": 0, "first": [[1, 1]]}}
    assert v.failures == ["out: 1 of 16 values are non-finite (NaN/Inf), first at [1, 1]"]
    fine = verdict({"out": compare(good.clone(), good), "k_cache": compare(good.clone(), good)})
    assert fine.ok and fine.nonfinite == {} and fine.failures == []


def test_passthrough_rows_are_the_rows_each_phase_must_not_write():
    decode = contract.passthrough_rows("decode", [1, 3], 4)
    prefill = contract.passthrough_rows("prefill", [1, 3], 4)
    assert decode.shape == prefill.shape == (2, 1, 4, 1)
    assert decode[:, 0, :, 0].tolist() == [[False, True, True, True], [True, True, False, True]]
    assert prefill[:, 0, :, 0].tolist() == [[False, True, True, True], [False, False, False, True]]


def test_layer_check_fails_on_a_nan_written_cache_row_and_passes_nan_garbage_elsewhere():
    """What ``decode(check=True)`` records: garbage past seq_len is fine, a NaN written row is not."""
    cfg, w, inputs = decode_inputs(lens=(3, 9))
    hidden, k_cache, v_cache, seq_lens = inputs.values()
    for b, n in enumerate([3, 9]):
        k_cache[b, :, n:] = NAN
        v_cache[b, :, n:] = NAN
    ref, ref_k, ref_v = golden.decode(cfg, w, hidden, k_cache, v_cache, seq_lens)
    good = verdict(_compare_layer("decode", [3, 9], ref.clone(), ref, (ref_k.clone(), ref_v.clone()), (ref_k, ref_v)))
    assert good.ok, good.failures
    broken_k = ref_k.clone()
    broken_k[1, 0, 8, 7] = NAN  # row seq_len-1 of sequence 1: a written row
    bad = verdict(_compare_layer("decode", [3, 9], ref.clone(), ref, (broken_k, ref_v.clone()), (ref_k, ref_v)))
    assert not bad.ok and bad.nonfinite == {"k_cache": {"count": 1, "golden": 0, "first": [[1, 0, 8, 7]]}}
    assert bad.failures[0].startswith("k_cache: 1 of 256 values are non-finite")


def test_golden_keeps_computing_nan_so_a_nan_run_can_be_checked():
    cfg, w, inputs = decode_inputs()
    hidden = inputs["hidden"].clone()
    hidden[0, 0] = NAN
    out, _, _ = golden.decode(cfg, w, hidden, inputs["k_cache"], inputs["v_cache"], inputs["seq_lens"])
    assert out[0].isnan().any() and out[1].isfinite().all()


# ------------------------------------------------------------------ non-finite inputs are refused up front
def test_decode_refuses_nan_in_hidden():
    cfg, w, inputs = decode_inputs()
    inputs["hidden"][1, 7] = NAN
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match=r"hidden holds 1 non-finite value\(s\).*first at \[1, 7\] \(nan\).*allow_nonfinite=True"):
        call_decode(cfg, w, **inputs)
    assert_unchanged(inputs.values(), before)


def test_decode_refuses_inf_in_a_weight():
    cfg, w, inputs = decode_inputs()
    tensors = dict(w.tensors)
    tensors["mlp.down_proj.weight"] = tensors["mlp.down_proj.weight"].clone()
    tensors["mlp.down_proj.weight"][5, 9] = -INF
    before = snapshot(*inputs.values(), *tensors.values())
    with pytest.raises(InputError, match=r"weight mlp.down_proj.weight holds 1 non-finite value\(s\).*first at \[5, 9\] \(-inf\)"):
        call_decode(cfg, tensors, **inputs)
    assert_unchanged([*inputs.values(), *tensors.values()], before)


@pytest.mark.parametrize("name", ["k_cache", "v_cache"])
def test_decode_refuses_nan_in_a_cache_row_the_attention_reads(name):
    cfg, w, inputs = decode_inputs(lens=(3, 9))
    inputs[name][1, 1, 4, 3] = NAN  # sequence 1 reads rows 0..7
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match=rf"{name} holds 1 non-finite.*rows 0..7 of sequence 1.*first at \[1, 1, 4, 3\]"):
        call_decode(cfg, w, **inputs)
    assert_unchanged(inputs.values(), before)


def test_decode_accepts_nan_in_cache_rows_it_does_not_read():
    """Row seq_len-1 is overwritten and rows past it are never touched: torch.empty garbage is
    legitimate. A sequence of length 1 reads no cache row at all."""
    cfg, w, inputs = decode_inputs(lens=(1, 3, 9))
    for b, n in enumerate([1, 3, 9]):
        inputs["k_cache"][b, :, n - 1 :] = NAN
        inputs["v_cache"][b, :, n - 1 :] = INF
    before = snapshot(*inputs.values())
    with pytest.raises(UnknownPlatformError):  # every input check passed
        call_decode(cfg, w, **inputs)
    assert_unchanged(inputs.values(), before)


def test_decode_allow_nonfinite_opts_in():
    cfg, w, inputs = decode_inputs()
    inputs["hidden"][0, 0] = NAN
    inputs["k_cache"][0, 0, 0, 0] = INF
    with pytest.raises(UnknownPlatformError):
        call_decode(cfg, w, **inputs, allow_nonfinite=True)


def test_prefill_refuses_nan_in_a_token_and_accepts_nan_in_the_padding():
    cfg, w, inputs = prefill_inputs(lens=(3, 9))
    inputs["hidden"][0, 3:] = NAN  # padding of sequence 0 (seq_len 3): never read
    before = snapshot(*inputs.values())
    with pytest.raises(UnknownPlatformError):
        qwenlayers.prefill(cfg, w, **inputs, platform=NOWHERE)
    inputs["hidden"][1, 8, 17] = INF  # the last token of sequence 1
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match=r"hidden holds 1 non-finite value\(s\) \(NaN/Inf\) in the tokens of sequence 1 .*first at \[1, 8, 17\]"):
        qwenlayers.prefill(cfg, w, **inputs, platform=NOWHERE)
    assert_unchanged(inputs.values(), before)
    with pytest.raises(UnknownPlatformError):
        qwenlayers.prefill(cfg, w, **inputs, platform=NOWHERE, allow_nonfinite=True)


def test_prefill_refuses_nan_in_a_weight_but_not_in_the_callers_caches():
    cfg, w, inputs = prefill_inputs(lens=(3, 9))
    shape = (2, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_cache, v_cache = torch.full(shape, NAN).bfloat16(), torch.full(shape, NAN).bfloat16()  # prefill reads none of them
    with pytest.raises(UnknownPlatformError):
        qwenlayers.prefill(cfg, w, **inputs, k_cache=k_cache, v_cache=v_cache, platform=NOWHERE)
    tensors = dict(w.tensors)
    tensors["self_attn.q_norm.weight"] = tensors["self_attn.q_norm.weight"].clone()
    tensors["self_attn.q_norm.weight"][3] = NAN
    before = snapshot(*inputs.values(), k_cache, v_cache)
    with pytest.raises(InputError, match=r"weight self_attn.q_norm.weight holds 1 non-finite.*first at \[3\]"):
        qwenlayers.prefill(cfg, tensors, **inputs, k_cache=k_cache, v_cache=v_cache, platform=NOWHERE)
    assert_unchanged([*inputs.values(), k_cache, v_cache], before)


def test_tensor_parallel_refuses_nonfinite_inputs_the_same_way():
    cfg, w, inputs = decode_inputs(preset("tiny-kv4"), lens=(2, 5))
    inputs["v_cache"][0, 3, 0, 1] = NAN
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match=r"v_cache holds 1 non-finite.*first at \[0, 3, 0, 1\]"):
        qwenlayers.decode_tp(cfg, w, **inputs, tp=2, platform=NOWHERE)
    assert_unchanged(inputs.values(), before)
    with pytest.raises(UnknownPlatformError):
        qwenlayers.decode_tp(cfg, w, **inputs, tp=2, platform=NOWHERE, allow_nonfinite=True)
    cfg, w, inputs = prefill_inputs(preset("tiny-kv4"), lens=(2, 5))
    inputs["hidden"][1, 4, 0] = NAN
    with pytest.raises(InputError, match=r"hidden holds 1 non-finite.*sequence 1"):
        qwenlayers.prefill_tp(cfg, w, **inputs, tp=2, platform=NOWHERE)
    with pytest.raises(UnknownPlatformError):
        qwenlayers.prefill_tp(cfg, w, **inputs, tp=2, platform=NOWHERE, allow_nonfinite=True)


def test_cli_run_refuses_a_checkpoint_with_a_nan_weight(tmp_path):
    cfg = preset("tiny")
    w = qwenlayers.LayerWeights.random(cfg)
    tensors = dict(w.tensors)
    tensors["self_attn.o_proj.weight"] = tensors["self_attn.o_proj.weight"].clone()
    tensors["self_attn.o_proj.weight"][2, 3] = NAN
    qwenlayers.LayerWeights.write_checkpoint(tmp_path, {0: qwenlayers.LayerWeights(cfg, tensors)})
    res = runner.invoke(app, ["run", "--weights", str(tmp_path), "--platform", NOWHERE])
    assert res.exit_code == 2, res.output
    assert "self_attn.o_proj.weight" in res.output and "--allow-nonfinite" in res.output


# ------------------------------------------------------------------ configs: refused with the field named, never coerced
@pytest.mark.parametrize(("field", "value", "message"), [
    ("rms_norm_eps", 0.0, "finite number > 0"),
    ("rms_norm_eps", -1e-6, "finite number > 0"),
    ("rms_norm_eps", None, "got None"),
    ("rms_norm_eps", "1e-6", "got '1e-6' \\(str\\)"),
    ("rope_theta", 0, "finite number > 0"),
    ("rope_theta", -1.0, "finite number > 0"),
    ("rope_theta", float("nan"), "got nan"),
    ("rope_theta", None, "got None"),
    ("num_key_value_heads", 0, "positive integer, got 0"),
    ("num_key_value_heads", None, "got None"),
    ("head_dim", 0, "positive integer, got 0"),
    ("head_dim", None, "got None"),
    ("hidden_size", 256.5, "got 256.5 \\(float\\)"),
    ("hidden_size", "256", "got '256' \\(str\\)"),
    ("hidden_size", 256.0, "got 256.0 \\(float\\)"),
    ("hidden_size", None, "got None"),
    ("intermediate_size", True, "got True \\(bool\\)"),
    ("num_attention_heads", "4", "got '4' \\(str\\)"),
])
def test_hf_config_refuses_a_bad_field_by_name(field, value, message):
    hf = {**preset("tiny").to_hf(), field: value}
    with pytest.raises(InputError, match=rf"config <dict>: {field} must be .*{message}"):
        Qwen3Config.from_hf(hf)
    with pytest.raises(InputError, match=rf"{field} must be .*{message}"):
        as_config(hf)


def test_hf_config_file_with_a_bad_field_names_the_file_and_the_field(tmp_path):
    hf = {**preset("tiny").to_hf(), "rope_theta": 0}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match=rf"config {tmp_path / 'config.json'}: rope_theta must be a finite number > 0") as info:
        Qwen3Config.from_hf(tmp_path)
    assert isinstance(info.value, InputError) and info.value.exit_code == 2


def test_hf_config_nested_rope_theta_is_checked_too():
    hf = preset("tiny").to_hf()
    del hf["rope_theta"]
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 0.0}
    with pytest.raises(InputError, match="rope_parameters.rope_theta must be a finite number > 0"):
        Qwen3Config.from_hf(hf)
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
    assert Qwen3Config.from_hf({**hf, "rope_theta": None}).rope_theta == 5e5  # the null is not the value used
    with pytest.raises(InputError, match="rope_parameters must be an object"):
        Qwen3Config.from_hf({**hf, "rope_parameters": "default"})


def test_hf_config_absent_optional_fields_keep_their_defaults():
    hf = preset("tiny").to_hf()
    for key in ("num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta"):
        del hf[key]
    c = Qwen3Config.from_hf(hf)
    assert (c.num_key_value_heads, c.head_dim, c.rms_norm_eps, c.rope_theta) == (4, 64, 1e-6, 1e6)
    assert isinstance(Qwen3Config.from_hf({**hf, "rope_theta": 1000000}).rope_theta, float)  # an int theta is the same number


@pytest.mark.parametrize(("field", "value"), [
    ("hidden_size", 256.5), ("hidden_size", "256"), ("head_dim", 0), ("num_key_value_heads", 0), ("max_seq", True),
    ("max_seq", "4096"), ("rms_norm_eps", 0.0), ("rope_theta", -5.0), ("rope_theta", None), ("name", ""),
])
def test_qwen3config_refuses_a_bad_field_by_name(field, value):
    fields = {**preset("tiny").as_dict(), field: value}
    with pytest.raises(InputError, match=rf"Qwen3Config.{field} must be"):
        Qwen3Config(**fields)
    with pytest.raises(InputError, match=rf"Qwen3Config.{field} must be"):
        as_config(fields)


def test_as_config_does_not_coerce_a_string_max_seq():
    with pytest.raises(InputError, match="Qwen3Config.max_seq must be a positive integer, got '4096'"):
        as_config({**preset("tiny").to_hf(), "max_seq": "4096"})


@pytest.mark.parametrize(("field", "value"), [("rope_theta", 0), ("rms_norm_eps", -1e-6)])
def test_cli_run_refuses_a_checkpoint_whose_config_makes_the_layer_nan(tmp_path, field, value):
    """Before: PASS with max error 0 and every output NaN (golden and kernel both NaN)."""
    cfg = preset("tiny")
    qwenlayers.LayerWeights.write_checkpoint(tmp_path, {0: qwenlayers.LayerWeights.random(cfg)})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), field: value}))
    res = runner.invoke(app, ["run", "--weights", str(tmp_path), "--platform", NOWHERE])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"config.json: {field} must be a finite number > 0" in text and "PASS" not in res.output


# ------------------------------------------------------------------ arguments that share memory
def test_decode_refuses_k_cache_is_v_cache():
    cfg, w, inputs = decode_inputs()
    inputs["v_cache"] = inputs["k_cache"]
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match=r"k_cache and v_cache share memory .*each have memory of their own"):
        call_decode(cfg, w, **inputs)
    assert_unchanged(inputs.values(), before)


@pytest.mark.parametrize("cache", ["k_cache", "v_cache"])
def test_decode_refuses_a_hidden_that_is_a_view_into_a_cache(cache):
    cfg, w, inputs = decode_inputs()
    inputs["hidden"] = inputs[cache].view(-1)[1000 : 1000 + 2 * cfg.hidden_size].view(2, cfg.hidden_size)
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match=rf"hidden and {cache} share memory \({2 * cfg.hidden_size * 2} bytes overlap\)"):
        call_decode(cfg, w, **inputs)
    assert_unchanged(inputs.values(), before)


def test_decode_refuses_seq_lens_inside_a_cache():
    cfg, w, inputs = decode_inputs()
    lens_view = inputs["v_cache"].view(-1)[:4].view(torch.int32)
    lens_view.copy_(torch.tensor([3, 9], dtype=torch.int32))  # valid lengths, so only the overlap is wrong
    inputs["seq_lens"] = lens_view
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match="v_cache and seq_lens share memory"):
        call_decode(cfg, w, **inputs)
    assert_unchanged(inputs.values(), before)


def test_decode_refuses_a_weight_inside_a_cache():
    cfg, w, inputs = decode_inputs()
    tensors = {**w.tensors, "self_attn.k_norm.weight": inputs["k_cache"].view(-1)[: cfg.head_dim]}
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match="k_cache and weight self_attn.k_norm.weight share memory"):
        call_decode(cfg, tensors, **inputs)
    assert_unchanged(inputs.values(), before)


def test_disjoint_parts_of_one_storage_and_tied_weights_are_accepted():
    """Overlapping bytes are what is refused, not a shared allocation; weights are never
    written, so two of them may be one tensor."""
    cfg, w, inputs = decode_inputs()
    both = torch.stack([inputs["k_cache"], inputs["v_cache"]])
    inputs["k_cache"], inputs["v_cache"] = both[0], both[1]
    tensors = {**w.tensors, "self_attn.k_norm.weight": w.tensors["self_attn.q_norm.weight"]}
    with pytest.raises(UnknownPlatformError):
        call_decode(cfg, tensors, **inputs)


def test_prefill_refuses_aliased_caches_and_a_hidden_inside_one():
    cfg, w, inputs = prefill_inputs(lens=(3, 9))
    shape = (2, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    k_cache = torch.zeros(shape).bfloat16()
    before = snapshot(*inputs.values(), k_cache)
    with pytest.raises(InputError, match="k_cache and v_cache share memory"):
        qwenlayers.prefill(cfg, w, **inputs, k_cache=k_cache, v_cache=k_cache, platform=NOWHERE)
    assert_unchanged([*inputs.values(), k_cache], before)
    v_cache = torch.zeros(shape).bfloat16()
    hidden = k_cache.view(-1)[: inputs["hidden"].numel()].view(inputs["hidden"].shape)
    hidden.copy_(inputs["hidden"])
    before = snapshot(hidden, k_cache, v_cache)
    with pytest.raises(InputError, match="hidden and k_cache share memory"):
        qwenlayers.prefill(cfg, w, hidden, inputs["seq_lens"], k_cache=k_cache, v_cache=v_cache, platform=NOWHERE)
    assert_unchanged([hidden, k_cache, v_cache], before)


def test_tensor_parallel_refuses_shared_memory_the_same_way():
    cfg, w, inputs = decode_inputs(preset("tiny-kv4"), lens=(2, 5))
    before = snapshot(*inputs.values())
    with pytest.raises(InputError, match="k_cache and v_cache share memory"):
        qwenlayers.decode_tp(cfg, w, inputs["hidden"], inputs["k_cache"], inputs["k_cache"], inputs["seq_lens"], tp=2,
                             platform=NOWHERE)
    assert_unchanged(inputs.values(), before)
    cfg, w, inputs = prefill_inputs(preset("tiny-kv4"), lens=(2, 5))
    shape = (2, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    cache = torch.zeros(shape).bfloat16()
    with pytest.raises(InputError, match="k_cache and v_cache share memory"):
        qwenlayers.prefill_tp(cfg, w, **inputs, k_cache=cache, v_cache=cache, tp=2, platform=NOWHERE)


# ------------------------------------------------------------------ an empty batch
def test_decode_and_prefill_refuse_an_empty_batch():
    cfg, w, inputs = decode_inputs()
    empty = {k: v[:0] for k, v in inputs.items()}
    with pytest.raises(InputError, match=r"decode got an empty batch \(0 sequences\); hidden must be \[batch, 256\] with batch >= 1"):
        call_decode(cfg, w, **empty)
    no_tokens = torch.zeros(0, 4, cfg.hidden_size).bfloat16()
    no_lens = torch.zeros(0, dtype=torch.int32)
    with pytest.raises(InputError, match=r"prefill got an empty batch .*batch >= 1"):
        qwenlayers.prefill(cfg, w, no_tokens, no_lens, platform=NOWHERE)
    shape = (0, cfg.num_key_value_heads, cfg.max_seq, cfg.head_dim)
    with pytest.raises(InputError, match="prefill got an empty batch"):
        qwenlayers.prefill(cfg, w, no_tokens, no_lens, k_cache=torch.zeros(shape).bfloat16(),
                           v_cache=torch.zeros(shape).bfloat16(), platform=NOWHERE)


def test_tensor_parallel_refuses_an_empty_batch():
    cfg, w, inputs = decode_inputs(preset("tiny-kv4"))
    with pytest.raises(InputError, match="decode got an empty batch"):
        qwenlayers.decode_tp(cfg, w, **{k: v[:0] for k, v in inputs.items()}, tp=2, platform=NOWHERE)
    with pytest.raises(InputError, match="prefill got an empty batch"):
        qwenlayers.prefill_tp(cfg, w, torch.zeros(0, 4, cfg.hidden_size).bfloat16(), torch.zeros(0, dtype=torch.int32), tp=2,
                              platform=NOWHERE)


def test_random_inputs_refuses_no_lengths():
    with pytest.raises(InputError, match="at least one length >= 1"):
        random_inputs(preset("tiny"), "prefill", [])


@pytest.mark.parametrize("args", [["--batch", "0"], ["--phase", "prefill", "--batch", "0"], ["--seq-lens", ","],
                                  ["--tp", "2", "--batch", "0"]])
def test_cli_run_with_no_sequences_exits_2_with_what_is_allowed(args):
    res = runner.invoke(app, ["run", *args, "--platform", NOWHERE])
    assert res.exit_code == 2, res.output
    assert "--batch N with N >= 1" in " ".join(res.output.split()) and "max() arg" not in res.output


# ------------------------------------------------------------------ a NaN run is a FAIL, not a PASS (simulator)
@pytest.mark.sim
def test_a_nan_weight_run_with_allow_nonfinite_fails_its_check(runnable_platform):
    cfg = preset("tiny-mha")
    w = qwenlayers.LayerWeights.random(cfg, seed=1)
    tensors = dict(w.tensors)
    tensors["mlp.down_proj.weight"] = tensors["mlp.down_proj.weight"].clone()
    tensors["mlp.down_proj.weight"][:, 0] = NAN  # every output row reads column 0 of the intermediate
    inputs = random_inputs(cfg, "decode", [2, 5])
    result = qwenlayers.decode(cfg, tensors, **inputs, platform=runnable_platform.name, check=True, allow_nonfinite=True)
    r = result.report
    assert result.out.isnan().all()
    assert r.within_tolerance is False
    assert r.nonfinite["out"]["count"] == 2 * cfg.hidden_size and r.nonfinite["out"]["first"][0] == [0, 0]
    assert "k_cache" not in r.nonfinite and "v_cache" not in r.nonfinite  # written before the MLP: finite
    assert r.check_failures and r.check_failures[0].startswith(f"out: {2 * cfg.hidden_size} of {2 * cfg.hidden_size} values")


@pytest.mark.sim
def test_cli_run_with_allow_nonfinite_prints_fail_and_why(runnable_platform, tmp_path):
    cfg = preset("tiny-mha")
    tensors = dict(qwenlayers.LayerWeights.random(cfg, seed=2).tensors)
    tensors["input_layernorm.weight"] = tensors["input_layernorm.weight"].clone()
    tensors["input_layernorm.weight"][7] = INF  # reaches q, k, v: the written cache rows are non-finite too
    qwenlayers.LayerWeights.write_checkpoint(tmp_path, {0: qwenlayers.LayerWeights(cfg, tensors)})
    res = runner.invoke(app, ["run", "--weights", str(tmp_path), "--seq-lens", "2,5", "--allow-nonfinite",
                              "--platform", runnable_platform.name])
    assert res.exit_code == 4, res.output
    text = " ".join(res.output.split())
    assert "FAIL" in text and "PASS" not in text and "check failed" in text and "non-finite (NaN/Inf)" in text
    assert "k_cache:" in text and "v_cache:" in text
