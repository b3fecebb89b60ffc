"""Qwen3 model configurations: the public presets and small test presets.

``head_dim`` is its own field: for Qwen3-32B the hidden size is 5120 while the query width is
64 x 128 = 8192, a difference pypto-lib's kernels once lost. ``max_seq`` is the KV-cache length
the kernels are built for, not a model property of the checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from qwenlayers.errors import CheckpointError, InputError

SIZE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim", "max_seq")
CONSTANT_FIELDS = ("rms_norm_eps", "rope_theta")
#: Why each constant must be a finite number > 0: what the layer computes from it otherwise.
_CONSTANT_RULES = {
    "rms_norm_eps": "RMSNorm computes x * rsqrt(mean(x^2) + eps): eps <= 0 gives Inf or NaN for small rows (Qwen3 uses 1e-06)",
    "rope_theta": "RoPE's frequencies are theta^(-2i/head_dim): theta <= 0 gives Inf or NaN (Qwen3 uses 1000000.0)",
}


def check_size(what: str, value: object, error: type[InputError] = InputError) -> int:
    """A size is a positive int: no bool (a Python int subclass), no float, no numeric string,
    no null; coercing any of those would hide a broken config behind a plausible shape."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise error(f"{what} must be a positive integer, got {value!r} ({type(value).__name__}); "
                         "write a whole number > 0 without quotes or decimals (e.g. 8, not \"8\", 8.5 or null)")
    return value


