"""The README's Python snippet runs as written, as a script, on the platform it names."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.neutral
@pytest.mark.sim
def test_readme_python_snippet_runs_as_a_script(tmp_path):
    """On every test env: the snippet names a5sim (what `pip install qwenlayers[a5sim]` installs),
    which every env has and which runs on any box."""
    block = re.search(r"From Python[^\n]*\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no Python snippet"
    script = tmp_path / "snippet.py"
    script.write_text(block.group(1))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = res.stdout.splitlines()
    assert lines[0] == "32 True DAV_3510"
    assert lines[1].startswith("torch.Size([3, 1024])")
