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

from qwenlayers.errors import CheckpointError


def transformers_probe(root: Path) -> tuple[str | None, str]:
    """(its version, "") when transformers can run this checkpoint, else (None, why not). Asked
    before any layer runs, so an old transformers or a config it cannot read is known at once, not
    after the whole run: a config.json that transformers refuses is refused (CheckpointError)."""
    try:
        import transformers
    except ImportError:
        return None, "transformers is not installed: its column is left out (pip install 'transformers>=4.51')"
    version = str(transformers.__version__)
    try:
        from transformers import Qwen3Config as HFQwen3Config
        from transformers import Qwen3ForCausalLM  # noqa: F401 - only asked whether it exists
    except ImportError:
        return None, f"transformers {version} has no Qwen3ForCausalLM (Qwen3 needs transformers >= 4.51): its column is left out"
    try:
        HFQwen3Config.from_pretrained(str(root))
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises, the checkpoint is what it refused
        raise CheckpointError(f"transformers {version} cannot read {root}/config.json ({type(exc).__name__}: {exc}); "
                              "the check runs it on the same checkpoint") from exc
    return version, ""


@torch.no_grad()
def transformers_choices(root: Path, prompts: Sequence[Sequence[int]],
                         tokens: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[list[float]]]:
    """Per step (0 = after the prompt), each sequence's greedy token from transformers' fp32
    model, and how far below its best logit its logit for the platform's token is;
    ``tokens[b]`` are the platform's new tokens (the last one is never fed)."""
    from transformers import Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its weight-loading bar would cut through qwenlayers' own progress line

    try:
        try:
            model = Qwen3ForCausalLM.from_pretrained(str(root), dtype=torch.float32, attn_implementation="eager")
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = Qwen3ForCausalLM.from_pretrained(str(root), torch_dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"transformers could not load {root} ({type(exc).__name__}: {exc}); the platform's "
                              "and the golden chains' results are complete, its third opinion is not") from exc
    model.eval()
    steps = len(tokens[0])
    choices: list[list[int]] = [[] for _ in range(steps)]
    gaps: list[list[float]] = [[] for _ in range(steps)]
    for prompt, new in zip(prompts, tokens):
        ids = torch.tensor([list(prompt) + list(new[:-1])])
        scores = model(input_ids=ids).logits[0].float()
        for s in range(steps):
            row = scores[len(prompt) - 1 + s]
            choices[s].append(int(row.argmax()))
            gaps[s].append(float(row.max() - row[new[s]]))
    return choices, gaps
