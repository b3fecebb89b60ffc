"""A whole Qwen3 model through qwenlayers (``qwenlayers.model.generate``, ``qwenlayers generate``).

The checkpoints are written by transformers' own ``save_pretrained`` (random weights), so the
reader is tested on the format users have, and transformers' own greedy tokens are the target.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen3Config as HFConfig
from transformers import Qwen3ForCausalLM
from typer.testing import CliRunner

from qwenlayers.cli import app
from qwenlayers.errors import InputError
from qwenlayers.model import Generation, LayerDrift, Qwen3Checkpoint, StepTokens, generate
from qwenlayers.model.generation import DRIFT_FACTOR, DRIFT_FLOOR

#: Small Qwen3 shapes that keep what the real ones have: GQA 2 and 8, head_dim 64 and 128
#: (separate from hidden), tied and untied embeddings, one file and a sharded index. The seeds
#: give greedy choices whose fp32 top-2 margins (>= 0.013 over the test's 12 tokens, measured
#: with transformers) are several times bf16's noise, so "identical tokens" is a real demand
#: and not a coin toss at a near tie; the test asserts that no near tie occurred.
MODELS = {
    "hd64-gqa2-tied": dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                           num_hidden_layers=2, tie_word_embeddings=True, shard=None, seed=3),
    "hd128-gqa8-untied-sharded": dict(hidden_size=128, intermediate_size=256, num_attention_heads=8, num_key_value_heads=1,
                                      head_dim=128, num_hidden_layers=3, tie_word_embeddings=False, shard="300KB", seed=3),
}


def _save(root: Path, name: str) -> Path:
    spec = dict(MODELS[name])
    shard, seed = spec.pop("shard"), spec.pop("seed")
    torch.manual_seed(seed)
    cfg = HFConfig(vocab_size=384, max_position_embeddings=512, **spec)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    folder = root / name
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {name: _save(root, name) for name in MODELS}


def test_checkpoints_open_tied_untied_and_sharded(checkpoints: dict[str, Path]) -> None:
    tied = Qwen3Checkpoint.open(checkpoints["hd64-gqa2-tied"])
    assert (tied.shape.num_layers, tied.shape.vocab_size, tied.shape.tied) == (2, 384, True)
    host = tied.host()
    assert host.lm_head is host.embed
    sharded = Qwen3Checkpoint.open(checkpoints["hd128-gqa8-untied-sharded"])
    assert (checkpoints["hd128-gqa8-untied-sharded"] / "model.safetensors.index.json").is_file()
    assert len(set(sharded.files.values())) > 1  # really sharded
    assert not sharded.shape.tied and sharded.shape.layer.head_dim == 128 and sharded.shape.layer.group_size == 8
    w = sharded.layer(2)
    assert w["self_attn.q_proj.weight"].shape == (8 * 128, 128)


@pytest.mark.parametrize("name", list(MODELS))
def test_tokens_equal_transformers_and_drift_within_the_bar(checkpoints: dict[str, Path], name: str, runnable_platform) -> None:
    prompts = [[5, 17, 3, 250, 9], [44], [7, 8, 9]]  # mixed lengths, one a single token
    gen = generate(checkpoints[name], prompts, steps=3, platform=runnable_platform.name, check=True)
    assert gen.transformers_version is not None
    assert gen.ok, gen.failures()
    assert len(gen.token_checks) == 4 and all(len(t) == 4 for t in gen.tokens)
    for step in gen.token_checks:  # identical to transformers' at every step, and none of them a near tie
        assert step.platform == step.transformers == step.golden_fp32, step
        assert not any(step.near_tie), step
    assert [t.phase for t in gen.timings] == ["prefill", "decode", "decode", "decode"]
    assert gen.timings[0].tokens == 9 and gen.timings[1].tokens == 3
    assert all(len(t.layers) == gen.layers and t.sim_us and t.sim_us > 0 for t in gen.timings)
    for t in gen.timings:  # one full compile per pass (the tests run without the result cache), not one per layer
        assert t.programs_compiled == 1 and t.layers[0].timing == "cost-model run"
        assert all(x.timing == "as layer 1" and x.sim_us == t.layers[0].sim_us for x in t.layers[1:])
    # the decode steps read what the prefill wrote: their drift is as small as the prefill's
    assert len(gen.drift) == 4 * gen.layers
    assert all(d.within and 0 < d.platform_rel < 0.05 for d in gen.drift)


@pytest.mark.neutral
def test_tensor_parallel_gives_the_same_tokens(checkpoints: dict[str, Path], runnable_platform) -> None:
    prompts = [[5, 17, 3], [44, 2]]
    one = generate(checkpoints["hd64-gqa2-tied"], prompts, steps=1, platform=runnable_platform.name)
    two = generate(checkpoints["hd64-gqa2-tied"], prompts, steps=1, platform=runnable_platform.name, tp=2, check=True)
    assert two.ok, two.failures()
    assert two.tokens == one.tokens and two.tp == 2
    assert all(t.sim_us and t.sim_us > 0 for t in two.timings)


@pytest.mark.neutral
def test_cli_generate_prints_tokens_timing_drift_and_writes_the_record(checkpoints: dict[str, Path], runnable_platform,
                                                                       tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["generate", "--weights", str(checkpoints["hd64-gqa2-tied"]), "--prompt-ids", "1,2,3",
                                   "--prompt-ids", "0,9", "--steps", "1", "--check", "--platform", runnable_platform.name,
                                   "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for text in ("generated", "step µs", "tokens/s", "golden fp32", "transformers", "drift", "check: PASS"):
        assert text in res.output
    records = list(tmp_path.glob("generate-*.json"))
    assert len(records) == 1 and len(list(tmp_path.glob("generate-*-drift.png"))) == 1
    data = json.loads(records[0].read_text())
    assert data["ok"] is True and len(data["tokens"]) == 2 and len(data["drift"]) == 2 * 2


# ---------------------------------------------------------------- refused before any work


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _no_layer_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any layer run would fail the test: these inputs must be refused first."""
    from qwenlayers.model import lanes

    def boom(*_a, **_k):
        raise AssertionError("a layer ran")

    for name in ("prefill", "decode", "prefill_tp", "decode_tp"):
        monkeypatch.setattr(lanes, name, boom)


