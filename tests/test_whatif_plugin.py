"""A what-if target as a hardware team would write it: a third-party sim plugin of ~20 lines that
changes an in-tree target's cores and buffers, pip-installed from a temp dir, with no workaround
list and no runtime code of its own. It must compile for its own arch, be simulated with its own
core count and buffers, match the golden in decode and prefill, and bench beside the in-tree sim.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
README = HERE.parent / "README.md"

#: per target family: the what-if variant, what it changes, and the in-tree sim it is compared with
A5_VARIANT = ("a5w20", "qwenlayers_a5w20", {"arch": "DAV_3510", "sim_arch": "A5", "cube": 20, "ub": 128 * 1024}, "a5sim")
A2A3_VARIANT = ("a2a3l1", "qwenlayers_a2a3l1", {"arch": "DAV_2201", "sim_arch": "A2A3", "cube": 16, "l1": 256 * 1024},
                "a2a3sim")
#: the platform under test picks its family's variant; a variant is a sim, so it runs on every env
VARIANTS = {"a5sim": A5_VARIANT, "a5": A5_VARIANT, "a2a3sim": A2A3_VARIANT, "a2a3": A2A3_VARIANT}


@pytest.fixture(scope="module")
def whatif(platform_name, tmp_path_factory):
    """(variant name, expected facts, env with the variant installed, the in-tree sim to compare
    with), for the family of the platform under test (a5 for any other)."""
    name, package, facts, in_tree = VARIANTS.get(platform_name, A5_VARIANT)
    tmp = tmp_path_factory.mktemp("whatif")
    src = tmp / package
    shutil.copytree(HERE / "plugins" / package, src)
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("QWENLAYERS_PLATFORM", None)
    return name, facts, env, in_tree


def _cli(env, *args, check=True):
    res = subprocess.run([sys.executable, "-m", "qwenlayers.cli", *args], env=env, capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_readme_shows_the_tested_plugin():
    """The README's what-if plugin is this test's a5w20 plugin, character for character."""
    block = re.search(r"```python\n(# src/qwenlayers_a5w20/__init__.py\n.*?)```", README.read_text(), re.S)
    assert block, "README has no what-if plugin block"
    code = (HERE / "plugins" / "qwenlayers_a5w20" / "src" / "qwenlayers_a5w20" / "__init__.py").read_text()
    assert block.group(1).split("\n", 1)[1] == code
    assert len(code.splitlines()) <= 30


@pytest.mark.sim
def test_whatif_is_listed_with_its_own_facts(whatif):
    name, facts, env, _ = whatif
    rows = {r["name"]: r for r in json.loads(_cli(env, "platforms", "--json").stdout)}
    row = rows[name]
    assert row["usable"] is True and row["run_mode"] == "sim" and row["arch"] == facts["arch"]
    assert row["cores"]["cube"] == facts["cube"] and row["cores"]["vector"] == 2 * facts["cube"]
    for buf in ("ub", "l1"):
        if buf in facts:
            assert row["buffers"][buf] == facts[buf]


@pytest.mark.sim
@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_whatif_compiles_for_itself_and_matches_the_golden(whatif, phase):
    name, facts, env, _ = whatif
    res = _cli(env, "run", "--phase", phase, "-m", "tiny", "-p", name, "--json")
    report = json.loads(res.stdout)
    assert report["platform"] == name
    assert report["arch"] == facts["arch"] and report["cost_model_arch"] == facts["sim_arch"]
    assert report["lanes"] == {"AIC": facts["cube"], "AIV": 2 * facts["cube"]}
    assert report["within_tolerance"] is True and report["max_abs_err"] <= 0.0625
    # the core's built-in plugin did what the variant never asked for
    assert "pypto-sim-verify-real-inputs" in report["workarounds"] and "pypto-ini-overlay" in report["workarounds"]
    assert report["sim_us"] > 0


@pytest.mark.sim
def test_bench_shows_the_whatif_beside_the_in_tree_target(whatif, tmp_path):
    name, facts, env, in_tree = whatif
    res = _cli(env, "bench", "--phase", "decode", "-m", "tiny", "--batch", "4", "--seq-len", "64", "-p", name,
               "-p", in_tree, "--no-baseline", "--results", str(tmp_path), "--json")
    records = {r["platform"]: r for r in json.loads(res.stdout)}
    assert set(records) == {name, in_tree}
    assert all(r["sim_us"] > 0 for r in records.values())
    assert records[name]["lanes"]["AIC"] == facts["cube"]
    assert records[in_tree]["lanes"]["AIC"] != facts["cube"]


def test_piped_tables_keep_their_columns():
    """Not a terminal (a pipe, a CI log): rows stay whole instead of wrapping at 80 columns."""
    res = subprocess.run([sys.executable, "-m", "qwenlayers.cli", "platforms"], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert res.returncode == 0
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("│")]
    assert rows and all("…" not in ln for ln in rows)
    assert any("qwenlayers-a5sim 0.1.0" in ln and "DAV_3510" in ln for ln in rows)
