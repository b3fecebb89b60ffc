"""A whole Hugging Face Qwen3 checkpoint, as ``qwenlayers generate`` reads it.

Opening one checks everything a run will need before any work: that the folder is a dense
Qwen3 model (``model_type`` ``qwen3``), that every tensor of every layer, the embeddings, the
final norm and the lm_head (or tied embeddings) are present with the shapes the config implies.
The check reads the safetensors headers only (names, shapes, dtypes), never the data, so a
missing or misshapen tensor in the last layer is refused in a second, not after a long run.

Data is read later, one layer at a time (:meth:`Qwen3Checkpoint.layer` opens only the files
that hold that layer), so a run holds one layer's weights at once, not the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from qwenlayers.core.config import Qwen3Config, check_size
from qwenlayers.core.weights import (
    CONFIG_FILE,
    INDEX_FILE,
    LAYER_PREFIX,
    REFETCH,
    SINGLE_FILE,
    LayerWeights,
    expected_shapes,
    load_config,
    read_json,
    shard_name,
)
from qwenlayers.errors import CheckpointError, InputError

EMBED = "model.embed_tokens.weight"
FINAL_NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"
#: ``model_type`` values this reads: dense Qwen3 only (``qwen3_moe`` has other layers).
MODEL_TYPES = ("qwen3",)
#: transformers' Qwen3Config default, for a config.json that does not say
DEFAULT_MAX_POSITIONS = 32768


@dataclass(frozen=True)
class ModelShape:
    """What a whole model adds to one layer's shape."""

    layer: Qwen3Config
    num_layers: int
    vocab_size: int
    tied: bool  # lm_head is the embedding matrix (tie_word_embeddings)
    max_positions: int  # max_position_embeddings: the longest sequence the model was built for


@dataclass(frozen=True)
class HostWeights:
    """The tensors that run on the host in torch: token embeddings, final norm, lm_head."""

    embed: torch.Tensor  # [V, H]
    norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H]; the same tensor as embed when tied


