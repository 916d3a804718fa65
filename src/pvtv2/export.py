"""Deployment: ONNX and TorchScript export with a numerical check of the result.

``pvtv2 export CK --format onnx|torchscript --out FILE [--dynamic] [--backbone]``.
Classifier export has one output, ``logits``; backbone export has the four pyramid maps
``stage1`` ... ``stage4`` (strides 4, 8, 16, 32). Files are written to a temporary name,
checked, then renamed: a failed export leaves no half-written file behind.
"""
from __future__ import annotations

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
from .model import PyramidVisionTransformerV2

FEATURE_NAMES = ["stage1", "stage2", "stage3", "stage4"]
CHECK_SIZES = ((224, 224), (193, 257), (512, 384))


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


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"cannot write {out}: folder {parent} is not writable")


def _temp_path(out: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent if str(out.parent) else ".")
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def _staged(out: Path, what: str) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; rename it into place if the block succeeds,
    delete it otherwise (wrapping unexpected errors in :class:`ExportError`)."""
    _check_writable(out)
    tmp = _temp_path(out)
    try:
        yield tmp
        os.replace(tmp, out)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{what} export to {out} failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e


def onnx_session(path: str | Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(model: PyramidVisionTransformerV2, out: str | Path, *, backbone: bool = False, dynamic: bool = True,
                opset: int = 18, check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES, atol: float = 1e-4,
                metadata: dict[str, str] | None = None) -> Path:
    """Export to ONNX (dynamic batch, height and width when ``dynamic``) and check the file
    with onnxruntime against PyTorch on ``check_sizes``; returns the path."""
    import onnx

    out = Path(out)
    model = model.eval()
    module = Backbone(model) if backbone else model
    names = FEATURE_NAMES if backbone else ["logits"]
    sizes = list(check_sizes) if dynamic else [check_sizes[0]]
    example = torch.randn(2, model.config.in_chans, *sizes[0])
    with _staged(out, "ONNX") as tmp:
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
            x = torch.randn(1 + i % 2, model.config.in_chans, h, w, generator=torch.Generator().manual_seed(i))
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
                       check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES[:2], atol: float = 1e-4) -> Path:
    """Trace to TorchScript; the traced graph keeps the input size symbolic, so the file
    works at other sizes (checked on ``check_sizes``, the first one being the trace size)."""
    out = Path(out)
    model = model.eval()
    module = Backbone(model) if backbone else model
    with _staged(out, "TorchScript") as tmp:
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


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str = "onnx", model: str | None = None,
                      backbone: bool = False, dynamic: bool = True, opset: int = 18) -> Path:
    """``pvtv2 export``: build the model from ``checkpoint`` (any supported format) and export it."""
    net = create_model(model, pretrained=checkpoint)
    meta = {}
    if not backbone:
        names = getattr(net, "class_names", None)
        extra = getattr(net, "checkpoint_extra", {})
        meta = {"class_names": json.dumps(names or [str(i) for i in range(net.num_classes)]),
                "input_size": str(extra.get("input_size", 224)), "crop_pct": str(extra.get("crop_pct", 0.875))}
    if format == "onnx":
        return export_onnx(net, out, backbone=backbone, dynamic=dynamic, opset=opset, metadata=meta)
    if format == "torchscript":
        return export_torchscript(net, out, backbone=backbone)
    raise ExportError(f"unknown export format {format!r}; choose onnx or torchscript")
