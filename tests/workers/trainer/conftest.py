"""Shared fixtures for the trainer tests: one small real corpus, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tiny models on a shared 2-core machine: extra intra-op threads only contend.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.trainer.data import build_example_corpus

    out = tmp_path_factory.mktemp("example")
    build_example_corpus(out, mb_per_domain=0.1)
    return out


@pytest.fixture(scope="session")
def three_domains(example_dir: Path) -> list[str]:
    from workers.trainer.data import available_domains

    return list(available_domains(example_dir))[:3]
