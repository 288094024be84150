"""Where mobilesam keeps what it downloads and builds: $MOBILESAM_HOME, else ~/.cache/mobilesam. Torch-free."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The folder of checkpoints, cached exports and compiled engines."""
    return Path(os.environ.get("MOBILESAM_HOME") or Path.home() / ".cache" / "mobilesam")