def test_not_a_qwen3_checkpoint(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_layer_runs(monkeypatch)
    folder = _copy(checkpoints["hd64-gqa2-tied"], tmp_path / "llama")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"not a Qwen3 checkpoint: config.json has model_type='llama'.*qwen3"):
        generate(folder, [[1, 2]], steps=1)


def _drop_down_proj(tensors: dict[str, torch.Tensor]) -> None:
    del tensors["model.layers.1.mlp.down_proj.weight"]


def _shrink_norm(tensors: dict[str, torch.Tensor]) -> None:
    tensors["model.norm.weight"] = torch.ones(64, dtype=torch.bfloat16)


@pytest.mark.parametrize("damage, message", [
    (_drop_down_proj, r"lacks 1 tensor.*model.layers.1.mlp.down_proj.weight"),
    (_shrink_norm, r"model.norm.weight has shape \[64\], expected \[128\]"),
])
def test_missing_or_misshapen_tensor_is_named(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              damage, message) -> None:
    _no_layer_runs(monkeypatch)
    folder = _copy(checkpoints["hd64-gqa2-tied"], tmp_path / "damaged")
    tensors = load_file(folder / "model.safetensors")
    damage(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match=message):
        generate(folder, [[1, 2]], steps=1)


@pytest.mark.parametrize("prompts, steps, max_seq, message", [
    ([[1, 384]], 1, None, r"prompt 0 token 1 is 384, outside the vocabulary: ids 0..383"),
    ([[1, -1]], 1, None, r"prompt 0 token 1 is -1, outside the vocabulary"),
    ([[]], 1, None, r"prompt 0 is \[\]; each prompt is a non-empty list"),
    ([], 1, None, r"at least one prompt"),
    ([[1, 2.5]], 1, None, r"token 1 is 2.5; token ids are ints"),
    ([[1] * 40], 30, 64, r"needs 70 cache rows, more than max_seq=64.*at most 24 steps"),
    ([[1] * 500], 20, None, r"needs 520 positions, over the model's max_position_embeddings 512"),
    ([[1, 2]], -1, None, r"steps=-1"),
    ([[1, True]], 1, None, r"token 1 is True; token ids are ints"),
    ("1,2,3", 1, None, r"at least one prompt of token ids"),
    (torch.tensor([[1, 2.0]]), 1, None, r"token 0 is 1.0; token ids are ints"),
    (torch.tensor([[1, 400]]), 1, None, r"token 1 is 400, outside the vocabulary"),
])
def test_bad_prompts_and_sizes_refused_before_any_work(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                        prompts, steps, max_seq, message) -> None:
    _no_layer_runs(monkeypatch)
    with pytest.raises(InputError, match=message):
        generate(checkpoints["hd64-gqa2-tied"], prompts, steps=steps, max_seq=max_seq)


