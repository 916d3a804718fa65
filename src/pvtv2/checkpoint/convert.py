"""``pvtv2.convert`` / ``pvtv2 convert``: rewrite a checkpoint in another format.

The model is rebuilt in between, so the output is checked; nothing existing is replaced
unless asked, and the source is never the destination.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fileio import atomic_write
from .formats import FROM_PVTV2, canonical_format, family_of, pvtv2_config_to_transformers
from .io import CONFIG_FILE, save_file, save_pretrained, write_safetensors
from .load import build_pretrained

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_FILE_SUFFIXES = (".safetensors", *_TORCH_SUFFIXES, ".onnx", ".json")


def _destination_kind(dst: Path, to: str) -> str:
    """``"file"`` or ``"folder"``: what ``to`` writes at ``dst``; a suffix that does not fit raises."""
    suffix = dst.suffix.lower()
    if to == "transformers":
        if suffix in _FILE_SUFFIXES:
            raise CheckpointError(f"{dst}: a transformers checkpoint is a folder (config.json + model.safetensors); "
                                  f"give a folder name without a file suffix")
        return "folder"
    if to == "pvtv2":
        if suffix == ".safetensors":
            return "file"
        if suffix in _FILE_SUFFIXES:
            raise CheckpointError(f"{dst}: a pvtv2 checkpoint is a .safetensors file or a folder, not {suffix}")
        return "folder"
    if suffix not in (".safetensors", *_TORCH_SUFFIXES):
        raise CheckpointError(f"{dst}: an {to} checkpoint is one file; name it .pth, .pt or .bin (torch.save) or "
                              f".safetensors")
    return "file"


def _check_destination(src: Any, dst: Path, kind: str, to: str, overwrite: bool) -> None:
    if isinstance(src, (str, os.PathLike)) and Path(src).expanduser().exists():
        s, d = Path(src).expanduser().resolve(), dst.resolve()
        if s == d or s in d.parents or d in s.parents:
            raise CheckpointError(f"{dst}: the destination would overwrite the source {src}; choose another destination")
    if not dst.exists():
        return
    if kind == "file" and dst.is_dir():
        raise CheckpointError(f"{dst}: is a folder; an {to} checkpoint of this name is a file")
    if kind == "folder" and not dst.is_dir():
        raise CheckpointError(f"{dst}: is a file; a {to} checkpoint of this name is a folder")
    if not overwrite and (kind == "file" or any(dst.iterdir())):
        raise CheckpointError(f"{dst}: already exists; pass overwrite=True (--overwrite) to replace it, "
                              f"or choose another destination")


def convert(src: Any, dst: str | os.PathLike, *, to: str = "pvtv2", name: str | None = None,
            overwrite: bool = False) -> Path:
    """Convert a checkpoint of any format (anything :func:`pvtv2.create_model`'s ``pretrained``
    takes) to ``to``: ``pvtv2`` (``ours`` is its old name), ``official``, ``timm`` or ``transformers``.

    ``pvtv2`` writes a folder (``config.json`` + ``model.safetensors``) or, for a ``dst``
    ending in ``.safetensors``, one file; ``transformers`` a folder; ``official`` and ``timm``
    a ``.pth``/``.pt``/``.bin`` (torch.save) or ``.safetensors`` file. PVTv1 converts to every
    format but ``timm`` (which has no PVTv1). An existing ``dst``
    (a non-empty folder) is refused unless ``overwrite=True``; ``dst`` may never be ``src``
    or contain it. Raises :class:`CheckpointError`.
    """
    to = canonical_format(to)
    dst = Path(dst).expanduser()
    kind = _destination_kind(dst, to)
    _check_destination(src, dst, kind, to, overwrite)
    model = build_pretrained(name, src, num_classes=None)
    if to == "timm" and family_of(model.config) != "pvt_v2":
        what = "PVTv1" if family_of(model.config) == "pvt_v1" else "a PVTv2 ablation mixture"
        raise CheckpointError(f"{src}: timm has the standard PVTv2 models only, and this is {what} "
                              f"({model.config.name or 'unnamed'}); convert to pvtv2, official or transformers instead")
    if to == "pvtv2":
        return save_file(model, dst) if kind == "file" else save_pretrained(model, dst)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if to == "transformers":
        cfg = pvtv2_config_to_transformers(model.config, getattr(model, "class_names", None))
        dst.mkdir(parents=True, exist_ok=True)
        write_safetensors(FROM_PVTV2[to](sd), dst / "model.safetensors", {"format": "pt"})
        atomic_write(dst / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2)))
        return dst
    out = FROM_PVTV2[to](sd)
    if dst.suffix.lower() == ".safetensors":
        return write_safetensors(out, dst)
    atomic_write(dst, lambda tmp: torch.save(out, tmp))
    return dst
