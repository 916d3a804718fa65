"""Dense prediction latency: our detectors and Semantic FPN against torchvision's ResNet-50 models.

Both models take the same input at the official test scale (:data:`TEST_SIZES`), run in one process,
alternating after warm-up; the ratio is the peer's median over ours (> 1: we are faster). On CUDA each
step's peak memory is what it adds over what was allocated before it, as in :mod:`.speed`. Weights are random (nothing
is downloaded): RetinaNet-style heads start at a 0.01 prior, so both keep few boxes after the 0.05
score threshold and post-processing costs the same small amount on both sides.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from .speed import _autocast, _summary, float32_mode, machine_info, measure_step, on_device

#: torchvision's ResNet-50 model that each of our kinds is compared with.
DETECTION_PEERS = {
    "retinanet": "retinanet_resnet50_fpn",
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "maskrcnn": "maskrcnn_resnet50_fpn",
    "fcos": "fcos_resnet50_fpn",
}
SEGMENTATION_PEERS = ("fcn_resnet50", "deeplabv3_resnet50")
#: (H, W) of the input image at each task's test scale: a COCO image resized to mmdet's (1333, 800)
#: and padded to a multiple of 32; Semantic FPN's 512x512 on ADE20K.
TEST_SIZES = {"detect": (800, 1216), "segment": (512, 512)}


@dataclass
class DenseCase:
    task: str = "detect"  # or "segment"
    kind: str = "retinanet"  # detect: a detector kind; segment: the peer (fcn_resnet50 / deeplabv3_resnet50)
    backbone: str = "pvt_v2_b0"
    img_size: tuple[int, int] | None = None  # (H, W) of the input image; None: TEST_SIZES[task]
    batch_size: int = 1  # images per call
    device: str = "cpu"
    dtype: str = "fp32"
    repeats: int = 5
    warmup: int = 2


def check_case(case: DenseCase) -> None:
    """Refuse a task or kind that has no torchvision peer (a :class:`~pvtv2.errors.ConfigError`)."""
    if case.task == "detect" and case.kind not in DETECTION_PEERS:
        raise ConfigError(f"no torchvision peer for detector kind {case.kind!r}; choose one of {', '.join(DETECTION_PEERS)}")
    if case.task == "segment" and case.kind not in SEGMENTATION_PEERS:
        raise ConfigError(f"segmentation peer must be one of {', '.join(SEGMENTATION_PEERS)}, got {case.kind!r}")
    if case.task not in ("detect", "segment"):
        raise ConfigError(f"task must be 'detect' or 'segment', got {case.task!r}")


def _models(case: DenseCase) -> tuple[nn.Module, nn.Module, str]:
    check_case(case)
    if case.task == "detect":
        import torchvision.models.detection as tvd

        from ..detection import create_detector

        ours = create_detector(case.kind, case.backbone, num_classes=80)
        peer_name = DETECTION_PEERS[case.kind]
        peer = getattr(tvd, peer_name)(weights=None, weights_backbone=None, num_classes=81)
        return ours, peer, peer_name
    import torchvision.models.segmentation as tvs

    from ..segmentation import create_segmenter

    ours = create_segmenter(case.backbone, num_classes=150)
    peer = getattr(tvs, case.kind)(weights=None, weights_backbone=None, num_classes=150, aux_loss=False)
    return ours, peer, case.kind


def _step(model: nn.Module, case: DenseCase, device: torch.device) -> Callable[[], Any]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(case.batch_size, 3, *case.img_size, generator=g).to(device)
    detect = case.task == "detect"
    x = list(images) if detect else images

    def step():
        with float32_mode(device, case.dtype), torch.inference_mode(), _autocast(device, case.dtype):
            out = model(x)
        return out if detect else out["out"] if isinstance(out, dict) else out
    return step


def run_dense_case(case: DenseCase, *, seed: int = 0) -> dict[str, Any]:
    """Median latency of ours and the torchvision peer on one input batch; ``ratio`` = peer / ours.
    On CUDA also ``peak_memory_mb`` per model (``None`` on the CPU)."""
    if case.img_size is None:
        case = replace(case, img_size=TEST_SIZES.get(case.task))  # an unknown task is refused by _models
    device = torch.device(case.device)
    with on_device(device):
        return _run_dense_case(case, device, seed)


def _run_dense_case(case: DenseCase, device: torch.device, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    ours, peer, peer_name = _models(case)
    steps = {"ours": _step(ours.to(device).eval(), case, device), "peer": _step(peer.to(device).eval(), case, device)}
    for _ in range(case.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    peak: dict[str, float | None] = {"ours": None, "peer": None}
    for _ in range(case.repeats):
        for name, step in steps.items():  # alternate, so drifts in machine load hit both
            seconds, added = measure_step(step, device)
            times[name].append(seconds)
            if added is not None:
                peak[name] = max(peak[name] or 0.0, added)
    result = {"case": asdict(case), "machine": machine_info(case.device), "peer_name": peer_name,
              "params": {"ours": sum(p.numel() for p in ours.parameters()),
                         "peer": sum(p.numel() for p in peer.parameters())}}
    for name in steps:
        result[name] = {**_summary(times[name], case.batch_size), "peak_memory_mb": peak[name]}
    result["ratio"] = result["peer"]["median_s"] / result["ours"]["median_s"]
    return result


def format_dense(result: dict[str, Any]) -> str:
    c = result["case"]

    def mem(r):
        return "" if r.get("peak_memory_mb") is None else f" {r['peak_memory_mb']:.0f} MiB"

    return (f"{c['task']} {c['kind']} {c['backbone']} {c['batch_size']}x {c['img_size'][0]}x{c['img_size'][1]} "
            f"{c['dtype']} on {c['device']}: ours {result['ours']['latency_ms']:.0f} ms{mem(result['ours'])}, "
            f"{result['peer_name']} {result['peer']['latency_ms']:.0f} ms{mem(result['peer'])}, {result['ratio']:.2f}x")