def _check_constant(what: str, field_name: str, value: object, error: type[InputError] = InputError) -> float:
    """rms_norm_eps and rope_theta: a finite int or float > 0 (no bool, string or null)."""
    rule = _CONSTANT_RULES[field_name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise error(f"{what} must be a finite number > 0, got {value!r} ({type(value).__name__}); {rule}")
    return float(value)


@dataclass(frozen=True)
class Qwen3Config:
    """Shapes and constants of one Qwen3 decoder layer."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_seq: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"Qwen3Config.name must be a non-empty str, got {self.name!r}")
        for f in SIZE_FIELDS:
            check_size(f"Qwen3Config.{f}", getattr(self, f))
        for f in CONSTANT_FIELDS:
            # an int theta (HF writes 1000000) is the same number: stored as float so keys and JSON agree
            object.__setattr__(self, f, _check_constant(f"Qwen3Config.{f}", f, getattr(self, f)))
        if self.num_attention_heads % self.num_key_value_heads:
            raise InputError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}; GQA needs whole groups"
            )
        if self.head_dim % 2:
            raise InputError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    # Derived sizes (never stored, so they cannot disagree with the fields).
    @property
    def q_width(self) -> int:
        """Width of the query projection output: heads x head_dim (not hidden_size)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per KV head (the GQA ratio)."""
        return self.num_attention_heads // self.num_key_value_heads

    def with_max_seq(self, max_seq: int) -> "Qwen3Config":
        return replace(self, max_seq=max_seq)

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        """Bytes of one layer's weights (projections + norms)."""
        h, i = self.hidden_size, self.intermediate_size
        proj = h * self.q_width + 2 * h * self.kv_width + self.q_width * h + 3 * h * i
        norms = 2 * h + 2 * self.head_dim
        return (proj + norms) * dtype_bytes

    def to_hf(self) -> dict[str, Any]:
        """The fields of a Hugging Face ``config.json`` for this layer shape."""
        return {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": max(self.max_seq, 4096),
            "hidden_act": "silu",
            "attention_bias": False,
            "torch_dtype": "bfloat16",
        }

    @classmethod
    def from_hf(cls, source: str | Path | Mapping[str, Any], *, name: str | None = None, max_seq: int = 4096) -> "Qwen3Config":
        """Read a Hugging Face Qwen3 ``config.json`` (a path to the file or its folder, or a dict)."""
        data, origin = _read_hf(source)
        required = ("hidden_size", "intermediate_size", "num_attention_heads")
        missing = [k for k in required if k not in data]
        if missing:
            raise InputError(f"config {origin} lacks {', '.join(missing)}; a Qwen3 config.json needs {', '.join(required)}")
        if data.get("hidden_act", "silu") != "silu":
            raise InputError(f"config {origin} has hidden_act={data['hidden_act']!r}; Qwen3 layers use 'silu'")
        if data.get("attention_bias", False):
            raise InputError(f"config {origin} has attention_bias=true; Qwen3 projections have no bias")
        if data.get("use_sliding_window", False):
            raise InputError(f"config {origin} has use_sliding_window=true; the layers attend over the whole sequence "
                             "(full causal attention, as every Qwen3 dense model is configured)")
        _check_plain_rope(data, origin)

        error = _field_error(origin)

        def size(key: str, default: int | None = None) -> int:
            return check_size(f"config {origin}: {key}", data[key] if key in data or default is None else default, error)

        hidden, heads = size("hidden_size"), size("num_attention_heads")
        label = data.get("_name_or_path")
        return cls(
            name=name or (label if isinstance(label, str) and label else "hf-config"),
            hidden_size=hidden,
            intermediate_size=size("intermediate_size"),
            num_attention_heads=heads,
            num_key_value_heads=size("num_key_value_heads", heads),  # absent: MHA, as in transformers
            head_dim=size("head_dim", hidden // heads),
            rms_norm_eps=_check_constant(f"config {origin}: rms_norm_eps", "rms_norm_eps", data.get("rms_norm_eps", 1e-6), error),
            rope_theta=_hf_rope_theta(data, origin),
            max_seq=max_seq,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_hf(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The fields of a config.json (a dict, the file, or its folder) and where they came from.
    A file that is not JSON raises the parser's error, which
    :func:`qwenlayers.core.weights.load_config` turns into a CheckpointError naming the file."""
    if isinstance(source, Mapping):
        return dict(source), "<dict>"
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise InputError(f"no Hugging Face config at {path}; pass a config.json or the checkpoint folder holding it")
    return json.loads(path.read_text()), str(path)


def _field_error(origin: str) -> type[InputError]:
    """A bad field of a config.json file is a corrupt checkpoint file (CheckpointError, still an
    InputError); of a dict, a bad argument (InputError)."""
    return InputError if origin == "<dict>" else CheckpointError


#: RoPE variants the layers compute: plain rotary embeddings at rope_theta.
PLAIN_ROPE_TYPES = (None, "default")


def _check_plain_rope(data: Mapping[str, Any], origin: str) -> None:
    """Refuse a scaled RoPE (YaRN, linear, dynamic, ...): the kernels and the golden rotate by
    theta^(-2i/head_dim) at the token's position and nothing else, so a scaled model would run
    with the wrong positions, silently."""
    for key in ("rope_scaling", "rope_parameters"):
        spec = data.get(key)
        if not isinstance(spec, Mapping):
            if spec is not None and key == "rope_scaling":
                raise _field_error(origin)(f"config {origin}: rope_scaling must be null or an object, got {spec!r}")
            continue
        kind = spec.get("rope_type", spec.get("type"))
        if kind not in PLAIN_ROPE_TYPES or (key == "rope_scaling" and set(spec) - {"rope_type", "type"}):
            raise InputError(f"config {origin} has {key}={dict(spec)!r}: a scaled RoPE; the layers compute plain rotary "
                             "embeddings only (rope_scaling null, rope_type 'default'), as Qwen3 ships")


def _hf_rope_theta(data: Mapping[str, Any], origin: str) -> float:
    """rope_theta at the top level, or (transformers >= 5) under rope_parameters; 1e6 when neither
    names it. A null is refused unless the other place gives the value."""
    error = _field_error(origin)
    nested = data.get("rope_parameters")
    if nested is not None and not isinstance(nested, Mapping):
        raise error(f"config {origin}: rope_parameters must be an object, got {nested!r}; e.g. "
                         '{"rope_type": "default", "rope_theta": 1000000.0}')
    if "rope_theta" in data and (data["rope_theta"] is not None or not nested or "rope_theta" not in nested):
        return _check_constant(f"config {origin}: rope_theta", "rope_theta", data["rope_theta"], error)
    if nested and "rope_theta" in nested:
        return _check_constant(f"config {origin}: rope_parameters.rope_theta", "rope_theta", nested["rope_theta"], error)
    return 1_000_000.0


def _preset(name: str, h: int, i: int, heads: int, kv: int, head_dim: int = 128, max_seq: int = 4096) -> Qwen3Config:
    return Qwen3Config(name, h, i, heads, kv, head_dim=head_dim, max_seq=max_seq)


#: The public Qwen3 dense sizes (from their Hugging Face configs) and small presets for tests.
#: Test presets keep every structural property of the real ones: GQA, head_dim separate from
#: hidden, q width != hidden (tiny-gqa8), and the same eps/theta.
PRESETS: dict[str, Qwen3Config] = {
    p.name: p
    for p in (
        _preset("qwen3-0.6b", 1024, 3072, 16, 8),
        _preset("qwen3-1.7b", 2048, 6144, 16, 8),
        _preset("qwen3-4b", 2560, 9728, 32, 8),
        _preset("qwen3-8b", 4096, 12288, 32, 8),
        _preset("qwen3-14b", 5120, 17408, 40, 8),
        _preset("qwen3-32b", 5120, 25600, 64, 8),
        # test presets: small enough for pypto's interpreter in seconds
        _preset("tiny", 256, 512, 4, 2, head_dim=64, max_seq=256),
        _preset("tiny-mha", 128, 256, 2, 2, head_dim=64, max_seq=128),
        _preset("tiny-gqa8", 128, 256, 8, 1, head_dim=32, max_seq=128),
        _preset("tiny-kv4", 128, 256, 8, 4, head_dim=32, max_seq=128),  # tensor parallel up to 4 without replication
    )
}


def preset(name: str) -> Qwen3Config:
    """Look up a preset by name (``qwen3-32b``, ``32b`` and ``Qwen3-32B`` all work)."""
    key = name.strip().lower()
    candidates = [key, f"qwen3-{key}"]
    for c in candidates:
        if c in PRESETS:
            return PRESETS[c]
    raise InputError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")


def as_config(config: "Qwen3Config | Mapping[str, Any] | str") -> Qwen3Config:
    """Accept a config object, a preset name, or a dict of Hugging Face config fields."""
    if isinstance(config, Qwen3Config):
        return config
    if isinstance(config, str):
        return preset(config)
    if isinstance(config, Mapping):
        own = {f.name for f in fields(Qwen3Config)}
        if "name" in config and set(config) <= own:
            return Qwen3Config(**config)
        return Qwen3Config.from_hf(config, max_seq=config.get("max_seq", 4096))  # checked, not coerced
    raise InputError(f"config must be a Qwen3Config, a preset name or a dict of HF fields, got {type(config).__name__}")
