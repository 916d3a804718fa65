"""Reading checkpoint files and folders into memory, and writing our own.

Everything is read with safetensors or ``torch.load(weights_only=True)``: a checkpoint can
never run code. Everything is written atomically (:func:`pvtv2.fileio.atomic_write`).
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError
from ..fileio import LIBRARY_TAG, atomic_write
from ..model import VARIANTS, PVTv2Config, PyramidVisionTransformerV2, variant_config
from .formats import TO_PVTV2, detect_format, transformers_config_to_pvtv2, unwrap_state_dict
from .hub import resolve_source

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
CONFIG_FILE = "config.json"


@dataclass
class Checkpoint:
    """A checkpoint read into memory: pvtv2-layout tensors plus whatever config came with it."""

    state_dict: dict[str, torch.Tensor]
    format: str
    source: str
    config: PVTv2Config | None = None
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. input_size, crop_pct of a trained model


# -- metadata ---------------------------------------------------------------------------
def json_entry(meta: Mapping[str, str], key: str, source: Any, default: Any = None) -> Any:
    """Decode one JSON metadata entry; a damaged one raises :class:`CheckpointError` naming the file."""
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{source}: metadata entry {key!r} is not valid JSON ({e}); the file is damaged "
                              f"or was not written by pvtv2") from None


def config_from_dict(data: Any, source: Any, where: str) -> PVTv2Config:
    """:meth:`PVTv2Config.from_dict` whose errors name the file and the entry."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{source}: {where} should be a PVTv2 config object, found {type(data).__name__}")
    try:
        return PVTv2Config.from_dict(dict(data))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {where} is not a valid PVTv2 config ({e})") from None


# -- reading ------------------------------------------------------------------------
def _is_onnx(head: bytes) -> bool:
    # An ONNX ModelProto opens with field 1 (ir_version, a small varint), then another
    # top-level field: producer_name, producer_version, domain, model_version, doc_string,
    # graph, opset_import or metadata_props.
    return len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in b"\x12\x1a\x22\x28\x32\x3a\x42\x72"


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _refuse_exports(path: Path, head: bytes) -> None:
    """Our own exports are not checkpoints: say what the file is and what takes it."""
    if path.suffix == ".onnx" or _is_onnx(head):
        raise CheckpointError(
            f"{path}: this is an ONNX model (as `pvtv2 export --format onnx` writes), not a checkpoint; "
            f"`pvtv2 predict IMAGES --checkpoint MODEL.onnx` runs it (the name must end in .onnx), as does "
            f"onnxruntime; eval, export and convert need the checkpoint it was exported from")
    if head.startswith(b"PK") and _is_torchscript(path):
        raise CheckpointError(
            f"{path}: this is a TorchScript module (as `pvtv2 export --format torchscript` writes), not a "
            f"checkpoint; load it with torch.jit.load({str(path)!r}); pvtv2's eval, predict, export and convert "
            f"need the checkpoint it was exported from")


