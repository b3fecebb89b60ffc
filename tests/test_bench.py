"""`qwenlayers bench`: records, the plot, the traces; and the work counts behind the roofline."""

import json

import pytest
from typer.testing import CliRunner

from qwenlayers.cli import app
from qwenlayers.core.config import preset
from qwenlayers.core.work import layer_work

runner = CliRunner()


def test_layer_work_counts_by_hand():
    cfg = preset("tiny")  # h256, i512, 4 heads / 2 KV heads of 64: q 256, kv 128
    w = layer_work(cfg, "decode", [10, 30])
    proj = 2 * 2 * (256 * (256 + 2 * 128) + 256 * 256 + 3 * 256 * 512)
    assert w.flops == proj + 2 * 2 * 4 * 64 * 40
    assert w.cache_bytes == 2 * 128 * 40 * 2 + 2 * 128 * 2 * 2
    assert w.weight_bytes == cfg.weight_bytes() and w.activation_bytes == 2 * 2 * 256 * 2
    p = layer_work(cfg, "prefill", [3])
    assert p.flops == 2 * 3 * (256 * 512 + 256 * 256 + 3 * 256 * 512) + 2 * 2 * 4 * 64 * 6  # 6 causal pairs
    assert p.roofline_us(1e12, 1e15) == pytest.approx(p.bytes / 1e12 * 1e6)  # tiny work: memory-bound


@pytest.mark.neutral
@pytest.mark.sim
def test_bench_sweep_writes_history_plot_and_traces(runnable_platform, tmp_path):
    res = runner.invoke(app, ["bench", "--model", "tiny", "--batch", "1,2", "--seq-len", "64", "--platform",
                              runnable_platform.name, "--results", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.output)
    history = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in records] == [1, 2] and history == json.loads(json.dumps(records))
    for r in records:
        assert r["platform"] == runnable_platform.name and r["sim_us"] > 0 and r["tasks"]["AIC"] > 0
        assert 0 < r["roofline_fraction"] < 1 and r["roofline_bound"] in ("memory", "compute")
        assert r["flops"] > 0 and r["bytes"] > 0 and "calibrated" in r["roofline_source"] and "nominal" in r["roofline_source"]
        cal = r["calibration"]
        assert cal["cube_tflops"] > 0 and cal["vector_gops"] > 0 and cal["vector_stream_gb_s"] > 0 and cal["cube_stream_gb_s"] > 0
        assert cal["bandwidth_gb_s"] == max(cal["vector_stream_gb_s"], cal["cube_stream_gb_s"])  # the faster path
        assert 0 < r["nominal_roofline_fraction"] < 1
        base = r["baseline"]  # the reference schedule at the same point, same process
        assert base["schedule"] == "reference" and base["sim_us"] > 0 and base["tasks"]["AIC"] > 0
        assert base["speedup"] == pytest.approx(base["sim_us"] / r["sim_us"])
        assert base["task_ratio"] == pytest.approx(sum(base["tasks"].values()) / sum(r["tasks"].values()))
        trace = json.loads(open(r["trace"]).read())  # a Perfetto/Chrome trace: JSON with events
        assert trace
    assert list(tmp_path.glob("*-tiny-decode.png"))
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # run folders are not kept, only the traces


@pytest.mark.neutral
@pytest.mark.sim
def test_prefill_bench_records_the_reference_schedule_beside_ours(runnable_platform, tmp_path):
    res = runner.invoke(app, ["bench", "--phase", "prefill", "--model", "tiny", "--seq-len", "40", "--platform",
                              runnable_platform.name, "--results", str(tmp_path), "--json",
                              "--budgets", "default", "--budgets", "pypto-lib"])
    assert res.exit_code == 0, res.output
    r, lib = json.loads(res.output)  # both budget sets side by side, the platform's own first
    assert r["budgets"] == runnable_platform.budgets.name and r["default_budgets"] is True
    assert lib["budgets"] == "pypto-lib" and lib["default_budgets"] is False and lib["plan"]["cube_m"] == 64
    assert lib["sim_us"] > 0 and lib["baseline"]["sim_us"] > 0
    assert r["phase"] == "prefill" and r["sim_us"] > 0 and 0 < r["roofline_fraction"] < 1
    base = r["baseline"]
    assert base["schedule"] == "reference" and base["sim_us"] > 0
    assert base["speedup"] == pytest.approx(base["sim_us"] / r["sim_us"])
    assert base["task_ratio"] == pytest.approx(sum(base["tasks"].values()) / sum(r["tasks"].values()))
    assert list(tmp_path.glob("*-tiny-prefill.png"))


def test_bench_bad_sizes_exit_2():
    res = runner.invoke(app, ["bench", "--batch", "1,x"])
    assert res.exit_code == 2 and "comma-separated list of ints" in res.output
    res = runner.invoke(app, ["bench", "--phase", "train"])
    assert res.exit_code == 2 and "Invalid value for '--phase'" in res.output and "'train' is not one of" in res.output


def test_a_failing_baseline_costs_the_comparison_not_the_point(monkeypatch, tmp_path):
    """The fused point is recorded and the command exits 0 with a warning; the baseline shows
    as "not measured" with its reason (seen at qwen3-32b: the reference program died in pypto's
    compiler after the fused point had been simulated, and the point was lost)."""
    from types import SimpleNamespace

    from qwenlayers import bench
    from qwenlayers.errors import KernelError
    from qwenlayers.runtime.calibration import Calibration

    def fake_run(cfg, weights, *, schedule="fused", **kwargs):
        if schedule == "reference":
            raise KernelError("pypto worker for decode on platform a5sim exited with code 1.\nErrcode: FFFFFF! Run pass failed.")
        return SimpleNamespace(report=SimpleNamespace(
            sim_us=10.0, total_cycles=1.0, arch="DAV_3510", cost_model_arch="A5", lanes={}, tasks={"AIC": 1, "AIV": 2},
            pipe_usage_pct={}, compile_s=1.0, simulate_s=1.0, peak_rss_mb=100, plan={}, trace=None, run_dir=None,
            max_abs_err=None, within_tolerance=None, from_cache=False, cache_key=None))

    cal = Calibration("a5sim", "0.2.0", 1000.0, 100.0, 100.0, 1.0, 1.0, 1.0, 1000.0, 1000.0)
    monkeypatch.setattr(bench, "decode", fake_run)
    monkeypatch.setattr(bench, "calibrate", lambda target: cal)
    res = runner.invoke(app, ["bench", "-m", "tiny", "--batch", "1", "--seq-len", "64", "-p", "a5sim",
                              "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "not measured" in res.output and "baseline not measured at 1 x 64 on a5sim: KernelError" in res.output
    (record,) = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert record["sim_us"] == 10.0
    assert record["baseline"]["not_measured"].startswith("KernelError: pypto worker for decode")
