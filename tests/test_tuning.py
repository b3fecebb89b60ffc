"""`qwenlayers tune`: a search that keeps the fastest plan and makes it the class's default."""

import json
import types

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


@pytest.mark.neutral
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


def test_a_candidate_that_fails_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    """At full size some corners of the search do not compile or do not fit (KernelError,
    InputError): they are recorded with their reason; only the plugin's own plan must run."""
    from qwenlayers import tuning
    from qwenlayers.errors import KernelError

    monkeypatch.setenv("QWENLAYERS_TUNED_DIR", str(tmp_path))
    default = qwenlayers.plan("tiny", "decode", platform="a5sim")

    def fake_decode(cfg, weights, *args, plan, **kwargs):
        if plan.seq_tile != default.seq_tile:
            raise KernelError("pypto worker for decode on platform a5sim exited with code 1.\nTraceback ...")
        return types.SimpleNamespace(report=types.SimpleNamespace(sim_us=100.0, tasks={"AIC": 1}, from_cache=False))

    monkeypatch.setattr(tuning, "decode", fake_decode)
    result = tuning.tune("decode", "tiny", "a5sim", batch=2, seq_len=256, fields=["seq_tile"], time_limit_s=60)
    failed = [t for t in result.tried if t["sim_us"] is None]
    assert failed and all(t["failed"] == "KernelError: pypto worker for decode on platform a5sim exited with code 1."
                          for t in failed)
    assert result.best_us == result.default_us == 100.0 and result.best.values() == default.values()

    def default_fails(*args, **kwargs):
        raise KernelError("the plugin's plan does not compile")

    monkeypatch.setattr(tuning, "decode", default_fails)
    with pytest.raises(KernelError, match="the plugin's plan does not compile"):
        tuning.tune("decode", "tiny", "a5sim", batch=2, seq_len=256, fields=["seq_tile"], time_limit_s=60)
