"""Workarounds as data: each records the observed failure, how it is avoided, and the testable
condition under which it can go (the Why/How/Future-Plan comments of vLLM's platform patches, made a record).

Builders ask for a workaround by key; asking for a key no plugin declared is an error, so a
typo cannot silently switch a workaround off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from qwenlayers.errors import QwenlayersError


@dataclass(frozen=True)
class Workaround:
    key: str  # stable identifier builders ask for, e.g. "pypto-one-axis-broadcast"
    summary: str  # one line: what the builder does differently
    why: str  # the observed failure, with the pypto version and error text
    upstream: str  # issue/PR/source reference, or "none: <reason>"
    remove_when: str  # the testable condition under which it can be dropped

    def __post_init__(self) -> None:
        for f in ("key", "summary", "why", "upstream", "remove_when"):
            if not getattr(self, f).strip():
                raise ValueError(f"Workaround.{f} must not be empty (key={self.key!r})")


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

    def __getitem__(self, key: str) -> Workaround:
        try:
            return self._items[key]
        except KeyError:
            raise QwenlayersError(f"no workaround {key!r} is declared; declared: {', '.join(self._items) or 'none'}") from None

    def __iter__(self) -> Iterator[Workaround]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)
