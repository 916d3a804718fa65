"""File writing every part of the package shares (checkpoints, training state, metrics).

Imports nothing from the model, checkpoint or task code, so ``engine/`` can use it.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import DataError

#: ``library`` entry in the metadata of every file we write (safetensors, training state).
LIBRARY_TAG = "pvtv2"


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the process umask."""
    try:  # Linux reports the umask without changing it
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Write ``path`` via a temp file in the same folder and ``os.replace``: a crash
    mid-write leaves the previous file intact and never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp's 0600 would outlive the rename. After the write: safetensors writes a
        # temporary of its own and renames it onto ours, bringing its own 0600 along.
        os.chmod(tmp, new_file_mode())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_output_folder(out_dir: str | os.PathLike, flag: str | None = None) -> Path:
    """What :func:`prepare_output_folder` checks, without creating anything: ``out_dir`` is a
    writable folder, or the nearest folder that exists above it can be written into."""
    out = Path(out_dir)
    name = f"{flag} {out}" if flag else str(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{name} is a file, not a folder; give a folder for the outputs")
    above = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not above.is_dir():
        raise DataError(f"cannot create the output folder {name}: {above} is a file")
    if not os.access(above, os.W_OK | os.X_OK):
        verb = "write to" if above == out else "create"
        raise DataError(f"cannot {verb} the output folder {name}: permission denied")
    return out


def prepare_output_folder(out_dir: str | os.PathLike, flag: str | None = None) -> Path:
    """Create ``out_dir`` (a folder that a command writes files into) or say in one line why
    it cannot be: a file is in the way, or the folder cannot be created or written. ``flag``:
    the command-line option that named the folder, for the message."""
    out = Path(out_dir)
    name = f"{flag} {out}" if flag else str(out)
    check_output_folder(out, flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the output folder {name}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(f"cannot write to the output folder {name}: permission denied")
    return out


def prepare_output_file(path: str | os.PathLike, flag: str | None = None, *, overwrite: bool = False,
                        reads: Iterable[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that ``path`` (a file a command writes whole, with
    :func:`atomic_write`) may be written, or say in one line why not: it is a folder or not a
    regular file, it exists (unless ``overwrite``), it is one of the files the command ``reads``
    (never replaced), or its folder cannot be created or written. Creates that folder."""
    out = Path(path)
    name = f"{flag} {out}" if flag else str(out)
    if out.is_dir():
        raise DataError(f"{name} is a folder; give the output file's name")
    if out.exists() and not out.is_file():
        raise DataError(f"{name} is not a regular file; give a file to write (or leave {flag or 'it'} out)")
    for source in reads:
        if out.exists() and Path(source).exists() and os.path.samefile(out, source):
            raise DataError(f"{name} is {source}, which this command reads; choose another output file")
    if out.exists() and not overwrite:
        raise DataError(f"{name} exists; choose another output file, or replace it with --overwrite")
    if out.parent.exists() and not out.parent.is_dir():
        raise DataError(f"cannot write {name}: {out.parent} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the folder of {name}: {e.strerror or e}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {name}: its folder {out.parent} is not writable")
    return out


# atomic_write's temporaries: mkstemp(prefix=".<name>.", suffix=".tmp") adds 8 random characters.
# Inside one of them, safetensors' writer (Rust's tempfile crate) makes ".tmp" + 6 letters or digits
# beside it: a kill during a best.safetensors save leaves that one.
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp|\.tmp[A-Za-z0-9]{6}")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that :func:`atomic_write` (and safetensors' writer inside it) left
    in ``folder`` when its process was killed mid-save (tens of MB each for a checkpoint); returns what was deleted. Only safe
    while no other process writes there (a training run calls it holding the folder's lock)."""
    removed = []
    for p in Path(folder).iterdir():
        if _TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(p)
    return removed
