"""Messages between processes as data only: tensors in safetensors, everything else in JSON.

The parent and its workers (and tensor-parallel ranks) exchange jobs and results through files
in a run folder. A pickle there would run whatever code it names when loaded, so a file swapped
in a run folder, or a run folder someone sends you and you replay with the printed ``repro:``
command, would run as you. A message here is two files, ``<stem>.json`` and
``<stem>.safetensors``; loading one builds only tensors, JSON values and the few frozen
descriptors listed in :data:`DECODERS`, and refuses anything else with what it found.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qwenlayers.core.config import Qwen3Config
from qwenlayers.core.sharding import ShardPlan
from qwenlayers.core.tiling import TilingPlan
from qwenlayers.errors import KernelError

TENSOR, TYPE, FLOAT = "__tensor__", "__type__", "__float__"


def _plan(fields: dict[str, Any]) -> TilingPlan:
    return TilingPlan(**{**fields, "origin": tuple(tuple(pair) for pair in fields.get("origin", ()))})


def _shard(fields: dict[str, Any]) -> ShardPlan:
    return ShardPlan(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


#: The only non-JSON values a message may carry, by name: descriptors rebuilt from their fields.
DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "Qwen3Config": lambda f: Qwen3Config(**f), "TilingPlan": _plan, "ShardPlan": _shard,
}


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[int] = set()

    def tensor(self, value: torch.Tensor) -> dict[str, str]:
        key = f"t{len(self.tensors)}"
        t = value.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in self._storages and t.numel():  # safetensors refuses two tensors on one storage
            t = t.clone()
        self._storages.add(t.untyped_storage().data_ptr())
        self.tensors[key] = t
        return {TENSOR: key}

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type) and type(value).__name__ in DECODERS:
            return {TYPE: type(value).__name__, "fields": self.value(dataclasses.asdict(value), where)}
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise TypeError(f"message field {where} has a non-string key {bad[0]!r}")
            return {k: self.value(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            return {FLOAT: repr(value)}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"message field {where} is a {type(value).__name__}; a message carries only tensors, "
                        f"JSON values and {', '.join(DECODERS)}")


def write_message(stem: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as ``<stem>.json`` (written last: its presence means complete) and
    ``<stem>.safetensors``."""
    enc = _Encoder()
    doc = enc.value(payload, "message")
    save_file(enc.tensors, str(stem.with_suffix(".safetensors")))
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(stem.with_suffix(".json"))


def message_exists(stem: Path) -> bool:
    return stem.with_suffix(".json").exists()


def _decode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if TENSOR in value:
        if value[TENSOR] not in tensors:
            raise ValueError(f"{where} names tensor {value[TENSOR]!r}, which the .safetensors file does not hold")
        return tensors[value[TENSOR]]
    if FLOAT in value:
        if value[FLOAT] not in ("nan", "inf", "-inf"):
            raise ValueError(f"{where} is a special float {value[FLOAT]!r}; allowed: nan, inf, -inf")
        return float(value[FLOAT])
    if TYPE in value:
        name = value[TYPE]
        if name not in DECODERS:
            raise ValueError(f"{where} is of type {name!r}; a message may only hold {', '.join(DECODERS)}")
        return DECODERS[name](_decode(value.get("fields", {}), tensors, where))
    return {k: _decode(v, tensors, f"{where}.{k}") for k, v in value.items()}


def read_message(stem: Path) -> dict[str, Any]:
    """Load a message written by :func:`write_message`; anything else is a :class:`KernelError`
    naming the file and what is wrong (never executed, whatever it holds)."""
    doc_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        doc = json.loads(doc_path.read_text())
        tensors = load_file(str(data_path)) if data_path.exists() else {}
        if not isinstance(doc, dict):
            raise ValueError("the top level is not an object")
        return _decode(doc, tensors, "message")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError, ValueError, TypeError) as exc:
        raise KernelError(f"cannot read the message {doc_path} (+ {data_path.name}): {exc}. A message holds only "
                          f"JSON and safetensors data written by qwenlayers; remove the run folder and run again") from None
