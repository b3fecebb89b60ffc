import json

import pytest

from qwenlayers.core.config import PRESETS, Qwen3Config, as_config, preset
from qwenlayers.errors import InputError


def test_presets_match_public_qwen3_sizes():
    c = preset("qwen3-32b")
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads) == (5120, 25600, 64, 8)
    assert c.q_width == 8192 and c.q_width != c.hidden_size  # reference 003 confused the two
    assert preset("14b").intermediate_size == 17408
    assert preset("Qwen3-0.6B").hidden_size == 1024
    for p in PRESETS.values():
        assert p.head_dim * p.num_attention_heads == p.q_width


def test_unknown_preset_lists_known():
    with pytest.raises(InputError, match="known presets: qwen3-0.6b"):
        preset("qwen3-70b")


def test_from_hf_file_folder_and_dict(tmp_path):
    hf = preset("qwen3-8b").to_hf()
    (tmp_path / "config.json").write_text(json.dumps(hf))
    for source in (tmp_path, tmp_path / "config.json", hf):
        c = Qwen3Config.from_hf(source, name="x")
        assert (c.hidden_size, c.num_key_value_heads, c.head_dim, c.rope_theta) == (4096, 8, 128, 1e6)


def test_from_hf_transformers5_rope_parameters():
    hf = preset("tiny").to_hf()
    del hf["rope_theta"]
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
    assert Qwen3Config.from_hf(hf).rope_theta == 5e5


@pytest.mark.parametrize(
    "patch, message",
    [({"hidden_act": "gelu"}, "hidden_act"), ({"attention_bias": True}, "no bias"), ({"num_key_value_heads": 3}, "multiple")],
)
def test_from_hf_rejects_non_qwen3(patch, message):
    hf = {**preset("tiny").to_hf(), **patch}
    with pytest.raises(InputError, match=message):
        Qwen3Config.from_hf(hf)


def test_from_hf_missing_file(tmp_path):
    with pytest.raises(InputError, match="no Hugging Face config"):
        Qwen3Config.from_hf(tmp_path)


def test_as_config_forms():
    c = preset("tiny")
    assert as_config(c) is c
    assert as_config("tiny") == c
    assert as_config(c.as_dict()) == c
    assert as_config(c.to_hf()).hidden_size == c.hidden_size


@pytest.mark.parametrize("patch, allowed", [
    ({"rope_scaling": None}, True),
    ({"rope_scaling": {"rope_type": "default"}}, True),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}, True),
    ({"use_sliding_window": False, "sliding_window": 4096}, True),  # Qwen3's own configs: a window named, not used
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, False),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, False),
    ({"rope_scaling": {"rope_type": "default", "factor": 2.0}}, False),
    ({"rope_scaling": "yarn"}, False),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6}}, False),
    ({"use_sliding_window": True}, False),
])
def test_from_hf_refuses_position_schemes_the_layers_do_not_compute(patch, allowed):
    hf = {**preset("tiny").to_hf(), **patch}
    if allowed:
        Qwen3Config.from_hf(hf)
    else:
        with pytest.raises(InputError, match="scaled RoPE|rope_scaling must be|use_sliding_window"):
            Qwen3Config.from_hf(hf)
