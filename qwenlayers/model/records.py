"""Where a whole-model run's results go: one JSON record (everything ``--json`` prints) and,
for a checked run, the drift plot beside it, in the results folder (default: the user data
dir's ``generate/``). Nothing else is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

from qwenlayers.model.generation import Generation
from qwenlayers.model.plot import plot_drift
from qwenlayers.runtime.paths import atomic_write_text, results_dir


def write_generation(gen: Generation, results: Path | None = None) -> tuple[Path, Path | None]:
    """Write the record (and the plot when checked); returns their paths."""
    folder = results or results_dir("generate")
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"generate-{gen.model.replace('/', '_')}-{gen.platform}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = folder / f"{stem}.json"
    atomic_write_text(record, json.dumps(gen.as_dict(), indent=2, default=str))
    plot = plot_drift(gen, folder / f"{stem}-drift.png") if gen.checked and gen.drift else None
    return record, plot
