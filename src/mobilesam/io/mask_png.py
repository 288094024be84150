"""One 0/255 PNG per mask, in a directory that appears all at once."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..atomic import temporary_path

if TYPE_CHECKING:
    from ..results import Results


def write_mask_pngs(result: Results, directory: str | os.PathLike[str]) -> Path:
    """Write mask i of `result` to `directory/000.png`, `001.png`, ... (8-bit grey, 0 or 255).

    Names have at least three digits, more when there are over 1000 masks, so
    they always sort in mask order.

    The directory is built under a hidden temporary name beside it and renamed
    into place, so it is either absent, the previous version, or complete; an
    existing directory is replaced. With no masks it is created empty, so a
    rerun still sees the image as done.

    Args:
        result: Masks of one image.
        directory: Directory to create or replace.

    Returns:
        `directory` as a Path.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not tempfile.mkdtemp, which makes it 0o700) so the directory gets the usual umask permissions;
    # a name of `temporary_path`, so that the next run removes it if this process is killed.
    tmp = temporary_path(target)
    tmp.mkdir()
    old = None
    try:
        digits = max(3, len(str(len(result.masks) - 1)))
        for index, mask in enumerate(result.masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / f"{index:0{digits}d}.png")
        if target.exists():
            # Move the old directory aside rather than deleting it in place: an
            # interrupted rmtree would leave a partial directory that looks done.
            old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.replace(old, target)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target
