"""The scripts in ``bench/`` are files, not a package: each test module gets its script
imported as a module through one of these fixtures."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported(filename: str) -> Iterator[ModuleType]:
    name = "bench_" + Path(filename).stem
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def load() -> Iterator[ModuleType]:
    """``bench/load.py``."""
    yield from _imported("load.py")


@pytest.fixture(scope="module")
def mutation() -> Iterator[ModuleType]:
    """``bench/mutation.py``."""
    yield from _imported("mutation.py")


@pytest.fixture(scope="module")
def replay_module() -> Iterator[ModuleType]:
    """``bench/recommendation_replay.py``."""
    yield from _imported("recommendation_replay.py")


@pytest.fixture(scope="module")
def optimum_drift() -> Iterator[ModuleType]:
    """``bench/optimum_drift.py``."""
    yield from _imported("optimum_drift.py")
