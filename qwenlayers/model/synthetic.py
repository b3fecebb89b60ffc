"""A random whole-model Qwen3 checkpoint, written as ``save_pretrained`` writes one, for
benchmarks and trials at real shapes without downloading weights.

Layers get :meth:`LayerWeights.random` (the scale of a trained layer), embeddings unit-RMS rows,
the final norm ones. One file per ``shard_layers`` layers with an index, as large checkpoints
are sharded; written one shard at a time, so memory stays at one shard's weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from qwenlayers.core.config import Qwen3Config, check_size
from qwenlayers.core.weights import CONFIG_FILE, INDEX_FILE, LAYER_PREFIX, LayerWeights
from qwenlayers.errors import InputError
from qwenlayers.model.checkpoint import EMBED, FINAL_NORM, LM_HEAD


def write_random_checkpoint(path: str | Path, config: Qwen3Config, *, layers: int, vocab_size: int, tied: bool = True,
                            seed: int = 0, shard_layers: int = 4) -> Path:
    """Write the checkpoint into ``path`` (created); returns it. Sizes are ints >= 1 (InputError)."""
    for label, value in (("layers", layers), ("vocab_size", vocab_size), ("shard_layers", shard_layers)):
        check_size(label, value)
    if not isinstance(tied, bool):
        raise InputError(f"tied={tied!r}; tied is True (lm_head is the embeddings) or False")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    hf = {**config.to_hf(), "num_hidden_layers": layers, "vocab_size": vocab_size, "tie_word_embeddings": tied,
          "_name_or_path": f"random-{config.name}-{layers}l"}
    gen = torch.Generator().manual_seed(seed)
    h = config.hidden_size
    host = {EMBED: torch.randn(vocab_size, h, generator=gen).to(torch.bfloat16), FINAL_NORM: torch.ones(h, dtype=torch.bfloat16)}
    if not tied:
        host[LM_HEAD] = (torch.randn(vocab_size, h, generator=gen) * h**-0.5).to(torch.bfloat16)
    groups = [list(range(i, min(layers, i + shard_layers))) for i in range(0, layers, shard_layers)]
    total = len(groups) + 1
    weight_map: dict[str, str] = {}
    size = 0
    for k, group in enumerate([None, *groups], start=1):
        fname = f"model-{k:05d}-of-{total:05d}.safetensors"
        blob = dict(host) if group is None else {
            LAYER_PREFIX.format(layer=i) + name: t for i in group
            for name, t in LayerWeights.random(config, seed=seed + 1 + i).tensors.items()}
        save_file({n: t.contiguous() for n, t in blob.items()}, str(root / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(blob, fname))
        size += sum(t.numel() * t.element_size() for t in blob.values())
    (root / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}, indent=2))
    (root / CONFIG_FILE).write_text(json.dumps(hf, indent=2))
    return root
