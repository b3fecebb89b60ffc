import json

import pytest
from typer.testing import CliRunner

from qwenlayers.cli import app

runner = CliRunner()


def test_platforms_json_lists_all_four_with_reasons():
    res = runner.invoke(app, ["platforms", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["a5sim"]["arch"] == "DAV_3510" and rows["a2a3sim"]["arch"] == "DAV_2201"
    assert rows["a5sim"]["distribution"] == "qwenlayers-a5sim" and rows["a5sim"]["budgets"] == "a5" and rows["a5sim"]["tilelet_bytes"] == 65536
    assert [b["name"] for b in rows["a2a3sim"]["budget_sets"]] == ["a2a3", "pypto-lib"]
    for name in ("a5", "a2a3"):
        assert rows[name]["run_mode"] == "npu"
        assert rows[name]["reason"]  # usable or not, it always says why


def test_platforms_table_and_details():
    res = runner.invoke(app, ["platforms", "--details"])
    assert res.exit_code == 0, res.output
    # the core's built-in plugin answers for every sim platform; only a5sim's ini differs from pypto's
    assert "workaround (switch) pypto-ini-overlay" in res.output and "note pypto-one-axis-broadcast" in res.output
    details = res.output.split("\na5sim hooks:")[1].split("\na5 hooks:")[0] if "\na5 hooks:" in res.output else res.output
    assert "pypto-ini-overlay" in details


def test_plan_table_and_override():
    res = runner.invoke(app, ["plan", "--model", "qwen3-32b", "--phase", "prefill", "--platform", "a2a3sim", "--tile", "SEQ_TILE=32"])
    assert res.exit_code == 0, res.output
    assert "SEQ_TILE" in res.output and "user" in res.output and "TILE 32768" in res.output and "budget set a2a3" in res.output
    res = runner.invoke(app, ["plan", "--model", "qwen3-32b", "--phase", "prefill", "--platform", "a2a3sim", "--budgets", "pypto-lib"])
    assert res.exit_code == 0 and "budget set pypto-lib" in res.output and "TILE 16384" in res.output, res.output


def test_exit_codes():
    assert runner.invoke(app, ["plan", "-m", "tiny", "--phase", "decode", "--tile", "SEQ_TILE=4096"]).exit_code == 2
    assert runner.invoke(app, ["plan", "-m", "tiny", "--phase", "sideways"]).exit_code == 2
    res = runner.invoke(app, ["smoke", "--platform", "a6"])
    assert res.exit_code == 3 and "unknown platform 'a6'" in res.output
    assert "pip install -e plugins/<target>" in res.output and "--find-links dist" in res.output  # works from a checkout
    res = runner.invoke(app, ["smoke", "--platform", "a5simm"])  # a typo: the closest installed name, no pip hint
    assert res.exit_code == 3 and "Did you mean 'a5sim'?" in res.output and "qwenlayers[a5simm]" not in res.output


@pytest.mark.neutral
@pytest.mark.sim
def test_run_with_no_options_is_a_checked_small_decode(runnable_platform, monkeypatch):
    monkeypatch.setenv("QWENLAYERS_PLATFORM", runnable_platform.name)
    res = runner.invoke(app, ["run", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["platform"] == runnable_platform.name and report["phase"] == "decode" and report["model"] == "tiny"
    assert report["seq_lens"] == [1, 86, 171, 256] and report["within_tolerance"] is True
    assert report["sim_us"] > 0 and report["max_abs_err"] < 0.05


@pytest.mark.neutral
@pytest.mark.sim
def test_run_from_a_checkpoint_with_seq_lens_prints_the_table(runnable_platform, tmp_path):
    from qwenlayers import LayerWeights, preset

    cfg = preset("tiny-gqa8")
    LayerWeights.write_checkpoint(tmp_path, {0: LayerWeights.random(cfg, seed=1), 1: LayerWeights.random(cfg, seed=2)})
    res = runner.invoke(app, ["run", "--weights", str(tmp_path), "--layer", "1", "--seq-lens", "3,70",
                              "--platform", runnable_platform.name])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "max |out - golden|" in res.output and "simulated AICore time" in res.output


def test_run_bad_options_exit_2_with_the_reason():
    res = runner.invoke(app, ["run", "--seq-len", "5", "--seq-lens", "1,2"])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["run", "--seq-lens", "1,x"])
    assert res.exit_code == 2 and "comma-separated list of ints" in res.output
    res = runner.invoke(app, ["run", "--seq-len", "300"])  # tiny has MAX_SEQ 256
    assert res.exit_code == 2 and "1 <= seq_len <= 256" in res.output
    res = runner.invoke(app, ["run", "--phase", "train"])
    assert res.exit_code == 2 and "Invalid value for '--phase'" in res.output and "'train' is not one of" in res.output
