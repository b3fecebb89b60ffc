"""A whole Qwen3 model through qwenlayers: a Hugging Face checkpoint's every layer on the
platform, prefill then greedy decode steps, with embeddings, final norm and lm_head on the host
(:func:`generate`); checked against golden chains in fp32 and bf16 and transformers itself."""

from qwenlayers.model.checkpoint import HostWeights, ModelShape, Qwen3Checkpoint
from qwenlayers.model.generate import generate
from qwenlayers.model.generation import Generation, LayerDrift, StepTiming, StepTokens

__all__ = ["Generation", "HostWeights", "LayerDrift", "ModelShape", "Qwen3Checkpoint", "StepTiming", "StepTokens", "generate"]
