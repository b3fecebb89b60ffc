import json

from typer.testing import CliRunner

from qwenlayers.cli import app

runner = CliRunner()


def test_platforms_json_lists_all_four_with_reasons():
    res = runner.invoke(app, ["platforms", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["a5sim"]["arch"] == "DAV_3510" and rows["a2a3sim"]["arch"] == "DAV_2201"
    assert rows["a5sim"]["distribution"] == "qwenlayers-a5sim" and rows["a5sim"]["tilelet_bytes"] == 2048
    for name in ("a5", "a2a3"):
        assert rows[name]["run_mode"] == "npu"
        assert rows[name]["reason"]  # usable or not, it always says why


def test_platforms_table_and_details():
    res = runner.invoke(app, ["platforms", "--details"])
    assert res.exit_code == 0 and "pypto-a5-target-selection" in res.output


def test_plan_table_and_override():
    res = runner.invoke(app, ["plan", "--model", "qwen3-32b", "--phase", "prefill", "--platform", "a2a3sim", "--tile", "SEQ_TILE=32"])
    assert res.exit_code == 0, res.output
    assert "SEQ_TILE" in res.output and "user" in res.output and "TILE 16384" in res.output


def test_exit_codes():
    assert runner.invoke(app, ["plan", "-m", "tiny", "--phase", "decode", "--tile", "SEQ_TILE=4096"]).exit_code == 2
    assert runner.invoke(app, ["plan", "-m", "tiny", "--phase", "sideways"]).exit_code == 2
    res = runner.invoke(app, ["smoke", "--platform", "a6"])
    assert res.exit_code == 3 and "unknown platform 'a6'" in res.output