def test_tensor_and_array_prompts_are_taken_as_token_ids(checkpoints: dict[str, Path]) -> None:
    import numpy as np

    from qwenlayers.model.generate import _prompts

    shape = Qwen3Checkpoint.open(checkpoints["hd64-gqa2-tied"]).shape
    want = [[1, 2, 3], [4, 5, 6]]
    for given in (torch.tensor(want), np.array(want), [torch.tensor(r) for r in want], [[np.int64(i) for i in r] for r in want]):
        assert _prompts(given, shape) == want


def _edit_config(src: Path, dst: Path, **fields) -> Path:
    folder = _copy(src, dst)
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in fields.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("fields, message", [
    ({"model_type": "qwen3_moe"}, r"model_type='qwen3_moe'"),
    ({"num_hidden_layers": None}, r"lacks num_hidden_layers"),
    ({"vocab_size": None}, r"lacks vocab_size"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}, r"scaled RoPE"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}}, r"scaled RoPE"),
    ({"use_sliding_window": True}, r"use_sliding_window=true"),
    ({"tie_word_embeddings": "yes"}, r"tie_word_embeddings must be true or false"),
])
def test_config_fields_the_layers_cannot_honour_are_refused(checkpoints: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, fields, message) -> None:
    _no_layer_runs(monkeypatch)
    folder = _edit_config(checkpoints["hd64-gqa2-tied"], tmp_path / "edited", **fields)
    with pytest.raises(InputError, match=message):
        generate(folder, [[1, 2]], steps=1)


