"""Dense prediction latency: our detectors and Semantic FPN against torchvision's ResNet-50 models.

Both models take the same input at the official test scale, run in one process, alternating after
warm-up; the ratio is the peer's median over ours (> 1: we are faster). Weights are random (nothing
is downloaded): RetinaNet-style heads start at a 0.01 prior, so both keep few boxes after the 0.05
score threshold and post-processing costs the same small amount on both sides.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from .speed import DTYPES, _summary, _time_once, machine_info

#: torchvision's ResNet-50 model that each of our kinds is compared with.
DETECTION_PEERS = {
    "retinanet": "retinanet_resnet50_fpn",
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "maskrcnn": "maskrcnn_resnet50_fpn",
    "fcos": "fcos_resnet50_fpn",
}
SEGMENTATION_PEERS = ("fcn_resnet50", "deeplabv3_resnet50")


@dataclass
class DenseCase:
    task: str = "detect"  # or "segment"
    kind: str = "retinanet"  # detect: a detector kind; segment: the peer (fcn_resnet50 / deeplabv3_resnet50)
    backbone: str = "pvt_v2_b0"
    img_size: tuple[int, int] = (800, 1216)  # (H, W) of the input image
    device: str = "cpu"
    dtype: str = "fp32"
    repeats: int = 5
    warmup: int = 2


def _models(case: DenseCase) -> tuple[nn.Module, nn.Module, str]:
    if case.task == "detect":
        import torchvision.models.detection as tvd

        from ..detection import create_detector

        if case.kind not in DETECTION_PEERS:
            raise ValueError(f"no torchvision peer for detector kind {case.kind!r}; choose one of {', '.join(DETECTION_PEERS)}")
        ours = create_detector(case.kind, case.backbone, num_classes=80)
        peer_name = DETECTION_PEERS[case.kind]
        peer = getattr(tvd, peer_name)(weights=None, weights_backbone=None, num_classes=81)
        return ours, peer, peer_name
    if case.task == "segment":
        import torchvision.models.segmentation as tvs

        from ..segmentation import create_segmenter

        if case.kind not in SEGMENTATION_PEERS:
            raise ValueError(f"segmentation peer must be one of {', '.join(SEGMENTATION_PEERS)}, got {case.kind!r}")
        ours = create_segmenter(case.backbone, num_classes=150)
        peer = getattr(tvs, case.kind)(weights=None, weights_backbone=None, num_classes=150, aux_loss=False)
        return ours, peer, case.kind
    raise ValueError(f"task must be 'detect' or 'segment', got {case.task!r}")


def _step(model: nn.Module, case: DenseCase, device: torch.device) -> Callable[[], Any]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, *case.img_size, generator=g).to(device)
    detect = case.task == "detect"
    x = [image] if detect else image[None]
    dtype = DTYPES[case.dtype]

    def step():
        cast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            out = model(x)
        return out if detect else out["out"] if isinstance(out, dict) else out
    return step


def run_dense_case(case: DenseCase, *, seed: int = 0) -> dict[str, Any]:
    """Median latency of ours and the torchvision peer on one input; ``ratio`` = peer / ours."""
    device = torch.device(case.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(seed)
    ours, peer, peer_name = _models(case)
    steps = {"ours": _step(ours.to(device).eval(), case, device), "peer": _step(peer.to(device).eval(), case, device)}
    for _ in range(case.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(case.repeats):
        for name, step in steps.items():
            times[name].append(_time_once(step, device))
    result = {"case": asdict(case), "machine": machine_info(case.device), "peer_name": peer_name,
              "ours": _summary(times["ours"], 1), "peer": _summary(times["peer"], 1),
              "params": {"ours": sum(p.numel() for p in ours.parameters()),
                         "peer": sum(p.numel() for p in peer.parameters())}}
    result["ratio"] = result["peer"]["median_s"] / result["ours"]["median_s"]
    return result


def format_dense(result: dict[str, Any]) -> str:
    c = result["case"]
    return (f"{c['task']} {c['kind']} {c['backbone']} {c['img_size'][0]}x{c['img_size'][1]} {c['dtype']} on {c['device']}: "
            f"ours {result['ours']['latency_ms']:.0f} ms, {result['peer_name']} {result['peer']['latency_ms']:.0f} ms, "
            f"{result['ratio']:.2f}x")
