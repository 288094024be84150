"""Atomic file writes: a reader sees the old file or the complete new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The temporary name keeps the suffix so writers that pick a format from it
    (PIL, torch, cv2) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # 64 random bits: a clash with another writer's temporary name is not a practical concern.
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(8)}.tmp{target.suffix}")
    # The file is created inside the try, so an interrupt (Ctrl-C, or SIGTERM raised as one) arriving at any
    # point after it exists still reaches the cleanup; mkstemp would leave a window before the try.
    try:
        _create_empty(tmp)
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _create_empty(tmp: Path) -> None:
    # O_EXCL never opens an existing file; mode 0o666 lets the umask give the
    # permissions any new file gets, where mkstemp would have made it private.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))
