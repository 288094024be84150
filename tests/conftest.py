"""Fixtures shared across test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def mobilesam_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Checkpoints, cached exports and compiled engines go to a folder of this test session, never ~/.cache.

    One folder for the whole session, so tests share the export cache as a user's runs would.
    """
    before = os.environ.get("MOBILESAM_HOME")
    os.environ["MOBILESAM_HOME"] = str(tmp_path_factory.mktemp("mobilesam_home"))
    yield
    if before is None:
        del os.environ["MOBILESAM_HOME"]
    else:
        os.environ["MOBILESAM_HOME"] = before


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test, then back to the thread count it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
