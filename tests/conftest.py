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


# The costliest test files, costliest first (seconds on 2 cores, measured). Under
# `--dist loadfile` each file runs whole on one worker, in collection order: starting
# the long ones first keeps one worker from ending the run alone on a long file.
COSTLIEST_FILES = (
    "test_distributed.py",  # ~270 s: a two-node Ray cluster
    "test_export_executorch.py",  # ~250 s: four programs lowered to XNNPACK
    "test_automatic_oracle.py",  # ~180 s
    "test_export_tflite.py",  # ~170 s: litert-torch in a subprocess
    "test_predictor_oracle.py",  # ~115 s
    "test_model_oracle.py",  # ~100 s
    "test_segment_anything_layout.py",  # ~90 s
    "test_ultralytics_docs.py",  # ~80 s
    "test_server_browser.py",  # ~75 s: headless Chromium
    "test_export_clients.py",  # ~75 s
    "test_export_coreml.py",  # ~70 s
    "test_faithful_default.py",  # ~70 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(COSTLIEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
