"""Deployment: ONNX and TorchScript export with a numerical check of the result.

``pvtv2 export CK --format onnx|torchscript --out FILE [--dynamic] [--backbone]``.
Classifier export has one output, ``logits``; backbone export has the four pyramid maps
``stage1`` ... ``stage4`` (strides 4, 8, 16, 32). Files are written to a temporary name,
checked, then renamed: a failed export leaves no half-written file behind.

Refused up front with an :class:`ExportError`: an output file that exists (unless
``overwrite=True``), the source checkpoint as the output (always), a suffix that does not fit
the format (:data:`SUFFIXES`), an ONNX opset outside :data:`SUPPORTED_OPSETS`.
"""
from __future__ import annotations

import copy

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from .errors import ExportError
from .factory import create_model
from .fileio import new_file_mode
from .model import PyramidVisionTransformerV2

FEATURE_NAMES = ["stage1", "stage2", "stage3", "stage4"]
CHECK_SIZES = ((224, 224), (193, 257), (512, 384))
#: File suffixes each format may be written under (so that no TorchScript file is named .onnx).
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".torchscript")}
#: ONNX opsets the pinned torch exporter writes and onnxruntime runs: below 18 torch's
#: version conversion fails on this model (and falls back to 18 silently); above 25 the
#: exporter emits operators no runtime here registers.
SUPPORTED_OPSETS = range(18, 26)


class Backbone(nn.Module):
    """Wraps a model so that ``forward`` returns the tuple of 4 pyramid maps."""

    def __init__(self, model: PyramidVisionTransformerV2):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(f.contiguous() for f in self.model.forward_features(x))


def _outputs(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(x)
    return [out] if isinstance(out, torch.Tensor) else list(out)


def check_output(out: str | Path, format: str, *, overwrite: bool = False, source: str | Path | None = None) -> Path:
    """Refuse, with an :class:`ExportError` saying how to fix it, an output that export must
    not write: a suffix that does not fit ``format``, the ``source`` checkpoint itself, an
    existing file (unless ``overwrite``), a folder, a missing or unwritable parent folder."""
    out = Path(out)
    if format not in SUFFIXES:
        raise ExportError(f"unknown export format {format!r}; choose onnx or torchscript")
    if out.suffix.lower() not in SUFFIXES[format]:
        raise ExportError(f"{out}: {format} exports are written to a file ending in {' or '.join(SUFFIXES[format])}, "
                          f"not {out.suffix or 'a name without suffix'}; rename the output (or choose the other format)")
    if source is not None and Path(source).exists() and out.exists() and os.path.samefile(source, out):
        raise ExportError(f"{out} is the source checkpoint: export never overwrites its source; choose another output")
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give the output file's name")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; choose another output, or replace it with --overwrite (overwrite=True)")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise ExportError(f"cannot write {out}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise ExportError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {out}: folder {parent} is not writable")
    return out


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"ONNX opset {opset} is not supported: choose {SUPPORTED_OPSETS.start} to "
                          f"{SUPPORTED_OPSETS.stop - 1} (default 18)")
    return opset


def _temp_path(out: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would outlive the rename
    return Path(tmp)


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, out)
        return
    try:  # a hard link fails if ``out`` appeared meanwhile, where a rename would replace it
        os.link(tmp, out)
    except FileExistsError:
        raise ExportError(f"{out} appeared during the export; choose another output, or pass --overwrite") from None
    except OSError:  # a file system without hard links
        if out.exists():
            raise ExportError(f"{out} appeared during the export; choose another output, or pass --overwrite") from None
        os.replace(tmp, out)
        return
    tmp.unlink()


