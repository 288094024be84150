"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

A temporary's name carries its writer's pid, and a batch run holds a lock
file naming its pid in its output folder (`run_lock`), so the next run can
remove what a killed one left behind (SIGKILL runs no cleanup) without
touching what a live one is writing (`remove_dead_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# ".{name}.{pid}.{16 hex}.tmp{suffix}" (`temporary_path`) or ".{name}.{pid}.tmp" (the export cache's scratch folder,
# one per process). A pid has at most 7 digits (Linux's pid_max is 2**22), so neither 16 random hex digits nor the 8
# that end the mask PNG writer's and the quantiser's scratch-folder names ever read as one, even when all are digits.
_PID = r"(?P<pid>[1-9][0-9]{0,6})"
_TEMPORARY = re.compile(rf"\..+\.{_PID}(?:\.[0-9a-f]{{16}})?\.tmp(?:\.[^.]*)?")
_RUN_LOCK = ".mobilesam-run.{pid}.lock"
_RUN_LOCK_NAME = re.compile(rf"\.mobilesam-run\.{_PID}\.lock")


def temporary_path(target: Path) -> Path:
    """A new hidden name beside `target` that names this process and keeps `target`'s suffix.

    The suffix stays last so writers that pick a format from it (PIL, torch, cv2) still work.
    """
    # 64 random bits: a clash with another writer's temporary name is not a practical concern.
    return target.with_name(f".{target.stem}.{os.getpid()}.{secrets.token_hex(8)}.tmp{target.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
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


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold `folder/.mobilesam-run.{pid}.lock` while the block writes into `folder` (created if needed).

    While it is held, `remove_dead_temporaries` keeps this pid's temporaries in
    `folder`; once nobody holds it they are a killed run's leftovers, even if
    the pid now belongs to another process (in a container every run may be pid 1).
    """
    path = Path(folder, _RUN_LOCK.format(pid=os.getpid()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _hold_shared(path)
    try:
        yield
    finally:
        if fd is not None:
            _release(fd, path)


def _hold_shared(path: Path) -> int | None:
    # Shared, so two runs with the same pid (in two containers) can both hold it. A sweep may remove the
    # file between our open and our flock, and a lock on a removed file protects nothing: then try again.
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as err:
            os.close(fd)
            if err.errno != errno.ENOLCK:
                raise
            # Some network mounts have no locks; a run goes on there, told apart by its pid alone.
            logger.warning("no file locks in %s (%s): a killed run's leftovers are known by pid only", path.parent, err)
            path.unlink(missing_ok=True)
            return None
        if _still_named(fd, path):
            return fd
        os.close(fd)


def _release(fd: int, path: Path) -> None:
    try:
        # The file goes only if no other process shares it (a run of the same pid elsewhere still needs it).
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def remove_dead_temporaries(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Remove the temporaries in `folder` that killed processes left behind; never a live process's.

    A pid with a run lock in `folder` (see `run_lock`) is alive while some
    process holds the lock; unheld locks are removed too. A pid without one (a
    writer that is not a batch run) is alive while a process of that pid
    exists, so leftovers whose pid was reused stay until that process ends.

    Args:
        folder: Where to look; a missing folder has nothing to remove.
        recursive: Look in its subfolders too. A temporary folder is removed whole, never searched.

    Returns:
        What was removed.
    """
    folder = Path(folder)
    # Listed before the locks are read: a run that takes its lock after the listing has nothing in it.
    found = _find_temporaries(folder, recursive)
    held = _read_run_locks(folder)
    removed = []
    for pid, path in found:
        alive = held[pid] if pid in held else _is_alive(pid)
        if not alive:
            _remove(path)
            removed.append(path)
    return removed


def _find_temporaries(folder: Path, recursive: bool) -> list[tuple[int, Path]]:
    found = []
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            match = _TEMPORARY.fullmatch(name)
            if match:
                found.append((int(match["pid"]), Path(parent, name)))
        folders[:] = [name for name in folders if recursive and not _TEMPORARY.fullmatch(name)]
    return found


def _read_run_locks(folder: Path) -> dict[int, bool]:
    """Whether each run lock in `folder` is held, by pid; the unheld ones are removed."""
    held = {}
    for lock in folder.glob(_RUN_LOCK.format(pid="*")):
        match = _RUN_LOCK_NAME.fullmatch(lock.name)
        if match:
            held[int(match["pid"])] = _held_or_removed(lock)
    return held


def _held_or_removed(lock: Path) -> bool:
    try:
        # Read-write: on NFS an exclusive flock is a POSIX lock, which needs a file open for writing.
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False  # its run ended, or another sweep removed it, since the listing
    except PermissionError:
        return True  # another user's lock, which we cannot test: assume its run is alive
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as err:
        if err.errno != errno.ENOLCK:
            raise
        return True  # a mount without locks, where a lock cannot be tested: assume its run is alive
    else:
        # Unless a new run of the same pid has put its own file there since we opened this one.
        if _still_named(fd, lock):
            lock.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)


def _still_named(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass  # another run's sweep removed it first
    except OSError as err:
        # A leftover is untidy, not harmful: a run goes on when it may not delete another user's.
        logger.warning("could not remove the leftover %s: %s", path, err)
    else:
        logger.info("removed %s, left by a killed process", path)
