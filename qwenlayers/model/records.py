"""Where a whole-model run's results go: one JSON record (everything ``--json`` prints) and,
for a checked run, the drift plot beside it, in the results folder (default: the user data
dir's ``generate/``). Nothing else is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

from qwenlayers.model.generation import Generation
from qwenlayers.model.plot import plot_drift
from qwenlayers.runtime.paths import atomic_write_text, results_dir, writable_dir


def results_folder(results: Path | None = None) -> Path:
    """The folder a run's record goes to, created and checked writable: asked before the run,
    so a run's results are never lost to a folder that cannot take them."""
    return writable_dir(results or results_dir("generate"), "results folder")


def write_generation(gen: Generation, results: Path | None = None) -> tuple[Path, Path | None]:
    """Write the record (and the plot when checked); returns their paths. A record never
    replaces another: two runs in the same second get ``-2``, ``-3`` ... stems."""
    folder = results_folder(results)
    base = f"generate-{gen.model.replace('/', '_')}-{gen.platform}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem, n = base, 1
    while (folder / f"{stem}.json").exists():
        n += 1
        stem = f"{base}-{n}"
    record = folder / f"{stem}.json"
    atomic_write_text(record, json.dumps(gen.as_dict(), indent=2, default=str))
    plot = plot_drift(gen, folder / f"{stem}-drift.png") if gen.checked and gen.drift else None
    return record, plot
