"""Public home of the golden math: ``qwenlayers.golden.decode`` / ``qwenlayers.golden.prefill``."""

from qwenlayers.core.golden import apply_rope, attention, decode, prefill, rms_norm, rope_cos_sin

__all__ = ["apply_rope", "attention", "decode", "prefill", "rms_norm", "rope_cos_sin"]
