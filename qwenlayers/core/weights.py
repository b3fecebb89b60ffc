"""One Qwen3 decoder layer's weights, under their Hugging Face names.

Names are relative to the layer (``self_attn.q_proj.weight``); a checkpoint stores them as
``model.layers.{i}.<name>``. Shapes follow ``torch.nn.Linear`` ([out, in]); kernels that want
other layouts (transposed, K|V or gate|up fused) derive them once, at load, never here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from qwenlayers.core.config import Qwen3Config
from qwenlayers.errors import CheckpointError, InputError, QwenlayersError

LAYER_PREFIX = "model.layers.{layer}."
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
REFETCH = "re-download or re-save the checkpoint (a truncated or interrupted download looks like this)"


def _unreadable(path: Path, what: str, exc: BaseException) -> str:
    """One message for a checkpoint file that cannot be used, naming the file and the fault, so
    a parser's bare ``JSONDecodeError`` or ``SafetensorError`` never reaches the user alone."""
    if isinstance(exc, UnicodeDecodeError):
        fault = f"is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start})"
    elif isinstance(exc, json.JSONDecodeError):
        fault = f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    elif isinstance(exc, OSError):
        fault = f"cannot be read ({exc.strerror or exc})"
    else:
        fault = f"is not a valid {what} ({type(exc).__name__}: {exc})"
    return f"{what} {path} {fault}; {REFETCH}"


