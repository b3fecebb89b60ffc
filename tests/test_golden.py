"""The golden layer against transformers' Qwen3DecoderLayer, and its input contract."""

import pytest
import torch
from hf_reference import hf_sequence

from qwenlayers import golden
from qwenlayers.core.config import preset
from qwenlayers.core.weights import LayerWeights
from qwenlayers.errors import InputError

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
DTYPES = [torch.float32, torch.bfloat16]


def close(a, b, dtype):
    return torch.allclose(a.float(), b.float(), atol=TOL[dtype], rtol=TOL[dtype])


def check_against_transformers(config, weights, tokens, ours):
    """fp32: every element within 1e-4 of transformers in fp32.

    bf16 (see docs/golden.md): against transformers in bf16, >= 99.5 % of elements within
    atol = rtol = 2e-2 and none off by more than 4e-2; and against the fp32 truth, no less
    accurate than transformers' own bf16 path."""
    dtype = tokens.dtype
    if dtype == torch.float32:
        truth = hf_sequence(config, weights, tokens)
        assert close(ours, truth, dtype), (config.name, (ours - truth).abs().max())
        return
    hf_bf16 = hf_sequence(config, weights, tokens).float()
    diff = (ours.float() - hf_bf16).abs()
    within = (diff <= TOL[dtype] * (1 + hf_bf16.abs())).float().mean().item()
    assert within >= 0.995 and diff.max().item() <= 4e-2, (config.name, within, diff.max().item())
    truth = hf_sequence(config, weights.to(torch.float32), tokens.float())
    ours_err = (ours.float() - truth).abs().max().item()
    hf_err = (hf_bf16 - truth).abs().max().item()
    assert ours_err <= 1.25 * hf_err + 1e-3, (ours_err, hf_err)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("model", ["tiny", "tiny-mha", "tiny-gqa8"])  # GQA 2, 1 and 8; tiny-gqa8 has q width != hidden
def test_prefill_matches_transformers(model, dtype):
    c = preset(model)
    w = LayerWeights.random(c, seed=3, dtype=dtype)
    seq = 13
    lengths = [1, 7, seq]  # length 1, odd, full
    hidden = torch.randn(len(lengths), seq, c.hidden_size, generator=torch.Generator().manual_seed(4)).to(dtype)
    hidden_before = hidden.clone()
    out, k, v = golden.prefill(c, w, hidden, torch.tensor(lengths, dtype=torch.int32), max_seq=32)
    assert torch.equal(hidden, hidden_before)
    assert k.shape == (3, c.num_key_value_heads, 32, c.head_dim)
    for b, length in enumerate(lengths):
        check_against_transformers(c, w, hidden[b, :length], out[b, :length])
        assert torch.count_nonzero(out[b, length:]) == 0
        assert torch.count_nonzero(k[b, :, length:]) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("prefix", [0, 5, 40])  # decode at an empty, a short and a long prefix
def test_decode_matches_transformers(prefix, dtype):
    c = preset("tiny")
    w = LayerWeights.random(c, seed=5, dtype=dtype)
    tokens = torch.randn(prefix + 1, c.hidden_size, generator=torch.Generator().manual_seed(6)).to(dtype)
    max_seq = 64
    if prefix:
        _, k, v = golden.prefill(c, w, tokens[None, :prefix], torch.tensor([prefix], dtype=torch.int32), max_seq=max_seq)
    else:
        k = torch.zeros(1, c.num_key_value_heads, max_seq, c.head_dim, dtype=dtype)
        v = torch.zeros_like(k)
    k_before, v_before = k.clone(), v.clone()
    out, k2, v2 = golden.decode(c, w, tokens[prefix:], k, v, torch.tensor([prefix + 1], dtype=torch.int32))
    assert torch.equal(k, k_before) and torch.equal(v, v_before), "inputs must stay untouched"
    changed = (k2 != k).any(-1).any(1)[0]
    assert changed.nonzero().flatten().tolist() in ([prefix], [])  # only the new row may differ
    assert torch.equal(k2[..., prefix + 1 :, :], k[..., prefix + 1 :, :])
    check_against_transformers_last(c, w, tokens, out[0])


def check_against_transformers_last(config, weights, tokens, ours_last):
    """Decode is checked as the last row of a full causal forward over prefix + new token."""
    full = hf_sequence(config, weights, tokens)
    if tokens.dtype == torch.float32:
        assert close(ours_last, full[-1], tokens.dtype), (ours_last - full[-1]).abs().max()
    else:
        diff = (ours_last.float() - full[-1].float()).abs()
        assert (diff <= TOL[tokens.dtype] * (1 + full[-1].float().abs())).float().mean() >= 0.995 and diff.max() <= 4e-2


def test_decode_accepts_hf_dicts():
    c = preset("tiny")
    w = LayerWeights.random(c)
    h = torch.randn(2, c.hidden_size).bfloat16()
    k = torch.randn(2, c.num_key_value_heads, 16, c.head_dim).bfloat16()
    lens = torch.tensor([3, 16], dtype=torch.int32)
    a = golden.decode(c, w, h, k, k.clone(), lens)
    b = golden.decode(c.to_hf(), dict(w.tensors), h, k, k.clone(), lens)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def _decode_args():
    c = preset("tiny")
    h = torch.randn(2, c.hidden_size).bfloat16()
    k = torch.zeros(2, c.num_key_value_heads, 16, c.head_dim).bfloat16()
    return c, LayerWeights.random(c), h, k, k.clone(), torch.tensor([1, 16], dtype=torch.int32)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.__setitem__(5, torch.tensor([0, 3], dtype=torch.int32)), r"seq_lens\[0\]=0; decode with a cache of max_seq=16 needs 1 <= seq_len <= 16"),
        (lambda a: a.__setitem__(5, torch.tensor([1, 17], dtype=torch.int32)), r"seq_lens\[1\]=17"),
        (lambda a: a.__setitem__(5, torch.tensor([1, 2, 3], dtype=torch.int32)), r"expected \(2,\)"),
        (lambda a: a.__setitem__(5, torch.tensor([1.0, 2.0])), "dtype torch.float32; allowed: torch.int32"),
        (lambda a: a.__setitem__(2, a[2].half()), "hidden has dtype torch.float16; allowed"),
        (lambda a: a.__setitem__(2, a[2][:, :100]), r"expected \(2, 256\)"),
        (lambda a: a.__setitem__(3, a[3][:1]), "cache holds 1 sequences but hidden has batch 2"),
        (lambda a: a.__setitem__(4, a[4].float()), "v_cache has dtype torch.float32"),
    ],
)
def test_decode_bad_input(mutate, message):
    args = list(_decode_args())
    mutate(args)
    snapshot = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
    with pytest.raises(InputError, match=message):
        golden.decode(*args)
    for a, s in zip(args, snapshot):
        if s is not None:
            assert torch.equal(a, s)


def test_prefill_bad_input():
    c = preset("tiny")
    w = LayerWeights.random(c)
    h = torch.randn(1, 8, c.hidden_size)
    with pytest.raises(InputError, match=r"seq_lens\[0\]=9; prefill of padded length 8 needs 1 <= seq_len <= 8"):
        golden.prefill(c, w, h, torch.tensor([9], dtype=torch.int32))
    with pytest.raises(InputError, match="max_seq=4"):
        golden.prefill(c, w, h, torch.tensor([3], dtype=torch.int32), max_seq=4)
    with pytest.raises(InputError, match="prefill hidden must be"):
        golden.prefill(c, w, h[0], torch.tensor([3], dtype=torch.int32))
