import pathlib
import re

CORE = pathlib.Path(__file__).resolve().parents[1] / "qwenlayers" / "core"


def test_core_never_names_a_platform():
    pattern = re.compile(r"a2a3|\ba5|910|950|DAV_|Ascend|torch_npu", re.IGNORECASE)
    hits = [f"{p.name}:{i}: {line.strip()}" for p in CORE.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert hits == []