def _read_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a weights file -> (object, safetensors metadata). Never unpickles code."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); the download or save was probably interrupted")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 8 and 0 < int.from_bytes(head[:8], "little") < size
                                         and not head.startswith((b"PK", b"\x80"))):
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        except Exception as e:  # safetensors raises its own error types
            if path.suffix == ".safetensors":
                raise CheckpointError(f"{path}: not a readable safetensors file ({e}); is it truncated or damaged?") from None
    _refuse_exports(path, head)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to load: the file contains pickled Python objects, not only tensors, and loading "
            f"it would run code ({str(e).splitlines()[-1] if str(e) else 'unsafe pickle'}). Re-save it as a plain state "
            f"dict or safetensors from a trusted environment."
        ) from None
    except Exception as e:  # torch raises many types for damaged or foreign files
        hint = "is it truncated or damaged?" if head.startswith((b"PK", b"\x80")) else \
            "it is neither a PyTorch checkpoint nor a safetensors file"
        raise CheckpointError(f"{path}: cannot read checkpoint: {hint} ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj), {}


def _task_model_error(source: str, task: str, what: str) -> CheckpointError:
    """A detector's or segmenter's file given where a classifier or backbone is expected."""
    return CheckpointError(f"{source}: this is a pvtv2 {task} {what}, not a classifier or backbone checkpoint; "
                           f"`pvtv2 {task} eval` and `pvtv2 {task} predict` take its best.safetensors")


def _training_state(raw: Mapping[str, Any], source: str) -> tuple[PVTv2Config | None, list[str] | None, dict[str, Any]]:
    """What a classification ``last.pt`` knows about its model. Its ``config`` entry is the
    *training* config (``aa``, ``amp``, ...), not a model config: the architecture is the
    variant named in ``meta``, with one output per class."""
    meta = raw.get("meta") or {}
    task = meta.get("task", "classify")
    if task != "classify":
        raise _task_model_error(source, task, "training state (last.pt, for --resume)")
    names = raw.get("class_names") or meta.get("classes")
    config = None
    if meta.get("model") in VARIANTS and names:
        config = variant_config(meta["model"], num_classes=len(names))
    train_cfg = raw.get("config") if isinstance(raw.get("config"), Mapping) else {}
    extra = {k: v for k, v in (("input_size", meta.get("img_size")), ("crop_pct", train_cfg.get("eval_crop_pct")))
             if v is not None}
    return config, list(names) if names else None, extra


def _from_contents(raw: Mapping[str, Any], meta: Mapping[str, str], source: str) -> Checkpoint:
    if "task" in meta:  # a detector or segmenter file (save_task_file)
        raise _task_model_error(source, meta["task"], "model")
    config, class_names, extra = None, None, {}
    training_state = raw.get("library") == LIBRARY_TAG and raw.get("kind") == "training_state"
    if training_state:
        config, class_names, extra = _training_state(raw, source)
    try:
        sd = unwrap_state_dict(raw)
        fmt = detect_format(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if training_state and fmt == "official":
        fmt = "pvtv2"  # our layout, with what the run knew about its model
    if "pvtv2_config" in meta:
        fmt = "pvtv2"
        config = config_from_dict(json_entry(meta, "pvtv2_config", source), source, "metadata entry 'pvtv2_config'")
        class_names = json_entry(meta, "class_names", source)
        extra = json_entry(meta, "pvtv2_extra", source, {})
    return Checkpoint(TO_PVTV2[fmt](sd), fmt, source, config, class_names, extra)


def _read_folder(path: Path) -> Checkpoint:
    cfg_path = path / CONFIG_FILE
    weights = next((path / w for w in WEIGHT_FILES if (path / w).exists()), None)
    if weights is None:
        raise CheckpointError(f"{path}: folder has no weights file (looked for {', '.join(WEIGHT_FILES)})")
    if not cfg_path.exists():
        raise CheckpointError(f"{path}: folder has weights but no {CONFIG_FILE}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, found {type(cfg).__name__}")
    ckpt = _from_contents(*_read_file(weights), str(weights))
    ckpt.source = str(path)
    if cfg.get("library") == LIBRARY_TAG:
        ckpt.format = "pvtv2"
        ckpt.config = config_from_dict(cfg.get("config"), cfg_path, "its 'config' entry")
        ckpt.class_names = cfg.get("class_names")
    elif cfg.get("model_type") in ("pvt_v2", "pvt"):  # transformers' PVTv2 / PVTv1
        head = ckpt.state_dict.get("head.weight")
        ckpt.config = transformers_config_to_pvtv2(cfg, num_classes=int(head.shape[0]) if head is not None else 0)
        labels = cfg.get("id2label") or {}
        names = [labels[k] for k in sorted(labels, key=int)] if labels else None
        ckpt.class_names = names if names and len(names) == ckpt.config.num_classes else None
    elif "architecture" in cfg:  # a timm hub repo: the architecture follows from the weights
        pass
    else:
        raise CheckpointError(f"{cfg_path}: neither a pvtv2, a transformers pvt_v2 / pvt nor a timm config")
    return ckpt


def read_checkpoint(source: Any, *, name: str | None = None) -> Checkpoint:
    """Read any checkpoint into the pvtv2 layout, detecting its format.

    ``source``: a file, a folder (``config.json`` + weights), a Hugging Face Hub id
    (``org/name``, from the cache or downloaded), ``True`` (the published weights of variant
    ``name``), an in-memory state dict, or a :class:`Checkpoint` (returned as it is, so a
    caller that needs the file's metadata reads it once and passes the result on).
    """
    if isinstance(source, Checkpoint):
        return source
    source = resolve_source(source, name)
    if isinstance(source, Mapping):
        return _from_contents(dict(source), {}, "<state dict>")
    path = Path(source)
    if path.is_dir():
        return _read_folder(path)
    return _from_contents(*_read_file(path), str(path))


# -- writing ------------------------------------------------------------------------
def _contiguous(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` as one safetensors file, atomically."""
    from safetensors.torch import save_file as st_save

    tensors = _contiguous(tensors)
    atomic_write(path, lambda tmp: st_save(tensors, tmp, metadata=metadata))
    return Path(path)


def save_file(model: PyramidVisionTransformerV2, path: str | os.PathLike, *, class_names: list[str] | None = None,
              extra: dict[str, Any] | None = None) -> Path:
    """The ``pvtv2`` single-file format: safetensors with the config, class names and ``extra``
    (e.g. the input size it was trained at) in its metadata."""
    meta = {"library": LIBRARY_TAG, "pvtv2_config": json.dumps(model.config.to_dict())}
    if extra:
        meta["pvtv2_extra"] = json.dumps(extra)
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names:
        meta["class_names"] = json.dumps(list(names))
    return write_safetensors(model.state_dict(), path, meta)


def save_pretrained(model: PyramidVisionTransformerV2, directory: str | os.PathLike,
                    *, class_names: list[str] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json``; ``create_model(pretrained=directory)`` rebuilds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    save_file(model, directory / "model.safetensors", class_names=names)
    cfg = {"library": LIBRARY_TAG, "config": model.config.to_dict(), "class_names": list(names) if names else None}
    atomic_write(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2)))
    return directory


# -- task models (detectors, segmenters) ----------------------------------------------------
def save_task_file(model: torch.nn.Module, path: str | os.PathLike, *, task: str, backbone: PyramidVisionTransformerV2,
                   class_names: list[str], extra: dict[str, Any] | None = None, **meta: str) -> Path:
    """A task model as safetensors with what rebuilds it in the metadata: ``task``, the
    backbone config, class names, ``extra`` (JSON) and the task's own ``meta`` strings.
    :func:`pvtv2.checkpoint.load_task_file` reads it back."""
    metadata = {"library": LIBRARY_TAG, "task": task, "pvtv2_config": json.dumps(backbone.config.to_dict()),
                "class_names": json.dumps(list(class_names)), "pvtv2_extra": json.dumps(extra or {}), **meta}
    return write_safetensors(model.state_dict(), path, metadata)
