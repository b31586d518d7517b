"""Shared fixtures; the helpers test modules import live in tests/helpers.py (no test imports conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One intra-op thread here and in CLI subprocesses: on 2 shared cores, 2-thread kernels mostly spin."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA
