"""Workarounds as data: each records the observed failure, how it is avoided, and the testable
condition under which it can go (the Why/How/Future-Plan comments of vLLM's platform patches, made a record).

Two kinds, so a record never pretends to be a switch:

* ``switch``: the runtime checks for its key and acts only when it is declared (the worker
  patches pypto, the runtime writes an ini overlay); a run's report lists the switches in force.
* ``note``: a constraint the builders are written around on every target (how a broadcast or a
  loop result is spelled). Nothing switches it; ``qwenlayers platforms --details`` shows it so
  the reason stays next to the code it shaped, and its ``remove_when`` says when to rewrite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from qwenlayers.errors import QwenlayersError

WorkaroundKind = Literal["switch", "note"]


@dataclass(frozen=True)
class Workaround:
    key: str  # stable identifier, e.g. "pypto-one-axis-broadcast"
    summary: str  # one line: what is done differently
    why: str  # the observed failure, with the pypto version and error text
    upstream: str  # issue/PR/source reference, or "none: <reason>"
    remove_when: str  # the testable condition under which it can be dropped
    kind: WorkaroundKind = "note"

    def __post_init__(self) -> None:
        for f in ("key", "summary", "why", "upstream", "remove_when"):
            if not getattr(self, f).strip():
                raise ValueError(f"Workaround.{f} must not be empty (key={self.key!r})")
        if self.kind not in ("switch", "note"):
            raise ValueError(f"Workaround.kind must be 'switch' or 'note', got {self.kind!r} (key={self.key!r})")


class WorkaroundSet:
    """The workarounds in force for one platform, looked up by key."""

    def __init__(self, items: Iterable[Workaround] = ()) -> None:
        self._items: dict[str, Workaround] = {}
        for w in items:
            if w.key in self._items:
                raise QwenlayersError(f"workaround {w.key!r} is declared twice; keys must be unique per platform")
            self._items[w.key] = w

    def active(self, key: str) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[Workaround]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def switches(self) -> list[str]:
        """Keys of the switches: what the worker and the runtime act on."""
        return [w.key for w in self._items.values() if w.kind == "switch"]