def test_a_config_without_max_position_embeddings_gets_transformers_default(checkpoints: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    folder = _edit_config(checkpoints["hd64-gqa2-tied"], tmp_path / "edited", max_position_embeddings=None)
    assert Qwen3Checkpoint.open(folder).shape.max_positions == HFConfig().max_position_embeddings == 32768


def test_a_tensor_stored_in_an_unsupported_dtype_is_refused(checkpoints: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _no_layer_runs(monkeypatch)
    folder = _copy(checkpoints["hd64-gqa2-tied"], tmp_path / "int8")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.weight"] = tensors["model.layers.0.self_attn.q_proj.weight"].to(torch.int8)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"q_proj.weight has dtype I8; allowed: BF16, F16, F32"):
        generate(folder, [[1, 2]], steps=1)


@pytest.mark.parametrize("edit, message", [
    ("missing", r"names model-\d+-of-\d+.safetensors, but .* does not exist; the checkpoint is incomplete"),
    ("outside", r"to '\.\./elsewhere.safetensors', outside the checkpoint folder"),
])
def test_a_broken_index_is_refused(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   edit, message) -> None:
    _no_layer_runs(monkeypatch)
    folder = _copy(checkpoints["hd128-gqa8-untied-sharded"], tmp_path / "index")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    if edit == "missing":
        (folder / shards[-1]).unlink()
    else:
        first = next(iter(index["weight_map"]))
        index["weight_map"][first] = "../elsewhere.safetensors"
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=message):
        generate(folder, [[1, 2]], steps=1)


@pytest.mark.parametrize("tp, message", [(0, r"tp=0"), (-2, r"tp=-2"), (3, r"tp=3")])
def test_a_tensor_parallel_degree_the_model_cannot_split_is_refused_first(checkpoints: dict[str, Path],
                                                                          monkeypatch: pytest.MonkeyPatch, tp, message) -> None:
    _no_layer_runs(monkeypatch)
    with pytest.raises(InputError, match=message):
        generate(checkpoints["hd64-gqa2-tied"], [[1, 2]], steps=1, tp=tp)


def test_cli_refuses_a_results_folder_it_cannot_write_before_the_run(checkpoints: dict[str, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _no_layer_runs(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = CliRunner().invoke(app, ["generate", "--weights", str(checkpoints["hd64-gqa2-tied"]), "--prompt-ids", "1,2",
                                   "--results", str(blocker / "results")])
    assert res.exit_code == 2 and "results folder" in res.output and "cannot be written" in res.output, res.output


def test_cli_bad_input_exit_2(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["generate", "--weights", str(checkpoints["hd64-gqa2-tied"]), "--prompt-ids", "1,x"])
    assert res.exit_code == 2 and "not a comma-separated list of token ids" in res.output
    res = CliRunner().invoke(app, ["generate", "--weights", str(tmp_path / "none"), "--prompt-ids", "1"])
    assert res.exit_code == 2 and "is not a folder" in res.output
    res = CliRunner().invoke(app, ["generate", "--weights", str(checkpoints["hd64-gqa2-tied"]), "--prompt-ids", "1,999", "--json"])
    assert res.exit_code == 2 and json.loads(res.output)["error"] == "InputError"


# ---------------------------------------------------------------- the verdict can fail


def test_verdict_fails_on_drift_over_the_bar_and_on_a_real_token_disagreement() -> None:
    fine = LayerDrift(0, 0, 1e-3, 4e-3, 1e-3, 4e-3)
    over = LayerDrift(1, 3, 1.0, DRIFT_FACTOR * 4e-3 + DRIFT_FLOOR + 1e-4, 1e-3, 4e-3)
    #          step platform fp32 bf16 transformers margin near_tie tie_bar fp32_gap transformers_gap
    agree = StepTokens(0, [5], [5], [5], [5], [0.5], [False], [0.01], [0.0], [0.0])
    flip_at_tie = StepTokens(1, [5], [6], [5], [6], [1e-4], [True], [0.01], [1e-4], [2e-4])
    flip = StepTokens(2, [5], [6], [6], [6], [0.5], [False], [0.01], [0.5], [0.5])
    # the reference's top two were a near tie, but the platform's token is far below both
    far_at_a_tie = StepTokens(3, [9], [6], [7], [6], [1e-4], [True], [0.01], [2.0], [1.9])

    def gen(drift, checks) -> Generation:
        return Generation("m", "p", 1, 4, [[1]], [[5, 5, 5]], [], 0.0, True, checks, drift, "x")

    assert gen([fine], [agree, flip_at_tie]).ok is True
    bad = gen([fine, over], [agree])
    assert bad.ok is False and "step 1, layer 3: platform drift" in bad.failures()[0]
    bad = gen([fine], [agree, flip])
    assert bad.ok is False and "step 2, sequence 0: platform chose 5, golden fp32 6" in bad.failures()[0]
    assert flip_at_tie.excused() == [0] and flip.excused() == []
    bad = gen([fine], [far_at_a_tie])
    assert bad.ok is False and [f.split(":")[0] for f in bad.failures()] == ["step 3, sequence 0"] * 2  # fp32 and transformers
    assert far_at_a_tie.excused() == []
    unchecked = Generation("m", "p", 1, 4, [[1]], [[5]], [], 0.0)
    assert unchecked.ok is None


def test_a_near_tie_is_a_margin_within_bf16_logit_noise() -> None:
    from qwenlayers.model.host import gaps_to, near_ties, tie_bars

    fp32 = torch.tensor([[1.0, 0.9, 0.0, 0.2], [1.0, 0.0, 0.0, 0.2]])
    shift = 0.05 * torch.tensor([1.0, -1.0, 1.0, -1.0])  # RMS 0.05: a difference of two logits moves by ~0.07
    assert near_ties(fp32, fp32 + shift) == [True, False]  # margin 0.1 is within 3 sigma (0.21); 0.8 is not
    assert near_ties(fp32, fp32) == [False, False]  # no noise: nothing is a tie unless exactly equal
    assert tie_bars(fp32, fp32 + shift) == pytest.approx([3 * 0.05 * 2**0.5] * 2)
    assert gaps_to(fp32, [1, 3]) == pytest.approx([0.1, 0.8])  # how far below each row's best the chosen token is


@pytest.mark.neutral
def test_the_readme_generate_lines_run_as_written(runnable_platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shlex
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    write, run = re.search(r'```bash\n(python -c "from qwenlayers import preset.*?")\n(qwenlayers generate .*?)\n```', readme,
                           re.S).groups()
    subprocess.run([sys.executable, *shlex.split(write)[1:]], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    args = shlex.split(run)[1:] + ["--platform", runnable_platform.name, "--results", str(tmp_path / "results")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "check: PASS" in res.output


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": 0}, r"layers must be a positive integer"),
    ({"vocab_size": 2.5}, r"vocab_size must be a positive integer"),
    ({"shard_layers": -1}, r"shard_layers must be a positive integer"),
    ({"tied": "no"}, r"tied='no'"),
])
def test_a_random_checkpoint_refuses_sizes_that_are_not_sizes(tmp_path: Path, kwargs, message) -> None:
    from qwenlayers.core.config import preset
    from qwenlayers.model.synthetic import write_random_checkpoint

    args = {"layers": 2, "vocab_size": 64, **kwargs}
    with pytest.raises(InputError, match=message):
        write_random_checkpoint(tmp_path / "ckpt", preset("tiny"), **args)
    assert not (tmp_path / "ckpt").exists()
