"""Nothing simulated twice: an identical cost-model run answers from the result cache and says so."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

import qwenlayers
from qwenlayers.cli import app
from qwenlayers.core.config import preset
from qwenlayers.inputs import cost_model_inputs, random_inputs
from qwenlayers.runtime import result_cache
from qwenlayers.runtime.job_types import RmsNormJob
from qwenlayers.target import resolve_target

runner = CliRunner()


def _job(rows=16, cols=256, fill=0.0):
    return RmsNormJob(torch.full((rows, cols), fill).bfloat16(), torch.ones(cols).bfloat16(), 1e-6, (rows, 32))


def test_the_key_is_the_program_and_the_target_not_the_numbers():
    a5 = resolve_target("a5sim")
    key = result_cache.job_key(a5, _job(), False)
    assert result_cache.job_key(a5, _job(fill=3.0), False) == key  # the tensors' values do not change the program
    assert result_cache.job_key(a5, _job(rows=8), False) != key  # their shapes do
    assert result_cache.job_key(a5, replace(_job(), eps=1e-5), False) != key
    assert result_cache.job_key(a5, _job(), True) != key  # pass verification is part of the run
    assert result_cache.job_key(resolve_target("a2a3sim"), _job(), False) != key  # so is the target
    other_budgets = resolve_target("a5sim", budgets="pypto-lib")
    assert result_cache.job_key(other_budgets, _job(), False) != key


@pytest.mark.neutral
@pytest.mark.sim
def test_a_cost_model_run_does_not_read_values(runnable_platform):
    """Why the cache is keyed by shapes, and why bench and tune cost-model points run on zero
    weights and inputs: random and zero tensors of the same shapes simulate the same program,
    to the cycle (decode reads seq_lens, which stay real)."""
    cfg, lens = preset("tiny"), [3, 70]
    runs = []
    for weights, inputs in ((qwenlayers.LayerWeights.random(cfg, seed=5), random_inputs(cfg, "decode", lens, seed=5)),
                            (qwenlayers.LayerWeights.zeros(cfg), cost_model_inputs(cfg, "decode", lens))):
        assert all(inputs[k].shape == v.shape and inputs[k].dtype == v.dtype for k, v in random_inputs(cfg, "decode", lens).items())
        runs.append(qwenlayers.decode(cfg, weights, **inputs, platform=runnable_platform.name, values=False, cache=False).report)
    assert runs[0].tasks == runs[1].tasks and runs[0].total_cycles == runs[1].total_cycles and runs[0].sim_us == runs[1].sim_us


@pytest.mark.neutral
@pytest.mark.sim
@pytest.mark.result_cache
def test_an_identical_cost_model_run_answers_from_the_cache(runnable_platform):
    cfg = preset("tiny")
    w = qwenlayers.LayerWeights.random(cfg, seed=11)
    args = random_inputs(cfg, "decode", [3, 17], seed=11)
    plan = {"seq_tile": 16, "kv_block": 48}
    fresh = qwenlayers.decode(cfg, w, **args, platform=runnable_platform.name, plan=plan, values=False, cache=False)
    again = qwenlayers.decode(cfg, w, **args, platform=runnable_platform.name, plan=plan, values=False)
    assert not fresh.report.from_cache and again.report.from_cache
    assert again.report.sim_us == fresh.report.sim_us and again.report.tasks == fresh.report.tasks
    assert again.report.wall_s < fresh.report.wall_s
    other = qwenlayers.decode(cfg, w, **args, platform=runnable_platform.name, plan={**plan, "kv_block": 32}, values=False)
    assert other.report.cache_key != again.report.cache_key  # another program, another entry (it may be cached already)


@pytest.mark.neutral
@pytest.mark.sim
@pytest.mark.result_cache
def test_a_repeated_bench_point_reuses_its_result_and_its_trace(runnable_platform, tmp_path):
    cmd = ["bench", "-m", "tiny", "--batch", "3", "--seq-len", "40", "-p", runnable_platform.name, "--no-baseline",
           "--results", str(tmp_path), "--json"]
    first = runner.invoke(app, [*cmd, "--no-cache"])
    second = runner.invoke(app, cmd)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = json.loads(first.stdout)[0], json.loads(second.stdout)[0]
    assert not a["from_cache"] and b["from_cache"] and b["sim_us"] == a["sim_us"]
    assert b["trace"] == a["trace"] and a["trace"]  # the earlier run's trace stands for the repeat
    records = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert [r["from_cache"] for r in records] == [False, True]


def test_a_damaged_entry_is_absent_with_one_warning(tmp_path, monkeypatch):
    """An entry is data only (JSON + safetensors, runtime/exchange.py); one that does not read is
    treated as absent, named in a warning, and the run simulates afresh."""
    from qwenlayers.runtime.paths import CacheWarning

    monkeypatch.setenv("QWENLAYERS_CACHE_DIR", str(tmp_path / "cache"))
    key = "0" * 32
    result_cache.store(key, {"out": torch.zeros(2, 3)}, {"sim_us": 1.5, "run_dir": "/x", "trace": "/y"})
    outputs, report = result_cache.lookup(key)
    assert outputs["out"].shape == (2, 3) and report["sim_us"] == 1.5 and report["from_cache"] is True
    assert report["run_dir"] is None and report["trace"] is None  # a cached answer has no run of its own
    stem = result_cache._stem(key)
    stem.with_suffix(".json").write_text("{ not json")
    with pytest.warns(CacheWarning, match=key):
        assert result_cache.lookup(key) is None