def read_json(path: Path, what: str) -> Any:
    """Parse one JSON file of a checkpoint; any read, encoding or syntax fault is a
    CheckpointError naming ``path``."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(_unreadable(path, what, exc)) from exc


def load_config(source: str | Path, *, name: str | None = None) -> Qwen3Config:
    """:meth:`Qwen3Config.from_hf` of a ``config.json`` (or the folder holding it), with a file
    that is not UTF-8 JSON, or whose fields have the wrong types, refused as a CheckpointError
    naming the file instead of escaping as a parser traceback."""
    path = Path(source)
    file = path / CONFIG_FILE if path.is_dir() else path
    try:
        return Qwen3Config.from_hf(path, name=name)
    except QwenlayersError:
        raise
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CheckpointError(_unreadable(file, "Hugging Face config", exc)) from exc


def shard_name(index: Path, tensor: str, fname: object) -> str:
    """A ``weight_map`` entry, refused unless it names a file inside the checkpoint folder: an
    absolute path or a ``..`` would let a downloaded index read any file on the machine.
    Checked by name, not by resolving links, so a Hugging Face cache snapshot (whose files are
    symlinks into ``../../blobs``) still loads."""
    if not isinstance(fname, str) or not fname.strip():
        raise CheckpointError(f"{index} maps {tensor} to {fname!r}; each weight_map value must be a file name "
                              f"in {index.parent}, e.g. 'model-00001-of-00002.safetensors'")
    forms = (PurePosixPath(fname), PureWindowsPath(fname))  # a root, a drive or ".." on either OS
    if any(p.anchor or ".." in p.parts for p in forms):
        raise CheckpointError(f"{index} maps {tensor} to {fname!r}, outside the checkpoint folder {index.parent}; "
                              "weight_map may only name files inside that folder (no absolute paths, no '..'); "
                              "the index is corrupt or hostile, re-download the checkpoint")
    return fname


def _index_files(index: Path, names: Mapping[str, str], layer: int) -> dict[str, list[str]]:
    """Which shard holds each wanted tensor, from a ``model.safetensors.index.json``, every
    shard checked to be a file inside the folder before any is opened."""
    data = read_json(index, "checkpoint index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"checkpoint index {index} has no 'weight_map' object mapping tensor names to files; {REFETCH}")
    files: dict[str, list[str]] = {}
    for full in names:
        if full not in weight_map:
            raise InputError(f"{index} has no entry {full}; is layer {layer} in this checkpoint?")
        fname = shard_name(index, full, weight_map[full])
        if not (index.parent / fname).is_file():
            raise CheckpointError(f"{index} puts {full} in {fname}, but {index.parent / fname} does not exist; "
                                  f"the checkpoint is incomplete: {REFETCH}")
        files.setdefault(fname, []).append(full)
    return files


def _read_tensors(file: Path, wanted: list[str], layer: int) -> dict[str, torch.Tensor]:
    """Read ``wanted`` from one safetensors file; a truncated or corrupt file is a
    CheckpointError naming it (safetensors' own error names no file)."""
    try:
        with safe_open(str(file), framework="pt") as f:
            present = set(f.keys())
            missing = [full for full in wanted if full not in present]
            if missing:
                raise InputError(f"{file} lacks tensor {missing[0]} (layer {layer})")
            return {full: f.get_tensor(full) for full in wanted}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file ({type(exc).__name__}: {exc}); {REFETCH}") from exc


def expected_shapes(config: Qwen3Config) -> dict[str, tuple[int, ...]]:
    """HF-relative weight names of one layer and their shapes."""
    h, i, d = config.hidden_size, config.intermediate_size, config.head_dim
    return {
        "input_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (config.q_width, h),
        "self_attn.k_proj.weight": (config.kv_width, h),
        "self_attn.v_proj.weight": (config.kv_width, h),
        "self_attn.o_proj.weight": (h, config.q_width),
        "self_attn.q_norm.weight": (d,),
        "self_attn.k_norm.weight": (d,),
        "post_attention_layernorm.weight": (h,),
        "mlp.gate_proj.weight": (i, h),
        "mlp.up_proj.weight": (i, h),
        "mlp.down_proj.weight": (h, i),
    }


@dataclass(frozen=True)
class LayerWeights:
    """The eleven tensors of one layer, checked against a config."""

    config: Qwen3Config
    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        want = expected_shapes(self.config)
        missing = sorted(set(want) - set(self.tensors))
        extra = sorted(set(self.tensors) - set(want))
        if missing or extra:
            raise InputError(
                f"layer weights for {self.config.name}: missing {missing or 'none'}, unexpected {extra or 'none'}; "
                f"expected the HF names {sorted(want)}"
            )
        for name, shape in want.items():
            t = self.tensors[name]
            if not isinstance(t, torch.Tensor):
                raise InputError(f"weight {name} is a {type(t).__name__}, expected a torch.Tensor")
            if tuple(t.shape) != shape:
                raise InputError(f"weight {name} has shape {tuple(t.shape)}, expected {shape} for {self.config.name}")
            if t.dtype not in (torch.float32, torch.bfloat16):
                raise InputError(f"weight {name} has dtype {t.dtype}; allowed: torch.bfloat16, torch.float32")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors["self_attn.q_proj.weight"].dtype

    def to(self, dtype: torch.dtype) -> "LayerWeights":
        return LayerWeights(self.config, {k: v.to(dtype) for k, v in self.tensors.items()})

    # ------------------------------------------------------------------ constructors
    def shard(self, rank: int, tp: int) -> "LayerWeights":
        """Rank ``rank``'s slice for tensor parallel degree ``tp`` (HF names in and out, shapes of
        :func:`~qwenlayers.core.sharding.shard_config`): its query and KV heads of q/k/v_proj,
        the matching input columns of o_proj, its intermediate rows of gate/up_proj and columns
        of down_proj; the four norms whole. Slices are copies, so a shard owns its memory."""
        from qwenlayers.core.sharding import shard_config, shard_plan

        plan, d = shard_plan(self.config, tp, rank), self.config.head_dim
        q = slice(plan.q_heads[0] * d, plan.q_heads[1] * d)
        kv = slice(plan.kv_heads[0] * d, plan.kv_heads[1] * d)
        i = slice(*plan.inter)
        t = self.tensors
        cut = {
            "self_attn.q_proj.weight": t["self_attn.q_proj.weight"][q],
            "self_attn.k_proj.weight": t["self_attn.k_proj.weight"][kv],
            "self_attn.v_proj.weight": t["self_attn.v_proj.weight"][kv],
            "self_attn.o_proj.weight": t["self_attn.o_proj.weight"][:, q],
            "mlp.gate_proj.weight": t["mlp.gate_proj.weight"][i],
            "mlp.up_proj.weight": t["mlp.up_proj.weight"][i],
            "mlp.down_proj.weight": t["mlp.down_proj.weight"][:, i],
        }
        whole = {k: v for k, v in t.items() if k not in cut}
        return LayerWeights(shard_config(self.config, tp), {**whole, **{k: v.contiguous().clone() for k, v in cut.items()}})

    @classmethod
    def coerce(cls, weights: "LayerWeights | Mapping[str, torch.Tensor]", config: Qwen3Config) -> "LayerWeights":
        """Accept a LayerWeights or a dict keyed by HF names relative to the layer."""
        if isinstance(weights, LayerWeights):
            if weights.config != config:
                # shapes decide, not the preset name: re-validate against the given config
                return cls(config, dict(weights.tensors))
            return weights
        if isinstance(weights, Mapping):
            return cls(config, dict(weights))
        raise InputError(f"weights must be LayerWeights or a dict of HF-named tensors, got {type(weights).__name__}")

    @classmethod
    def random(cls, config: Qwen3Config, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> "LayerWeights":
        """Seeded random weights with the scale of a trained layer (unit-ish activations)."""
        gen = torch.Generator().manual_seed(seed)
        tensors: dict[str, torch.Tensor] = {}
        for name, shape in expected_shapes(config).items():
            if len(shape) == 1:  # norm gains near 1
                t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            else:
                t = torch.randn(shape, generator=gen) * shape[1] ** -0.5
            tensors[name] = t.to(dtype)
        return cls(config, tensors)

    @classmethod
    def zeros(cls, config: Qwen3Config, *, dtype: torch.dtype = torch.bfloat16) -> "LayerWeights":
        """Zero weights: for cost-model-only calls (bench and tune points without ``--check``), whose
        simulated time does not read values. Drawing qwen3-32b's random weights took 6 s of a
        repeated bench point that the result cache answers in under one."""
        return cls(config, {name: torch.zeros(shape, dtype=dtype) for name, shape in expected_shapes(config).items()})

    @classmethod
    def from_checkpoint(cls, path: str | Path, layer: int, config: Qwen3Config | None = None) -> "LayerWeights":
        """Load layer ``layer`` from a safetensors checkpoint folder (sharded with an index or not).

        Only the files holding that layer are opened, and only its tensors are read.
        """
        root = Path(path)
        if not root.is_dir():
            raise InputError(f"checkpoint {root} is not a folder; pass the folder holding config.json and *.safetensors")
        if config is None:
            config = load_config(root)
        prefix = LAYER_PREFIX.format(layer=layer)
        names = {prefix + n: n for n in expected_shapes(config)}
        index = root / INDEX_FILE
        if index.is_file():
            files = _index_files(index, names, layer)
        else:
            single = root / SINGLE_FILE
            if not single.is_file():
                raise InputError(f"checkpoint {root} has neither {INDEX_FILE} nor {SINGLE_FILE}")
            files = {SINGLE_FILE: list(names)}
        tensors: dict[str, torch.Tensor] = {}
        for fname, wanted in files.items():
            for full, t in _read_tensors(root / fname, wanted, layer).items():
                tensors[names[full]] = t
        return cls(config, tensors)

    # ------------------------------------------------------------------ writers
    @staticmethod
    def write_checkpoint(
        path: str | Path,
        layers: Mapping[int, "LayerWeights"],
        *,
        shard_layers: int | None = None,
    ) -> Path:
        """Write a synthetic HF-style checkpoint: ``config.json`` plus safetensors files.

        With ``shard_layers=n`` every n layers go to their own ``model-0000k-of-0000N.safetensors``
        and a ``model.safetensors.index.json`` maps names to files, as large HF checkpoints do.
        """
        from safetensors.torch import save_file

        if not layers:
            raise InputError("write_checkpoint needs at least one layer")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        configs = {w.config for w in layers.values()}
        if len(configs) != 1:
            raise InputError("all layers of one checkpoint must share one config")
        config = configs.pop()
        hf = config.to_hf()
        hf["num_hidden_layers"] = max(layers) + 1
        (root / "config.json").write_text(json.dumps(hf, indent=2))
        ordered = sorted(layers)
        groups = [ordered] if not shard_layers else [ordered[i : i + shard_layers] for i in range(0, len(ordered), shard_layers)]
        weight_map: dict[str, str] = {}
        for k, group in enumerate(groups, start=1):
            fname = SINGLE_FILE if len(groups) == 1 and not shard_layers else f"model-{k:05d}-of-{len(groups):05d}.safetensors"
            blob = {
                LAYER_PREFIX.format(layer=i) + name: t.contiguous() for i in group for name, t in layers[i].tensors.items()
            }
            save_file(blob, str(root / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in blob})
        if shard_layers:
            total = sum(t.numel() * t.element_size() for w in layers.values() for t in w.tensors.values())
            (root / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        return root
