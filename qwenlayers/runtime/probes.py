"""Neutral availability probes that platform plugins compose. Cheap, never import pypto or
torch_npu (an installed torch_npu without CANN breaks ``import torch`` itself)."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from importlib import metadata

from qwenlayers.core.platform import Availability
from qwenlayers.runtime.pyptoenv import check_pypto


def _calculator_cached() -> bool:
    from qwenlayers.runtime.paths import cache_root

    return bool(glob.glob(str(cache_root() / "calculator" / "*" / "install" / "lib" / "libtile_fwk_calculator.so")))


def sim_probe() -> Availability:
    """pypto's SIM mode needs pypto 0.2.0, torch, and (once, to build its calculator) cmake + g++."""
    reasons = []
    pypto_problem = check_pypto()
    if pypto_problem:
        reasons.append(pypto_problem)
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = ""
        reasons.append("torch is not installed (pip install torch==2.13.0)")
    if not _calculator_cached():
        missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
        if missing:
            reasons.append(f"{' and '.join(missing)} not found; pypto builds its CPU calculator with them once")
    if reasons:
        return Availability(False, "; ".join(reasons))
    return Availability(True, f"pypto SIM on CPU (pypto {metadata.version('pypto')}, torch {torch_version})")


def npu_probe() -> Availability:
    """A real Ascend device: /dev/davinci*, CANN (ASCEND_HOME_PATH) and torch_npu, plus pypto."""
    reasons = []
    if not glob.glob("/dev/davinci[0-9]*"):
        reasons.append("no Ascend NPU on this machine (/dev/davinci* absent)")
    if not os.environ.get("ASCEND_HOME_PATH"):
        reasons.append("CANN not found (ASCEND_HOME_PATH unset; source CANN's set_env.sh)")
    if importlib.util.find_spec("torch_npu") is None:
        reasons.append("torch_npu not installed (install the torch-npu build matching your CANN)")
    pypto_problem = check_pypto()
    if pypto_problem:
        reasons.append(pypto_problem)
    if reasons:
        return Availability(False, "; ".join(reasons))
    return Availability(True, "Ascend NPU, CANN and torch_npu found")
