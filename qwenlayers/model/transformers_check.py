"""transformers itself as a third opinion on the greedy tokens, when it is installed.

It is never required (a test-only dependency). The model runs in fp32 over each sequence's
prompt plus the tokens the platform fed to its decode steps, once, and its greedy choice is read
at every generated position: the same prefix every other chain saw, so a difference is a
difference in arithmetic, not a divergence carried from an earlier step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return str(transformers.__version__)


@torch.no_grad()
def transformers_choices(root: Path, prompts: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]]) -> list[list[int]]:
    """Per step (0 = after the prompt), each sequence's greedy token from transformers' fp32
    model; ``tokens[b]`` are the platform's new tokens (the last one is never fed)."""
    from transformers import Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bar would cut through qwenlayers' own progress line

    try:
        model = Qwen3ForCausalLM.from_pretrained(str(root), dtype=torch.float32, attn_implementation="eager")
    except TypeError:  # transformers < 4.56 names it torch_dtype
        model = Qwen3ForCausalLM.from_pretrained(str(root), torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    steps = len(tokens[0])
    per_step: list[list[int]] = [[] for _ in range(steps)]
    for prompt, new in zip(prompts, tokens):
        ids = torch.tensor([list(prompt) + list(new[:-1])])
        scores = model(input_ids=ids).logits[0]
        for s in range(steps):
            per_step[s].append(int(scores[len(prompt) - 1 + s].argmax()))
    return per_step
