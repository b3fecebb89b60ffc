"""The descriptor drives what pypto compiles for and simulates (the core's built-in plugin)."""

from dataclasses import replace

import pytest

from qwenlayers.core.platform import Cores
from qwenlayers.errors import KernelError, PlatformUnavailableError
from qwenlayers.registry import get_registry
from qwenlayers.runtime import pypto_target
from qwenlayers.runtime.pypto_workarounds import INI_OVERLAY, SIM_TENSOR_GRAPH_VALUES, SIM_VERIFY_REAL_INPUTS


def _ini_values(text):
    return {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in text.splitlines() if "=" in ln and not ln.startswith("#")}


def test_in_tree_sims_get_their_ini_from_the_descriptor():
    reg = get_registry()
    a5, a2a3 = reg.get("a5sim"), reg.get("a2a3sim")
    ini = _ini_values(pypto_target.render_ini(a5))
    assert (ini["NpuArch"], ini["ai_core_cnt"], ini["vector_core_cnt"], ini["ub_size"]) == ("3510", "28", "56", "253952")
    assert pypto_target.needs_overlay(a5)
    assert not pypto_target.needs_overlay(a2a3)  # pypto's own ini is the 910B's, unchanged byte for byte
    assert pypto_target.machines(a5) == 7 and pypto_target.machines(a2a3) == 6


def test_a_variant_changes_exactly_its_fields():
    a2a3 = get_registry().get("a2a3sim")
    variant = replace(a2a3, name="v", cores=Cores(16, 32), buffers=replace(a2a3.buffers, l1=262144))
    ini = _ini_values(pypto_target.render_ini(variant))
    assert (ini["ai_core_cnt"], ini["cube_core_cnt"], ini["vector_core_cnt"], ini["l1_size"]) == ("16", "16", "32", "262144")
    assert ini["NpuArch"] == "2201" and ini["cube_freq"] == "1850"  # the rest is pypto's
    assert pypto_target.needs_overlay(variant)


def test_the_built_in_plugin_declares_pypto_020s_workarounds_for_every_sim():
    reg = get_registry()
    a5, a2a3 = (reg.workarounds(reg.get(n)) for n in ("a5sim", "a2a3sim"))
    assert a5.switches() == [SIM_VERIFY_REAL_INPUTS.key, SIM_TENSOR_GRAPH_VALUES.key, INI_OVERLAY.key]
    assert a2a3.switches() == [SIM_VERIFY_REAL_INPUTS.key, SIM_TENSOR_GRAPH_VALUES.key]
    assert "pypto-one-axis-broadcast" in a2a3.keys()  # a note: how the builders are written
    assert reg.workarounds(reg.get("a5")).switches() == []  # npu: nothing to switch


@pytest.mark.parametrize(("cube", "vector"), [(18, 36), (20, 20), (0, 0)])
def test_core_counts_the_cost_model_cannot_simulate_are_refused(cube, vector):
    variant = replace(get_registry().get("a5sim"), cores=Cores(cube, vector))
    with pytest.raises(PlatformUnavailableError, match=rf"{cube} cube / {vector} vector cores cannot be simulated.*allowed"):
        pypto_target.machines(variant)


def test_a_run_for_another_target_than_the_descriptor_is_an_error_naming_both():
    a5 = get_registry().get("a5sim")
    pypto_target.check_target(a5, {"npuarch": "DAV_3510", "cost_model_arch": "A5", "lanes": {"AIC": 28, "AIV": 56}})
    with pytest.raises(KernelError, match="pypto compiled for DAV_2201, the descriptor says DAV_3510"):
        pypto_target.check_target(a5, {"npuarch": "DAV_2201", "cost_model_arch": "A5"})
    with pytest.raises(KernelError, match="simulated 24 cube cores, the descriptor says 28"):
        pypto_target.check_target(a5, {"npuarch": "DAV_3510", "cost_model_arch": "A5", "lanes": {"AIC": 24}})
    with pytest.raises(KernelError, match="the cost model simulated A2A3, the descriptor says A5"):
        pypto_target.check_target(a5, {"npuarch": "DAV_3510", "cost_model_arch": "A2A3"})
