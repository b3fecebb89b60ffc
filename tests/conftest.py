"""Shared fixtures. The platform under test comes from QWENLAYERS_PLATFORM (tox sets it per env)."""

from __future__ import annotations

import os

# pytest-xdist's workers run with COLUMNS=80, which the CLI honours (a user's COLUMNS wins):
# the suite's CLI output is a pipe's, as in a CI log, so the tables take their piped width.
os.environ.pop("COLUMNS", None)

import pytest  # noqa: E402
import torch

from qwenlayers.core.platform import Platform
from qwenlayers.registry import DEFAULT_PLATFORM, get_registry


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """Every test draws its unseeded tensors from the same stream, so a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_runs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test simulates its own runs (a test that stops a worker must find one running);
    tests marked ``result_cache`` exercise the cost-model result cache itself."""
    if request.node.get_closest_marker("result_cache") is None:
        monkeypatch.setenv("QWENLAYERS_NO_CACHE", "1")
    else:
        monkeypatch.delenv("QWENLAYERS_NO_CACHE", raising=False)


@pytest.fixture(scope="session")
def platform_name() -> str:
    return os.environ.get("QWENLAYERS_PLATFORM") or DEFAULT_PLATFORM


@pytest.fixture(scope="session")
def platform(platform_name: str) -> Platform:
    return get_registry().get(platform_name)


@pytest.fixture(scope="session")
def runnable_platform(platform: Platform) -> Platform:
    """The platform under test, or a skip carrying its Availability reason (no NPU here, ...)."""
    availability = platform.available()
    if not availability.ok:
        pytest.skip(f"{platform.name} cannot run kernels here (no device for it): {availability.reason}")
    return platform
