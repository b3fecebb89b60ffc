"""A real pip install of a third-party plugin from a temp dir: listed and selectable, no core change."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.neutral
def test_dummy_plugin_installs_lists_and_selects(tmp_path):
    src = tmp_path / "qwenlayers_dummy"
    shutil.copytree(HERE / "plugins" / "qwenlayers_dummy", src)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(src)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cli = [sys.executable, "-m", "qwenlayers.cli"]
    listed = subprocess.run([*cli, "platforms", "--json"], env=env, capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["dummy"]["distribution"] == "qwenlayers-dummy" and rows["dummy"]["usable"] is False
    assert rows["dummy"]["reason"] == "dummy hardware does not exist"
    assert "a5sim" in rows  # the others stay
    env["QWENLAYERS_PLATFORM"] = "dummy"
    planned = subprocess.run([*cli, "plan", "-m", "tiny", "--phase", "decode", "--json"], env=env, capture_output=True, text=True, check=True)
    data = json.loads(planned.stdout)
    assert data["platform"] == "dummy" and data["plan"]["seq_tile"] == 32
    origin = data["plan"]["origin"]  # what the plugin set, what it left at the defaults, what the core fitted
    assert origin["seq_tile"] == origin["tok_tile"] == "plugin qwenlayers-dummy"
    assert origin["cube_m"] == origin["stitch_loops"] == "default"
    assert origin["kv_block"] == "plugin qwenlayers-dummy, fitted"
    # the README's snippet, checked by the same code
    readme = (HERE.parent / "README.md").read_text()
    code = (HERE / "plugins" / "qwenlayers_dummy" / "src" / "qwenlayers_dummy" / "__init__.py").read_text()
    assert code.split("\n", 1)[1].strip() in readme
    refused = subprocess.run([*cli, "smoke"], env=env, capture_output=True, text=True)
    assert refused.returncode == 3 and "dummy hardware does not exist" in refused.stderr
