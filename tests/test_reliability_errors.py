"""One error contract everywhere (issue 17, class 4): hostile files, bad settings and broken
plugins end as one qwenlayers error naming the file / variable / plugin, exit code 2 or 3, and
no traceback. None of these tests runs pypto."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
import warnings
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qwenlayers import hookimpl
from qwenlayers import registry as registry_module
from qwenlayers.cli import app
from qwenlayers.core.config import preset
from qwenlayers.core.platform import Availability
from qwenlayers.core.tiling import fit_kv_block, parse_overrides
from qwenlayers.core.weights import INDEX_FILE, SINGLE_FILE, LayerWeights
from qwenlayers.errors import CheckpointError, InputError, PluginHookError, TilingError
from qwenlayers.inputs import random_inputs
from qwenlayers.registry import ENTRY_POINT_GROUP, PlatformRegistry, get_registry
from qwenlayers.runtime import chunking

runner = CliRunner()
SHARD = "model-00001-of-00001.safetensors"


# ---------------------------------------------------------------------- helpers
def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console path (``main``), so a traceback would show in stderr."""
    return subprocess.run([sys.executable, "-m", "qwenlayers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def one_message(res: subprocess.CompletedProcess[str], code: int, *named: str) -> str:
    """Assert the qwenlayers error contract: exit ``code``, one message naming ``named``, no traceback."""
    text = res.stdout + res.stderr
    assert res.returncode == code, text
    assert "Traceback" not in text, text
    assert "error:" in res.stderr, text
    for name in named:
        assert name in text, (name, text)
    return text


def checkpoint(root: Path, *, sharded: bool) -> Path:
    """A one-layer tiny checkpoint (with an index and one shard when ``sharded``)."""
    LayerWeights.write_checkpoint(root, {0: LayerWeights.random(preset("tiny"))}, shard_layers=1 if sharded else None)
    return root


def point_index_at(root: Path, target: str) -> None:
    index = root / INDEX_FILE
    data = json.loads(index.read_text())
    data["weight_map"] = {k: target for k in data["weight_map"]}
    index.write_text(json.dumps(data))


# ---------------------------------------------------------------------- checkpoints
def test_truncated_safetensors_names_the_file(tmp_path):
    root = checkpoint(tmp_path / "ck", sharded=False)
    blob = root / SINGLE_FILE
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable safetensors file"):
        LayerWeights.from_checkpoint(root, 0)
    one_message(cli("run", "--weights", str(root)), 2, str(blob), "CheckpointError")


def test_corrupt_safetensors_header_names_the_file(tmp_path):
    root = checkpoint(tmp_path / "ck", sharded=True)
    (root / SHARD).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header!!}")
    with pytest.raises(CheckpointError, match=SHARD):
        LayerWeights.from_checkpoint(root, 0)


def test_index_pointing_to_a_missing_shard(tmp_path):
    root = checkpoint(tmp_path / "ck", sharded=True)
    (root / SHARD).unlink()
    with pytest.raises(CheckpointError, match="does not exist; the checkpoint is incomplete"):
        LayerWeights.from_checkpoint(root, 0)
    one_message(cli("run", "--weights", str(root)), 2, str(root / SHARD))


def test_index_that_is_not_json(tmp_path):
    root = checkpoint(tmp_path / "ck", sharded=True)
    (root / INDEX_FILE).write_text('{"weight_map": {')
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        LayerWeights.from_checkpoint(root, 0)
    one_message(cli("run", "--weights", str(root)), 2, str(root / INDEX_FILE))


def test_index_without_a_weight_map_object(tmp_path):
    root = checkpoint(tmp_path / "ck", sharded=True)
    (root / INDEX_FILE).write_text('["model-00001-of-00001.safetensors"]')
    with pytest.raises(CheckpointError, match="has no 'weight_map' object"):
        LayerWeights.from_checkpoint(root, 0)


@pytest.mark.parametrize("content", [b"\xff\xfe{\x00", b'{"hidden_size": 256,'], ids=["not-utf8", "not-json"])
def test_config_json_that_is_not_utf8_json(tmp_path, content):
    root = checkpoint(tmp_path / "ck", sharded=False)
    (root / "config.json").write_bytes(content)
    with pytest.raises(InputError, match="config.json"):
        LayerWeights.from_checkpoint(root, 0)
    one_message(cli("run", "--weights", str(root)), 2, str(root / "config.json"))
    one_message(cli("plan", "--model", str(root / "config.json"), "--phase", "decode"), 2, str(root / "config.json"))


@pytest.mark.parametrize("escape", ["relative", "absolute"])
def test_weight_map_outside_the_folder_is_refused(tmp_path, escape):
    """The target is a valid checkpoint, so without the check the layer would load from it."""
    outside = checkpoint(tmp_path / "elsewhere", sharded=False) / SINGLE_FILE
    root = checkpoint(tmp_path / "ck", sharded=True)
    target = "../elsewhere/model.safetensors" if escape == "relative" else str(outside.resolve())
    point_index_at(root, target)
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        LayerWeights.from_checkpoint(root, 0)
    one_message(cli("run", "--weights", str(root)), 2, str(root / INDEX_FILE), target)


def test_weight_map_subfolder_inside_the_checkpoint_still_loads(tmp_path):
    root = checkpoint(tmp_path / "ck", sharded=True)
    (root / "shards").mkdir()
    (root / SHARD).rename(root / "shards" / SHARD)
    point_index_at(root, f"shards/{SHARD}")
    assert LayerWeights.from_checkpoint(root, 0).config.hidden_size == preset("tiny").hidden_size


# ---------------------------------------------------------------------- QWENLAYERS_WORKER_MEM_GB
@pytest.mark.parametrize("value", ["garbage", "nan", "inf", "-inf", "0", "-2", "1e-12"])
def test_worker_budget_refuses_what_is_not_a_finite_positive_size(monkeypatch, value):
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", value)
    with pytest.raises(InputError, match=rf"QWENLAYERS_WORKER_MEM_GB='{value}' .*allowed: a finite number of GB > 0"):
        chunking.budget_bytes()


def test_worker_budget_accepts_finite_positive_and_defaults(monkeypatch):
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", "2.5")
    assert chunking.budget_bytes() == int(2.5 * chunking.GIB)
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", "")
    assert chunking.budget_bytes() == int(chunking.DEFAULT_BUDGET_GB * chunking.GIB)
    monkeypatch.delenv("QWENLAYERS_WORKER_MEM_GB")
    assert chunking.budget_bytes() == int(chunking.DEFAULT_BUDGET_GB * chunking.GIB)


@pytest.mark.parametrize("phase", ["decode", "prefill"])
@pytest.mark.parametrize("value", ["garbage", "0"])
def test_worker_budget_same_rule_for_decode_and_prefill(monkeypatch, phase, value):
    """Refused before any worker starts, with the same message in both phases."""
    from qwenlayers.runtime import worker

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker started despite a bad QWENLAYERS_WORKER_MEM_GB")

    monkeypatch.setattr(worker, "run_job", no_worker)
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_GB", value)
    # a sim platform, so the refusal cannot be a missing device on a5/a2a3 test envs
    res = runner.invoke(app, ["run", "-p", "a5sim", "--phase", phase, "--batch", "2", "--seq-len", "8"])
    assert res.exit_code == 2, res.output
    assert f"QWENLAYERS_WORKER_MEM_GB={value!r}" in res.output


# ---------------------------------------------------------------------- --tile
@pytest.mark.parametrize("value", ["--64", "-8", "0", "abc", "1.5", "1e3", ""])
def test_tile_value_must_be_a_positive_integer(value):
    with pytest.raises(TilingError, match=rf"SEQ_TILE must be a positive integer.*got '{value}'"):
        parse_overrides([f"SEQ_TILE={value}"])


def test_tile_value_cli_names_the_key():
    one_message(cli("plan", "-m", "tiny", "--phase", "decode", "--tile", "SEQ_TILE=--64"), 2, "SEQ_TILE", "--64")


def test_tile_values_that_are_positive_integers_pass():
    assert parse_overrides([" SEQ_TILE = 32 ", "k_chunk=128"]) == {"seq_tile": 32, "k_chunk": 128}


# ---------------------------------------------------------------------- plugin hooks at call time
class FakeDist:
    def __init__(self, name: str, version: str = "9.9") -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEP:
    def __init__(self, name: str, target: object, dist: str) -> None:
        self.name, self.value, self.dist, self._target = name, f"fake:{name}", FakeDist(dist), target

    def load(self) -> object:
        return self._target


def override_plugin(**hooks) -> types.ModuleType:
    """A plugin without a platform whose given hooks misbehave (tryfirst: it runs before the targets)."""
    mod = types.ModuleType("fake_override")
    for name, fn in hooks.items():
        setattr(mod, name, hookimpl(tryfirst=True)(fn))
    return mod


def target_plugin(name: str, **hooks) -> types.ModuleType:
    """A target plugin of platform ``name`` (a copy of a5sim's facts) with the given hooks."""
    platform = replace(get_registry().get("a5sim"), name=name, probe=lambda: Availability(True, "fake"))
    mod = types.ModuleType(f"fake_{name}")
    mod.qwenlayers_platform = hookimpl(lambda: platform)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


def real_plus(*fakes: FakeEP) -> PlatformRegistry:
    """The installed plugins plus ``fakes``, as entry points."""
    return PlatformRegistry(entry_points=lambda: [*metadata.entry_points(group=ENTRY_POINT_GROUP), *fakes]).load()


def raising(**_kwargs):
    raise RuntimeError("plugin bug: list index out of range")


@pytest.fixture
def use_registry(monkeypatch):
    """Make the CLI's ``get_registry()`` answer with the given registry."""

    def install(reg: PlatformRegistry) -> PlatformRegistry:
        monkeypatch.setattr(registry_module, "_default", reg)
        return reg

    return install


def test_override_hook_that_raises_is_named_and_isolated(use_registry):
    bad = FakeEP("acme_tiles", override_plugin(qwenlayers_tiling_defaults=lambda platform, config, phase: raising()), "acme-tiles")
    reg = use_registry(real_plus(bad))
    with pytest.warns(RuntimeWarning, match=r"override plugin 'acme_tiles' \(from acme-tiles 9.9\): hook "
                                            r"qwenlayers_tiling_defaults raised RuntimeError: plugin bug.*"
                                            r"QWENLAYERS_DISABLE_PLUGINS=acme-tiles"):
        plan = reg.tiling_defaults(reg.get("a5sim"), preset("tiny"), "decode")
    assert plan.source == "plugin qwenlayers-a5sim"  # the call went on without it
    record = [r for r in reg.records() if r.name == "acme_tiles"][0]
    assert record.status == "broken" and "qwenlayers_tiling_defaults raised RuntimeError" in record.error
    assert reg.tiling_defaults(reg.get("a2a3sim"), preset("tiny"), "prefill").source == "plugin qwenlayers-a2a3sim"
    res = runner.invoke(app, ["platforms", "--details", "--json"])
    assert res.exit_code == 0, res.output


def test_override_hook_with_wrong_type_is_named_and_isolated(use_registry):
    bad = FakeEP("acme_wa", override_plugin(qwenlayers_workarounds=lambda platform: "pypto-a5-target-selection"), "acme-wa")
    reg = use_registry(real_plus(bad))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(app, ["platforms", "--details", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["acme_wa"]["status"] == "broken"
    assert "hook qwenlayers_workarounds returned str 'pypto-a5-target-selection'" in rows["acme_wa"]["reason"]
    assert "a list of Workaround records or None" in rows["acme_wa"]["reason"]
    assert rows["a5sim"]["workarounds"] and rows["a2a3sim"]["workarounds"]  # every platform still lists
    assert len([w for w in caught if "acme_wa" in str(w.message)]) == 1  # warned once, then skipped
    assert len(reg.workarounds(reg.get("a5sim"))) == len(rows["a5sim"]["workarounds"])


def test_target_hook_that_raises_names_the_distribution_and_spares_the_others(use_registry):
    bad = FakeEP("acmechip", target_plugin("acmechip", qwenlayers_tiling_defaults=lambda platform, config, phase: raising(),
                                           qwenlayers_workarounds=lambda platform: raising()), "qwenlayers-acmechip")
    reg = use_registry(real_plus(bad))
    with pytest.raises(PluginHookError, match=r"platform plugin 'acmechip' \(from qwenlayers-acmechip 9.9\): hook "
                                              r"qwenlayers_tiling_defaults raised RuntimeError: plugin bug") as info:
        reg.tiling_defaults(reg.get("acmechip"), preset("tiny"), "decode")
    assert isinstance(info.value.__cause__, RuntimeError) and info.value.exit_code == 3
    assert reg.tiling_defaults(reg.get("a5sim"), preset("tiny"), "decode").source == "plugin qwenlayers-a5sim"
    res = runner.invoke(app, ["plan", "-m", "tiny", "--phase", "decode", "--platform", "acmechip"])
    assert res.exit_code == 3 and "PluginHookError" in res.output and "qwenlayers-acmechip" in res.output, res.output
    res = runner.invoke(app, ["platforms", "--details", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["acmechip"]["status"] == "broken" and "qwenlayers_workarounds raised RuntimeError" in rows["acmechip"]["reason"]
    assert rows["a5sim"]["status"] == "ok" and rows["a5sim"]["workarounds"]
    res = runner.invoke(app, ["platforms", "--details"])  # the table too
    assert res.exit_code == 0 and "pypto-ini-overlay" in res.output, res.output


def test_target_hook_with_wrong_type_is_a_plugin_error(use_registry):
    bad = FakeEP("acmechip", target_plugin("acmechip", qwenlayers_tiling_defaults=lambda platform, config, phase: {"seq_tile": 64},
                                           qwenlayers_prepare_runtime=lambda platform, workdir: {"PYTHONPATH": Path("/x")},
                                           qwenlayers_collective_backend=lambda platform: 7), "qwenlayers-acmechip")
    reg = use_registry(real_plus(bad))
    p = reg.get("acmechip")
    with pytest.raises(PluginHookError, match=r"qwenlayers_tiling_defaults returned dict \{'seq_tile': 64\}.*"
                                              r"must return a TilingPlan or None"):
        reg.tiling_defaults(p, preset("tiny"), "decode")
    with pytest.raises(PluginHookError, match="qwenlayers_prepare_runtime returned dict.*a dict of str names to str values"):
        reg.prepare_runtime(p, Path("/tmp"))
    with pytest.raises(PluginHookError, match="qwenlayers_collective_backend returned int 7"):
        reg.collective_backend(p)


def test_qwenlayers_error_from_a_hook_passes_through(use_registry):
    def refuse(platform, config, phase):
        raise TilingError("acme refuses this shape on purpose")

    reg = use_registry(real_plus(FakeEP("acmechip", target_plugin("acmechip", qwenlayers_tiling_defaults=refuse), "qwenlayers-acmechip")))
    with pytest.raises(TilingError, match="on purpose") as info:
        reg.tiling_defaults(reg.get("acmechip"), preset("tiny"), "decode")
    assert not isinstance(info.value, PluginHookError)
    assert [r.status for r in reg.records() if r.name == "acmechip"] == ["ok"]


def test_hook_wrapper_is_refused_at_load():
    def wrap(platform):
        return (yield)

    mod = types.ModuleType("fake_wrapper")
    mod.qwenlayers_workarounds = hookimpl(wrapper=True)(wrap)
    reg = real_plus(FakeEP("acme_wrap", mod, "acme-wrap"))
    record = [r for r in reg.records() if r.name == "acme_wrap"][0]
    assert record.status == "broken" and "hook wrapper" in record.error
    assert len(reg.workarounds(reg.get("a5sim"))) > 0


# ---------------------------------------------------------------------- cost-model runs are bounded up front

#: Fused decode cost-model runs measured on a5sim with the default plans: (preset, batch, length, peak worker MB).
MEASURED_DECODE_COST_MODEL = [("tiny", 16, 64, 448), ("tiny", 64, 64, 675), ("tiny", 128, 64, 990),
                              ("tiny", 256, 64, 1568), ("tiny", 256, 256, 1675), ("qwen3-0.6b", 16, 512, 1116),
                              ("qwen3-0.6b", 64, 512, 2896), ("qwen3-32b", 16, 4096, 13297)]


def _default_decode_plan(cfg, lens):
    reg = get_registry()
    platform = reg.select("a5sim")
    return fit_kv_block(reg.tiling_defaults(platform, cfg, "decode"), lens, cfg, platform)


@pytest.mark.parametrize(("model", "batch", "length", "peak_mb"), MEASURED_DECODE_COST_MODEL)
def test_decode_cost_model_estimate_covers_what_was_measured(model, batch, length, peak_mb):
    cfg, lens = preset(model).with_max_seq(max(length, 64)), [length] * batch
    est = chunking.decode_cost_model_estimate(cfg, _default_decode_plan(cfg, lens), lens)
    assert peak_mb * 2**20 <= est <= 1.5 * peak_mb * 2**20  # covers it, without refusing what would fit


def test_a_decode_cost_model_run_too_big_for_one_worker_is_refused_before_any_work(monkeypatch):
    """tiny at B=10,000 grew one worker past 9 GB in 48 s; now refused up front with the figures,
    how many of the sequences would fit, and nothing started or changed."""
    import qwenlayers
    from qwenlayers import layer

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker started for a cost-model run over the memory limit")

    monkeypatch.setattr(layer, "run_job", no_worker)
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_LIMIT_GB", "20")
    cfg = preset("tiny")
    inputs = random_inputs(cfg, "decode", [16] * 10_000, max_seq=16)
    before = {k: v.clone() for k, v in inputs.items()}
    weights = LayerWeights.random(cfg, seed=0)
    with pytest.raises(InputError, match=r"10000 sequences on tiny needs about \d+\.\d GB in one worker; the limit is "
                                         r"20\.0 GB .*about (\d+) of these sequences fit one call") as err:
        qwenlayers.decode(cfg, weights, **inputs, platform="a5sim", values=False)
    fit = int(re.search(r"about (\d+) of these", str(err.value)).group(1))
    assert 0 < fit < 10_000
    lens = [16] * fit
    plan = _default_decode_plan(cfg.with_max_seq(16), lens)
    assert chunking.decode_cost_model_estimate(cfg.with_max_seq(16), plan, lens) <= 20 * chunking.GIB
    assert chunking.decode_cost_model_estimate(cfg.with_max_seq(16), plan, [16] * (fit + 1)) > 20 * chunking.GIB
    assert all(torch.equal(inputs[k], before[k]) for k in inputs)


def test_a_huge_decode_batch_on_the_cli_is_exit_2(monkeypatch):
    monkeypatch.setenv("QWENLAYERS_WORKER_MEM_LIMIT_GB", "1")
    res = runner.invoke(app, ["run", "-p", "a5sim", "--batch", "512", "--seq-len", "8", "--cost-model-only"])
    assert res.exit_code == 2, res.output
    assert "QWENLAYERS_WORKER_MEM_LIMIT_GB" in res.output and "fit one call" in res.output


def test_a_prefill_of_many_tokens_is_simulated_in_token_groups(monkeypatch):
    """Loops A and C and every MLP shard of a phased prefill cost-model run stay under the MAC
    bound in contiguous groups of token tiles that cover every tile once."""
    cfg, lens = preset("qwen3-32b"), [4096] * 16
    split = chunking.phase_prefill_cost_model(cfg, lens, 128, 128, 128)
    assert split is not None
    per_token = chunking._macs_per_token(cfg, cfg.intermediate_size // split.mlp_shards)
    for groups, macs in ((split.qkv, per_token["qkv"]), (split.o_proj, per_token["o_proj"]), (split.mlp_groups, per_token["mlp"])):
        assert len(groups) > 1 and groups[0].start == 0 and groups[-1].stop == split.tiles
        assert all(a.stop == b.start for a, b in zip(groups, groups[1:]))
        assert all((g.stop - g.start) * split.token_tile * macs <= chunking.MAX_COST_MODEL_MACS for g in groups)
    # many short sequences: a small attention, but the tokens alone ask for phases
    tiny = preset("tiny")
    many = [4] * 4096
    assert chunking.attention_scores(tiny, many, 64) <= chunking.MAX_COST_MODEL_SCORES
    monkeypatch.setattr(chunking, "MAX_COST_MODEL_MACS", sum(chunking._macs_per_token(tiny).values()) * 1024)
    assert chunking.phase_prefill_cost_model(tiny, many[:256], 64, 128, 64) is None
    assert len(chunking.phase_prefill_cost_model(tiny, many, 64, 128, 64).qkv) > 1
