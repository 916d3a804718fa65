"""File writing every part of the package shares (checkpoints, training state, metrics).

Imports nothing from the model, checkpoint or task code, so ``engine/`` can use it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

#: ``library`` entry in the metadata of every file we write (safetensors, training state).
LIBRARY_TAG = "pvtv2"


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Write ``path`` via a temp file in the same folder and ``os.replace``: a crash
    mid-write leaves the previous file intact and never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
