"""`qwenlayers tune`: a search that keeps the fastest plan and makes it the class's default."""

import json

import pytest
from typer.testing import CliRunner

import qwenlayers
from qwenlayers.cli import app
from qwenlayers.plans import shape_class

runner = CliRunner()


def test_shape_classes_round_up_to_powers_of_two():
    assert shape_class("decode", [1, 200, 3]) == "b4-l256"
    assert shape_class("decode", [64]) == "b1-l64"
    assert shape_class("prefill", [100, 30]) == "t256"


@pytest.mark.sim
def test_tune_caches_a_faster_plan_that_becomes_the_default_for_its_class(runnable_platform, tmp_path, monkeypatch):
    monkeypatch.setenv("QWENLAYERS_TUNED_DIR", str(tmp_path))
    name = runnable_platform.name
    res = runner.invoke(app, ["tune", "--model", "tiny", "--batch", "2", "--seq-len", "256", "--platform", name,
                              "--time-limit", "120", "--field", "SEQ_TILE"])
    assert res.exit_code == 0, res.output
    stored = json.loads(next(tmp_path.glob(f"{name}/pypto-*.json")).read_text())
    entry = stored[f"tiny|decode|b2-l256|{runnable_platform.budgets.name}"]  # tuned plans are per budget set
    assert entry["sim_us"] <= entry["default_us"]
    default = qwenlayers.plan("tiny", "decode", platform=name)
    same_class = qwenlayers.plan("tiny", "decode", platform=name, batch=2, seq_len=200)
    other_class = qwenlayers.plan("tiny", "decode", platform=name, batch=8, seq_len=200)
    assert other_class == default
    if entry["values"]:  # the search found a faster SEQ_TILE: it is the default for this class now
        assert same_class.seq_tile == entry["values"]["seq_tile"] and same_class.origin_of("seq_tile") == "tuned"
        user = qwenlayers.plan("tiny", "decode", platform=name, batch=2, seq_len=200, overrides={"SEQ_TILE": 32})
        assert user.seq_tile == 32 and user.origin_of("seq_tile") == "user"  # the user still wins
    else:
        assert same_class == default
