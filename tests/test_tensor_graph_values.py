"""Values-only runs (``timed=False``): on a sim the compile stops at the tensor graph and the
interpreter's results are read back (workaround pypto-sim-tensor-graph-values). They must be the
very values a full run gives, bit for bit, caches included, and say that they carry no timing."""

import pytest
import torch

import qwenlayers
from qwenlayers.core.config import preset
from qwenlayers.errors import InputError
from qwenlayers.inputs import random_inputs
from qwenlayers.layer import NOT_TIMED
from qwenlayers.runtime.pypto_workarounds import SIM_TENSOR_GRAPH_VALUES


def _both(phase, cfg, lens, platform):
    run = qwenlayers.prefill if phase == "prefill" else qwenlayers.decode
    w = qwenlayers.LayerWeights.random(cfg, seed=8)
    results = []
    for timed in (True, False):
        inputs = random_inputs(cfg, phase, lens, seed=9)
        results.append(run(cfg, w, **inputs, platform=platform.name, check=True, timed=timed))
    return results


@pytest.mark.sim
@pytest.mark.parametrize("phase,name,lens", [("decode", "tiny", [1, 33, 100]), ("prefill", "tiny-gqa8", [3, 40])])
def test_a_values_only_run_gives_the_full_runs_values_bit_for_bit(runnable_platform, phase, name, lens):
    full, values_only = _both(phase, preset(name), lens, runnable_platform)
    assert full.report.within_tolerance and values_only.report.within_tolerance
    assert torch.equal(full.out, values_only.out)
    if phase == "prefill":  # decode wrote the caller's caches, which _both drew afresh for each run
        assert torch.equal(full.k_cache, values_only.k_cache) and torch.equal(full.v_cache, values_only.v_cache)
    assert full.report.sim_us > 0 and values_only.report.sim_us is None
    assert values_only.report.timing_from == NOT_TIMED
    if runnable_platform.run_mode == "sim":
        assert SIM_TENSOR_GRAPH_VALUES.key in values_only.report.workarounds


@pytest.mark.sim
def test_a_values_only_decode_writes_only_the_new_cache_row(runnable_platform):
    cfg = preset("tiny")
    lens = [5, 64]
    inputs = random_inputs(cfg, "decode", lens, seed=3)
    k0, v0 = inputs["k_cache"].clone(), inputs["v_cache"].clone()
    qwenlayers.decode(cfg, qwenlayers.LayerWeights.random(cfg, seed=3), **inputs, platform=runnable_platform.name, timed=False)
    for b, n in enumerate(lens):
        for new, old in ((inputs["k_cache"], k0), (inputs["v_cache"], v0)):
            assert torch.equal(new[b, :, : n - 1], old[b, :, : n - 1]) and torch.equal(new[b, :, n:], old[b, :, n:])
            assert not torch.equal(new[b, :, n - 1], old[b, :, n - 1])


def test_no_values_and_no_timing_is_refused_before_any_work(platform):
    cfg = preset("tiny")
    w = qwenlayers.LayerWeights.random(cfg, seed=1)
    for phase, run in (("decode", qwenlayers.decode), ("prefill", qwenlayers.prefill)):
        with pytest.raises(InputError, match="nothing to run"):
            run(cfg, w, **random_inputs(cfg, phase, [4]), platform=platform.name, values=False, timed=False)