@contextlib.contextmanager
def _staged(out: Path, what: str, format: str, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; move it into place if the block succeeds,
    delete it otherwise (wrapping unexpected errors in :class:`ExportError`)."""
    check_output(out, format, overwrite=overwrite)
    tmp = _temp_path(out)
    try:
        yield tmp
        _move_into_place(tmp, out, overwrite)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{what} export to {out} failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e


def onnx_session(path: str | Path, *, threads: int = 0, spinning: bool = True):
    """ONNX Runtime's CPU session for ``path``; ``threads``: intra-op threads (0: ORT's default);
    ``spinning=False``: its pool threads do not spin between runs (for timing beside another model)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _cpu_copy(model: PyramidVisionTransformerV2) -> PyramidVisionTransformerV2:
    """Exports are traced and checked on the CPU in float32 (the file is device-independent);
    a model on a GPU or in another dtype is copied, so the caller's model stays as it was."""
    p = next(model.parameters(), None)
    if p is None or (p.device.type == "cpu" and p.dtype == torch.float32):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def export_onnx(model: PyramidVisionTransformerV2, out: str | Path, *, backbone: bool = False, dynamic: bool = True,
                opset: int = 18, check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES, atol: float = 1e-4,
                metadata: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Export to ONNX and check the file with onnxruntime against PyTorch on ``check_sizes``;
    returns the path. ``dynamic``: batch, height and width are free; otherwise the file takes
    ``(1, C, *check_sizes[0])`` only. ``opset`` in :data:`SUPPORTED_OPSETS`."""
    import onnx

    out = Path(out)
    check_opset(opset)
    model = _cpu_copy(model).eval()
    module = Backbone(model) if backbone else model
    names = FEATURE_NAMES if backbone else ["logits"]
    sizes = list(check_sizes) if dynamic else [check_sizes[0]]
    example = torch.randn(2 if dynamic else 1, model.config.in_chans, *sizes[0])
    with _staged(out, "ONNX", "onnx", overwrite) as tmp:
        kwargs = {}
        if dynamic:
            batch, height, width = torch.export.Dim("batch", min=1), torch.export.Dim("height", min=32), torch.export.Dim("width", min=32)
            kwargs["dynamic_shapes"] = {"x": {0: batch, 2: height, 3: width}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                        output_names=names, verbose=False, **kwargs)
            program.save(str(tmp))
        proto = onnx.load(str(tmp))
        for key, value in {"library": "pvtv2", "config": json.dumps(model.config.to_dict()),
                           "outputs": json.dumps(names), **(metadata or {})}.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        session = onnx_session(tmp)
        for i, (h, w) in enumerate(sizes):
            batch = 1 + i % 2 if dynamic else 1  # a static file takes the example's shape only
            x = torch.randn(batch, model.config.in_chans, h, w, generator=torch.Generator().manual_seed(i))
            expected = _outputs(module, x)
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            for name, e, g in zip(names, expected, got):
                if tuple(g.shape) != tuple(e.shape):
                    raise ExportError(f"ONNX output {name} has shape {tuple(g.shape)} at {h}x{w}, PyTorch {tuple(e.shape)}")
                diff = (torch.from_numpy(g) - e).abs().max().item()
                if diff > atol:
                    raise ExportError(f"ONNX output {name} differs from PyTorch by {diff:.2e} at {h}x{w} (limit {atol})")
    return out


def export_torchscript(model: PyramidVisionTransformerV2, out: str | Path, *, backbone: bool = False,
                       check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES[:2], atol: float = 1e-4,
                       overwrite: bool = False) -> Path:
    """Trace to TorchScript; the traced graph keeps the input size symbolic, so the file
    works at other sizes (checked on ``check_sizes``, the first one being the trace size)."""
    out = Path(out)
    model = _cpu_copy(model).eval()
    module = Backbone(model) if backbone else model
    with _staged(out, "TorchScript", "torchscript", overwrite) as tmp:
        example = torch.randn(1, model.config.in_chans, *check_sizes[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp))
        for i, (h, w) in enumerate(list(check_sizes) + [(160, 96)]):
            x = torch.randn(2, model.config.in_chans, h, w, generator=torch.Generator().manual_seed(i))
            for e, g in zip(_outputs(module, x), _outputs(loaded, x)):
                if e.shape != g.shape or (e - g).abs().max().item() > atol:
                    raise ExportError(f"TorchScript output differs from PyTorch at {h}x{w}")
    return out


def classifier_metadata(model: PyramidVisionTransformerV2) -> dict[str, str]:
    """The ONNX metadata ``pvtv2 predict`` reads back: class names (the checkpoint's; the
    ImageNet-1K names for 1000 classes without names, else the indices), input size, crop."""
    from .classification.labels import class_names  # the classification package, only when exporting one

    extra = getattr(model, "checkpoint_extra", {})
    return {"class_names": json.dumps(class_names(getattr(model, "class_names", None), model.num_classes)),
            "input_size": str(extra.get("input_size", 224)), "crop_pct": str(extra.get("crop_pct", 0.875))}


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str = "onnx", model: str | None = None,
                      backbone: bool = False, dynamic: bool = True, opset: int = 18, overwrite: bool = False) -> Path:
    """``pvtv2 export``: build the model from ``checkpoint`` (any supported format) and export it.
    The output is checked (:func:`check_output`, :func:`check_opset`) before the model is built."""
    check_output(out, format, overwrite=overwrite, source=checkpoint)
    if format == "onnx":
        check_opset(opset)
    net = create_model(model, pretrained=checkpoint)
    meta = {} if backbone else classifier_metadata(net)
    if format == "onnx":
        return export_onnx(net, out, backbone=backbone, dynamic=dynamic, opset=opset, metadata=meta, overwrite=overwrite)
    return export_torchscript(net, out, backbone=backbone, overwrite=overwrite)
