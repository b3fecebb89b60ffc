"""``qwenlayers.model.generate``: a whole Qwen3 checkpoint through the platform's layers.

The prompts are embedded on the host, every layer's prefill runs on the platform with that
layer's own KV caches, the final norm and lm_head pick the first token on the host, then each
decode step runs the new tokens through every layer again. Layers are read from the checkpoint
one at a time, when they run, so a run holds one layer's weights at once.

``check=True`` pushes the same tokens through two golden chains beside the platform's, fp32 (the
reference) and bf16 (what bf16 rounding alone drifts by), and through transformers when it is
installed. All chains are fed the platform's tokens, so per layer and step their outputs are
comparable, and each chain's greedy choice is read under the same prefix.

Every input is checked before any layer runs: the checkpoint (headers of every tensor), the
token ids against the vocabulary, the cache rows and position limit against the prompt lengths
plus the steps, the platform.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from qwenlayers.core.platform import Phase, Platform
from qwenlayers.core.sharding import check_tp
from qwenlayers.errors import CheckpointError, InputError
from qwenlayers.model.checkpoint import ModelShape, Qwen3Checkpoint
from qwenlayers.model.generation import Generation, LayerDrift, LayerTiming, StepTiming, StepTokens
from qwenlayers.model.host import embed_prompts, embed_tokens, gaps_to, greedy, logits, near_ties, tie_bars, top2_margin
from qwenlayers.model.lanes import GoldenLane, PlatformLane
from qwenlayers.model.transformers_check import transformers_choices, transformers_probe
from qwenlayers.registry import PlatformRegistry
from qwenlayers.target import Target, resolve_target

Progress = Callable[[str], None]
#: Cache rows are allocated in whole multiples of this when ``max_seq`` is not given.
CACHE_ROW_QUANTUM = 64


def _ids(p: object) -> object:
    """A tensor or array row as a plain list (a batch may be given as a 2-D tensor or array)."""
    return p.tolist() if hasattr(p, "tolist") and not isinstance(p, (str, bytes)) else p


def _prompts(prompt_ids: object, shape: ModelShape) -> list[list[int]]:
    """The prompts as lists of ints, checked against the vocabulary. A list of lists, a list of
    1-D tensors or arrays, or a 2-D tensor or array (equal lengths) are taken; ids may be any
    integer type (numpy and torch ints included), never a bool or a float."""
    batch = _ids(prompt_ids)
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence) or len(batch) == 0:
        raise InputError(f"prompt_ids={prompt_ids!r:.80}; give at least one prompt of token ids, e.g. "
                         "prompt_ids=[[1, 2, 3], [4, 5]] (CLI: --prompt-ids 1,2,3 --prompt-ids 4,5)")
    prompts: list[list[int]] = []
    for b, row in enumerate(batch):
        p = _ids(row)
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or len(p) == 0:
            raise InputError(f"prompt {b} is {row!r:.80}; each prompt is a non-empty list of token ids")
        ids = []
        for i, t in enumerate(p):
            try:
                if isinstance(t, (bool, float)):
                    raise TypeError
                tid = operator.index(t)
            except TypeError:
                raise InputError(f"prompt {b} token {i} is {t!r}; token ids are ints") from None
            if not 0 <= tid < shape.vocab_size:
                raise InputError(f"prompt {b} token {i} is {tid}, outside the vocabulary: ids 0..{shape.vocab_size - 1} "
                                 f"(vocab_size {shape.vocab_size})")
            ids.append(tid)
        prompts.append(ids)
    return prompts


def _cache_rows(prompts: list[list[int]], steps: int, shape: ModelShape, max_seq: int | None) -> int:
    """Rows every layer's cache needs: the longest prompt plus one row per decode step."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps={steps!r}; the number of decode steps is an int >= 0")
    longest = max(len(p) for p in prompts)
    need = longest + steps
    if need > shape.max_positions:
        raise InputError(f"the longest prompt ({longest} tokens) plus {steps} steps needs {need} positions, over the model's "
                         f"max_position_embeddings {shape.max_positions}; shorten the prompt or take fewer steps")
    if max_seq is None:
        return -(-need // CACHE_ROW_QUANTUM) * CACHE_ROW_QUANTUM
    if isinstance(max_seq, bool) or not isinstance(max_seq, int) or max_seq < 1:
        raise InputError(f"max_seq={max_seq!r}; the cache rows per sequence are an int >= 1")
    if need > max_seq:
        raise InputError(f"the longest prompt ({longest} tokens) plus {steps} steps needs {need} cache rows, more than "
                         f"max_seq={max_seq}; raise max_seq (CLI: --max-seq) to at least {need} or take at most "
                         f"{max(max_seq - longest, 0)} steps")
    return max_seq


def _drift(step: int, layer: int, lens: list[int], phase: Phase, outs: dict[str, torch.Tensor]) -> LayerDrift:
    """Errors on the real token rows only (prefill padding is zero in every chain)."""
    def real(t: torch.Tensor) -> torch.Tensor:
        if phase == "decode":
            return t.float()
        return torch.cat([t[b, :n].float() for b, n in enumerate(lens)])

    ref = real(outs["fp32"])
    scale = float(ref.pow(2).mean().sqrt()) or 1.0

    def err(name: str) -> tuple[float, float]:
        d = real(outs[name]) - ref
        return float(d.abs().max()), float(d.pow(2).mean().sqrt()) / scale

    p_abs, p_rel = err("platform")
    b_abs, b_rel = err("bf16")
    return LayerDrift(step, layer, p_abs, p_rel, b_abs, b_rel)


def _last_rows(hidden: torch.Tensor, lens: list[int], phase: Phase) -> torch.Tensor:
    if phase == "decode":
        return hidden
    return torch.stack([hidden[b, n - 1] for b, n in enumerate(lens)])


def generate(
    weights: str | Path | Qwen3Checkpoint,
    prompt_ids: Sequence[Sequence[int]] | Any,
    *,
    steps: int = 4,
    platform: str | Platform | Target | None = None,
    budgets: str | None = None,
    tp: int = 1,
    check: bool = False,
    max_seq: int | None = None,
    registry: PlatformRegistry | None = None,
    progress: Progress | None = None,
    cache: bool | None = None,
) -> Generation:
    """Greedy generation of ``steps + 1`` tokens per prompt (one from the prefill, one per decode
    step) with every layer on the platform; see the module doc. ``weights`` is a Hugging Face
    Qwen3 checkpoint folder (config.json + safetensors, sharded or not) or an opened checkpoint.
    Caches get ``max_seq`` rows (default: the longest prompt plus the steps, rounded up to 64).
    Bad input raises ``InputError`` (exit 2) before any layer runs."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    ckpt = weights if isinstance(weights, Qwen3Checkpoint) else Qwen3Checkpoint.open(weights)
    prompts = _prompts(prompt_ids, ckpt.shape)
    rows = _cache_rows(prompts, steps, ckpt.shape, max_seq)
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise InputError(f"tp={tp!r}; tensor-parallel ranks are an int >= 1")
    ckpt = replace(ckpt, shape=replace(ckpt.shape, layer=ckpt.shape.layer.with_max_seq(rows)))
    shape, cfg = ckpt.shape, ckpt.shape.layer
    if tp > 1:  # refused before the platform is even looked at: heads that do not split are the model's fault
        check_tp(cfg, tp)
    target = resolve_target(platform, budgets=budgets, registry=registry)
    if tp > 1:  # and before the first layer: a target with no collective backend
        target.backend_for_tp()
    version, why_not = transformers_probe(ckpt.root) if check else (None, "")
    if why_not:
        say(why_not)
    host = ckpt.host()
    host = replace(host, lm_head=host.lm_head.float())  # widened once: logits.float() is then free per chain and step
    batch, lens, n_layers = len(prompts), [len(p) for p in prompts], shape.num_layers
    lane = PlatformLane.new(cfg, target, tp, n_layers, batch, rows, say, cache)
    goldens = [GoldenLane.new(name, cfg, n_layers, batch, rows, dtype)
               for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))] if check else []
    tokens: list[list[int]] = [[] for _ in prompts]
    timings: list[StepTiming] = []
    drift: list[LayerDrift] = []
    token_checks: list[StepTokens] = []
    hidden = {"platform": embed_prompts(host, prompts, torch.bfloat16)}
    hidden.update({g.name: embed_prompts(host, prompts, g.dtype) for g in goldens})
    for step in range(steps + 1):
        phase: Phase = "prefill" if step == 0 else "decode"
        seq_lens = [n + step for n in lens]
        seq_t = torch.tensor(lens if step == 0 else seq_lens, dtype=torch.int32)
        if step:
            fed = [t[-1] for t in tokens]
            hidden = {"platform": embed_tokens(host, fed, torch.bfloat16)}
            hidden.update({g.name: embed_tokens(host, fed, g.dtype) for g in goldens})
        layer_timings: list[LayerTiming] = []
        for layer in range(n_layers):
            where = f"{'prefill' if step == 0 else f'decode step {step}/{steps}'}, layer {layer + 1}/{n_layers}"
            say(f"{where}: reading the layer")
            w = ckpt.layer(layer)
            out, timing = lane.run(phase, layer, w, hidden["platform"], seq_t)
            layer_timings.append(timing)
            hidden["platform"] = out
            if goldens:
                say(f"{where}: golden fp32 and bf16")
                for g in goldens:
                    hidden[g.name] = g.run(phase, layer, w, hidden[g.name], seq_t)
                drift.append(_drift(step, layer, lens, phase, hidden))
        timings.append(StepTiming(step, phase, lens if step == 0 else seq_lens, layer_timings))
        scores = {name: logits(host, _last_rows(h, lens, phase), cfg.rms_norm_eps) for name, h in hidden.items()}
        chosen = greedy(scores["platform"])
        for b, t in enumerate(chosen):
            tokens[b].append(t)
        if goldens:
            fp32, bf16 = scores["fp32"], scores["bf16"]
            token_checks.append(StepTokens(step, chosen, greedy(fp32), greedy(bf16), None, top2_margin(fp32),
                                           near_ties(fp32, bf16), tie_bars(fp32, bf16), gaps_to(fp32, chosen)))
    if version is not None:
        say("transformers' own greedy choices (fp32)")
        try:
            theirs, their_gaps = transformers_choices(ckpt.root, prompts, tokens)
        except CheckpointError as exc:  # the run is done: keep it, say what is missing
            version, why_not = None, str(exc)
            say(why_not)
        else:
            token_checks = [replace(t, transformers=theirs[t.step], transformers_gap=their_gaps[t.step]) for t in token_checks]
    return Generation(cfg.name, target.name, tp, n_layers, prompts, tokens, timings, round(time.perf_counter() - started, 2),
                      check, token_checks, drift, version, why_not or None)