def _header_shapes(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{tensor: (shape, dtype)} from one safetensors file's header; no tensor data is read."""
    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file ({type(exc).__name__}: {exc}); {REFETCH}") from exc


def _tensor_files(root: Path) -> dict[str, str]:
    """Which file holds each tensor: the index's weight_map (every file checked to be inside the
    folder and present), or the one ``model.safetensors``."""
    index = root / INDEX_FILE
    if index.is_file():
        data = read_json(index, "checkpoint index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"checkpoint index {index} has no 'weight_map' object mapping tensor names to files; {REFETCH}")
        files = {name: shard_name(index, name, fname) for name, fname in weight_map.items()}
        for fname in sorted(set(files.values())):
            if not (root / fname).is_file():
                raise CheckpointError(f"{index} names {fname}, but {root / fname} does not exist; the checkpoint is incomplete: {REFETCH}")
        return files
    if (root / SINGLE_FILE).is_file():
        return dict.fromkeys(_header_shapes(root / SINGLE_FILE), SINGLE_FILE)
    raise InputError(f"checkpoint {root} has neither {INDEX_FILE} nor {SINGLE_FILE}; pass a folder written by "
                     "save_pretrained (config.json + safetensors)")


def _model_shape(root: Path, data: Mapping[str, Any], max_seq: int) -> ModelShape:
    origin = str(root / CONFIG_FILE)
    model_type = data.get("model_type")
    if model_type not in MODEL_TYPES:
        raise InputError(f"{root} is not a Qwen3 checkpoint: {CONFIG_FILE} has model_type={model_type!r} "
                         f"(architectures {data.get('architectures')}); qwenlayers runs dense Qwen3 models "
                         f"(model_type {', '.join(map(repr, MODEL_TYPES))}, Qwen3ForCausalLM)")
    for key in ("num_hidden_layers", "vocab_size"):
        if key not in data:
            raise CheckpointError(f"config {origin} lacks {key}; a whole-model Qwen3 config.json has it")
    layers = check_size(f"config {origin}: num_hidden_layers", data["num_hidden_layers"], CheckpointError)
    vocab = check_size(f"config {origin}: vocab_size", data["vocab_size"], CheckpointError)
    positions = check_size(f"config {origin}: max_position_embeddings",
                            data.get("max_position_embeddings", DEFAULT_MAX_POSITIONS), CheckpointError)
    tied = data.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise CheckpointError(f"config {origin}: tie_word_embeddings must be true or false, got {tied!r}")
    label = data.get("_name_or_path")
    name = label if isinstance(label, str) and label else root.name
    layer = load_config(root, name=name).with_max_seq(max_seq)
    return ModelShape(layer, layers, vocab, tied, positions)


def _expected(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    h = shape.layer.hidden_size
    want = {EMBED: (shape.vocab_size, h), FINAL_NORM: (h,)}
    if not shape.tied:
        want[LM_HEAD] = (shape.vocab_size, h)
    per_layer = expected_shapes(shape.layer)
    for i in range(shape.num_layers):
        want.update({LAYER_PREFIX.format(layer=i) + name: s for name, s in per_layer.items()})
    return want


@dataclass(frozen=True)
class Qwen3Checkpoint:
    """A checked Qwen3 checkpoint folder: its shape, and where each tensor is."""

    root: Path
    shape: ModelShape
    files: Mapping[str, str]  # tensor name -> file name inside root

    @classmethod
    def open(cls, path: str | Path, *, max_seq: int = 4096) -> "Qwen3Checkpoint":
        """Check the folder and every tensor's presence and shape (headers only). ``max_seq`` is
        the cache rows each layer gets (the layer config's ``max_seq``)."""
        root = Path(path)
        if not root.is_dir():
            raise InputError(f"checkpoint {root} is not a folder; pass the folder holding {CONFIG_FILE} and *.safetensors")
        if not (root / CONFIG_FILE).is_file():
            raise InputError(f"checkpoint {root} has no {CONFIG_FILE}; pass a folder written by save_pretrained")
        data = read_json(root / CONFIG_FILE, "Hugging Face config")
        if not isinstance(data, dict):
            raise CheckpointError(f"config {root / CONFIG_FILE} is not a JSON object; {REFETCH}")
        shape = _model_shape(root, data, max_seq)
        files = _tensor_files(root)
        want = _expected(shape)
        missing = [name for name in want if name not in files]
        if missing:
            raise InputError(f"checkpoint {root} lacks {len(missing)} tensor(s) a {shape.num_layers}-layer Qwen3 model needs, "
                             f"e.g. {', '.join(missing[:3])}; it holds {len(files)} tensors")
        headers: dict[str, tuple[tuple[int, ...], str]] = {}
        for fname in sorted({files[name] for name in want}):
            headers.update(_header_shapes(root / fname))
        for name, expected in want.items():
            if name not in headers:
                raise CheckpointError(f"{root / files[name]} lacks {name}, which the checkpoint's index puts there; {REFETCH}")
            got, dtype = headers[name]
            if got != expected:
                raise InputError(f"checkpoint tensor {name} has shape {list(got)}, expected {list(expected)} from "
                                 f"{CONFIG_FILE} (hidden {shape.layer.hidden_size}, vocab {shape.vocab_size})")
            if dtype not in ("BF16", "F16", "F32"):
                raise InputError(f"checkpoint tensor {name} has dtype {dtype}; allowed: BF16, F16, F32")
        return cls(root, shape, dict(files))

    def _read(self, names: list[str]) -> dict[str, torch.Tensor]:
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.files[name], []).append(name)
        found: dict[str, torch.Tensor] = {}
        for fname, wanted in by_file.items():
            try:
                with safe_open(str(self.root / fname), framework="pt") as f:
                    found.update({name: f.get_tensor(name) for name in wanted})
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{self.root / fname} could not be read ({type(exc).__name__}: {exc}); {REFETCH}") from exc
        return found

    def layer(self, index: int) -> LayerWeights:
        """Layer ``index``'s weights, read from the files that hold it (bf16 and fp32 kept as
        stored; an fp16 checkpoint is widened to fp32, which both the kernels and the golden take)."""
        if not 0 <= index < self.shape.num_layers:
            raise InputError(f"layer {index} is out of range; this checkpoint has layers 0..{self.shape.num_layers - 1}")
        prefix = LAYER_PREFIX.format(layer=index)
        names = [prefix + n for n in expected_shapes(self.shape.layer)]
        tensors = self._read(names)
        return LayerWeights(self.shape.layer, {n[len(prefix):]: _float(t) for n, t in tensors.items()})

    def host(self) -> HostWeights:
        tensors = {k: _float(v) for k, v in self._read([EMBED, FINAL_NORM] + ([] if self.shape.tied else [LM_HEAD])).items()}
        return HostWeights(tensors[EMBED], tensors[FINAL_NORM], tensors[EMBED] if self.shape.tied else tensors[LM_HEAD])


def _float(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype == torch.float16 else t
