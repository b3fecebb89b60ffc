"""How a kernel's bf16 output is compared with the golden.

Both compute in fp32 and round to bf16 at the same points, but their fp32 sums run in a
different order, so an intermediate can land one bf16 step apart. In the residual stream
(values near 1, bf16 step 2^-7) such a step survives a later cancellation: measured on tiny,
3 of 1280 outputs near 0.12-0.19 were 0.012-0.016 off while their row's scale was 1.2. An
elementwise ``atol + rtol*|ref|`` bar calls that a failure although no bf16 computation can
avoid it, so the relative part is taken against ``max(|ref|, rms of the ref row)``: the scale of
the hidden-state vector the element belongs to. Elements outside the plain elementwise bar are
still counted and reported (``outside_elementwise``).

Prefill chains more such steps (a K or V row one step off changes every later token's
attention): on tiny, 5 of 259,840 outputs were outside even the row-scaled bar, at most
0.031 off, while the kernel's mean error against the fp32 truth (0.00398) was below the bf16
golden's own (0.00400); a decode step after a kernel prefill (caches one step apart from the
golden's) had 1 of 768 outputs at 1.07x the bar. So a comparison passes when at most 0.5 % of
the elements are outside the row-scaled bar and none is more than ``WORST_RATIO`` times its bar away — the shape of the
bar docs/golden.md set for the golden against transformers (99.5 % within, none past 4e-2 at
scale 1, at least one element allowed), made relative because a one-step bf16 difference at |x| = 8 is already 0.0625.

A non-finite value is never a match: NaN == NaN in an output would let an all-NaN kernel
"pass" against an all-NaN golden (a config with rope_theta 0, a NaN weight). Every element
must be finite in both, except where the caller marks it ``passthrough`` (cache rows the
kernel must leave alone, which may hold ``torch.empty`` garbage): there bit-identical values,
NaN included, are exact. Non-finite elements are counted and their first positions kept, so a
failed check says where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

ATOL = RTOL = 1e-2
WORST_RATIO = 4.0
OUTSIDE_FRACTION = 5e-3
FIRST_POSITIONS = 3  # non-finite positions kept per tensor: enough to see a pattern, short enough to read

Position = tuple[int, ...]


@dataclass(frozen=True)
class Comparison:
    max_abs_err: float
    outside: int  # elements outside atol + rtol * max(|ref|, row rms): a failure
    outside_elementwise: int  # elements outside atol + rtol * |ref| (reported, see the module doc)
    total: int
    worst_ratio: float = 0.0  # max over elements of error / row-scaled bar
    nonfinite: int = 0  # NaN/Inf elements of the output outside ``passthrough``: a failure
    nonfinite_first: tuple[Position, ...] = ()
    ref_nonfinite: int = 0  # NaN/Inf elements of the golden outside ``passthrough``: a failure too
    ref_nonfinite_first: tuple[Position, ...] = ()
    checked: int | None = None  # elements outside ``passthrough`` (None: all ``total``)

    @property
    def allowed_outside(self) -> int:
        return max(1, int(self.total * OUTSIDE_FRACTION))

    @property
    def ok(self) -> bool:
        return (self.nonfinite == 0 and self.ref_nonfinite == 0 and self.outside <= self.allowed_outside
                and self.worst_ratio <= WORST_RATIO)

    def failure(self, name: str) -> str | None:
        """Why ``name`` failed the check, in one sentence (None when it passed)."""
        if self.ok:
            return None
        of = self.total if self.checked is None else self.checked
        reasons = []
        if self.nonfinite:
            reasons.append(f"{self.nonfinite} of {of} values are non-finite (NaN/Inf), first at {_positions(self.nonfinite_first)}")
        if self.ref_nonfinite:
            reasons.append(f"the golden has {self.ref_nonfinite} non-finite values, first at {_positions(self.ref_nonfinite_first)}"
                           " (non-finite inputs or config constants)")
        if reasons:  # every non-finite element is also outside the bar: saying so again adds nothing
            return f"{name}: " + "; ".join(reasons)
        if self.outside > self.allowed_outside:
            reasons.append(f"{self.outside} of {self.total} elements are outside the row-scaled bar "
                           f"(at most {self.allowed_outside} allowed)")
        if self.worst_ratio > WORST_RATIO:
            reasons.append(f"the worst element is {self.worst_ratio:.3g}x its bar (at most {WORST_RATIO:g}x allowed)")
        return f"{name}: " + "; ".join(reasons)


def _positions(first: tuple[Position, ...]) -> str:
    return ", ".join(str(list(p)) for p in first)


def _first_positions(mask: torch.Tensor) -> tuple[Position, ...]:
    """Indices of the first FIRST_POSITIONS True elements in row-major order."""
    flat = mask.reshape(-1).nonzero()[:FIRST_POSITIONS, 0]
    return tuple(tuple(int(i) for i in torch.unravel_index(f, mask.shape)) for f in flat)


def compare(
    out: torch.Tensor, ref: torch.Tensor, *, atol: float = ATOL, rtol: float = RTOL, passthrough: torch.Tensor | None = None
) -> Comparison:
    """Compare ``out`` with ``ref`` along rows of the last dimension.

    ``passthrough`` (bool, broadcastable to the shape) marks elements the kernel must pass
    through untouched, such as cache rows past each sequence's written rows: there identical
    bits are exact whatever they hold. Everywhere else a NaN or Inf in either tensor fails."""
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: out {tuple(out.shape)} vs ref {tuple(ref.shape)}")
    o, r = out.float(), ref.float()
    through = torch.zeros_like(o, dtype=torch.bool) if passthrough is None else passthrough.expand(o.shape)
    bad_out, bad_ref = ~o.isfinite() & ~through, ~r.isfinite() & ~through
    same = (o == r) | (o.isnan() & r.isnan() & through)
    err = torch.where(same & ~(bad_out | bad_ref), 0.0, torch.nan_to_num((o - r).abs(), nan=float("inf")))
    err = torch.where(bad_out | bad_ref, float("inf"), err)
    finite = torch.where(r.isfinite(), r, 0.0)
    row_rms = finite.pow(2).mean(-1, keepdim=True).sqrt()
    scaled = atol + rtol * torch.maximum(finite.abs(), row_rms)
    plain = atol + rtol * finite.abs()
    return Comparison(
        max_abs_err=err.max().item() if err.numel() else 0.0,
        outside=int((err > scaled).sum()),
        outside_elementwise=int((err > plain).sum()),
        total=err.numel(),
        worst_ratio=(err / scaled).max().item() if err.numel() else 0.0,
        nonfinite=int(bad_out.sum()),
        nonfinite_first=_first_positions(bad_out),
        ref_nonfinite=int(bad_ref.sum()),
        ref_nonfinite_first=_first_positions(bad_ref),
        checked=None if passthrough is None else int((~through).sum()),
    )


@dataclass(frozen=True)
class Verdict:
    """A layer run's check, from the comparisons of its output and written caches: what the
    reports of :mod:`qwenlayers.layer` and :mod:`qwenlayers.tensor_parallel` record."""

    ok: bool
    max_abs_err: float
    cache_max_abs_err: float
    outside_elementwise: int
    nonfinite: dict[str, dict[str, Any]]  # per tensor with any: count, golden count, first positions
    failures: list[str]


def verdict(comparisons: Mapping[str, Comparison]) -> Verdict:
    """Fold ``{"out": ..., "k_cache": ..., "v_cache": ...}`` into one verdict; ``out`` is the output."""
    out = comparisons["out"]
    caches = [c for name, c in comparisons.items() if name != "out"]
    nonfinite = {
        name: {"count": c.nonfinite, "golden": c.ref_nonfinite, "first": [list(p) for p in c.nonfinite_first or c.ref_nonfinite_first]}
        for name, c in comparisons.items() if c.nonfinite or c.ref_nonfinite
    }
    failures = [f for name, c in comparisons.items() if (f := c.failure(name)) is not None]
    return Verdict(
        ok=not failures, max_abs_err=out.max_abs_err, cache_max_abs_err=max((c.max_abs_err for c in caches), default=0.0),
        outside_elementwise=out.outside_elementwise, nonfinite=nonfinite, failures=failures,
    )
