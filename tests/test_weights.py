import pytest
import torch

from qwenlayers.core.config import preset
from qwenlayers.core.weights import LayerWeights, expected_shapes
from qwenlayers.errors import InputError


def test_random_is_seeded_and_shaped():
    c = preset("tiny-gqa8")
    a, b = LayerWeights.random(c, seed=1), LayerWeights.random(c, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert {k: tuple(v.shape) for k, v in a.tensors.items()} == expected_shapes(c)
    assert a["self_attn.q_proj.weight"].shape == (256, 128)  # heads x head_dim != hidden


@pytest.mark.parametrize("shard_layers", [None, 1])
def test_checkpoint_roundtrip(tmp_path, shard_layers):
    c = preset("tiny")
    layers = {i: LayerWeights.random(c, seed=i) for i in range(3)}
    LayerWeights.write_checkpoint(tmp_path, layers, shard_layers=shard_layers)
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard_layers)
    loaded = LayerWeights.from_checkpoint(tmp_path, 2)
    assert loaded.config.hidden_size == c.hidden_size
    assert all(torch.equal(loaded[k], layers[2][k]) for k in layers[2])


def test_checkpoint_missing_layer(tmp_path):
    c = preset("tiny")
    LayerWeights.write_checkpoint(tmp_path, {0: LayerWeights.random(c)}, shard_layers=1)
    with pytest.raises(InputError, match="layer 5"):
        LayerWeights.from_checkpoint(tmp_path, 5)
    with pytest.raises(InputError, match="not a folder"):
        LayerWeights.from_checkpoint(tmp_path / "nope", 0)


def test_bad_weights_named_clearly():
    c = preset("tiny")
    w = dict(LayerWeights.random(c).tensors)
    w["self_attn.q_proj.weight"] = w["self_attn.q_proj.weight"][:, :10]
    with pytest.raises(InputError, match=r"q_proj.weight has shape \(256, 10\), expected \(256, 256\)"):
        LayerWeights(c, w)
    del w["mlp.up_proj.weight"]
    with pytest.raises(InputError, match="missing \\['mlp.up_proj.weight'\\]"):
        LayerWeights(c, w)
