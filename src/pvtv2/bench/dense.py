"""Dense prediction latency: our detectors and Semantic FPN against torchvision's ResNet-50 models.

Both models take the same input at the official test scale (:data:`TEST_SIZES`), run in one process,
alternating after warm-up; the ratio is the peer's median over ours (> 1: we are faster). On CUDA each
step's peak memory is what it adds over what was allocated before it, as in :mod:`.speed`. Weights are random (nothing
is downloaded), so a score threshold would keep a different, arbitrary number of boxes on each side (Mask R-CNN
pastes a mask per box: torchvision's random Mask R-CNN kept 100 boxes per image where ours kept a few, and looked
3x slower). Both detectors therefore run with their score threshold at 0 and keep exactly
:data:`DETECTIONS_PER_IMAGE` boxes per image, as a COCO evaluation does; the result records the count on
each side. Both also take the input at its own size (their resize is a no-op), so a small ``img_size``
really measures a small image.

Ours is also timed in plain eager float32 (PyTorch's own kernels: :mod:`pvtv2.layers.onednn` off), the
path every user had before the CPU fast paths; ``speedup`` is that time over ours in ``dtype``.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator

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

        size = dict(min_size=min(case.img_size), max_size=max(case.img_size))  # the input is at its test scale
        ours = create_detector(case.kind, case.backbone, num_classes=80, **size)
        peer_name = DETECTION_PEERS[case.kind]
        peer = getattr(tvd, peer_name)(weights=None, weights_backbone=None, num_classes=81, **size)
        return keep_every_detection(ours), keep_every_detection(peer), peer_name
    import torchvision.models.segmentation as tvs

    from ..segmentation import create_segmenter

    ours = create_segmenter(case.backbone, num_classes=150)
    peer = getattr(tvs, case.kind)(weights=None, weights_backbone=None, num_classes=150, aux_loss=False)
    return ours, peer, case.kind


#: Boxes per image that both detectors keep in the benchmark (COCO's evaluation reads the best 100).
DETECTIONS_PER_IMAGE = 100


def keep_every_detection(model: nn.Module) -> nn.Module:
    """Set every score threshold in ``model`` (torchvision's ``score_thresh`` on RetinaNet, FCOS and the RoI
    heads) to 0 and the boxes kept to :data:`DETECTIONS_PER_IMAGE`, so that inference keeps that many boxes per
    image whatever the weights."""
    found = False
    for module in model.modules():
        if isinstance(getattr(module, "score_thresh", None), float):
            module.score_thresh, found = 0.0, True
            module.detections_per_img = DETECTIONS_PER_IMAGE
    if not found:
        raise ConfigError(f"{type(model).__name__} has no score_thresh to set: cannot fix its number of detections")
    return model


def _detections(out: Any) -> float | None:
    """Mean boxes per image in a detector's output (None for a segmenter's)."""
    if isinstance(out, list) and out and isinstance(out[0], dict) and "boxes" in out[0]:
        return sum(len(o["boxes"]) for o in out) / len(out)
    return None


@contextlib.contextmanager
def plain_kernels(model: nn.Module) -> Iterator[None]:
    """Within the block, every module of ``model`` that may take oneDNN's kernels
    (:mod:`pvtv2.layers.onednn`) takes PyTorch's own; their settings are restored after it."""
    settings = [(m, m.onednn) for m in model.modules() if hasattr(m, "onednn")]
    for m, _ in settings:
        m.onednn = False
    try:
        yield
    finally:
        for m, setting in settings:
            m.onednn = setting


def _step(model: nn.Module, case: DenseCase, device: torch.device, *, plain: bool = False) -> Callable[[], Any]:
    """One inference call; ``plain``: in eager float32 with PyTorch's own kernels whatever ``case.dtype``."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(case.batch_size, 3, *case.img_size, generator=g).to(device)
    detect = case.task == "detect"
    x = list(images) if detect else images
    dtype = "fp32" if plain else case.dtype

    def step():
        kernels = plain_kernels(model) if plain else contextlib.nullcontext()
        with float32_mode(device, dtype), torch.inference_mode(), _autocast(device, dtype), kernels:
            out = model(x)
        return out if detect else out["out"] if isinstance(out, dict) else out
    return step


def run_dense_case(case: DenseCase, *, seed: int = 0) -> dict[str, Any]:
    """Median latency of ours and the torchvision peer on one input batch; ``ratio`` = peer / ours;
    ``speedup`` = ours in plain eager float32 (``eager_fp32``) / ours. On CUDA also ``peak_memory_mb``
    per model (``None`` on the CPU)."""
    if case.img_size is None:
        case = replace(case, img_size=TEST_SIZES.get(case.task))  # an unknown task is refused by _models
    device = torch.device(case.device)
    with on_device(device):
        return _run_dense_case(case, device, seed)


def _run_dense_case(case: DenseCase, device: torch.device, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    ours, peer, peer_name = _models(case)
    ours, peer = ours.to(device).eval(), peer.to(device).eval()
    steps = {"ours": _step(ours, case, device), "eager_fp32": _step(ours, case, device, plain=True),
             "peer": _step(peer, case, device)}
    boxes = {name: _detections(step()) for name, step in steps.items()}  # also the first warm-up step
    for _ in range(max(case.warmup - 1, 0)):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    peak: dict[str, float | None] = dict.fromkeys(steps)
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
        result[name] = {**_summary(times[name], case.batch_size), "peak_memory_mb": peak[name],
                        "detections_per_image": boxes[name]}
    result["ratio"] = result["peer"]["median_s"] / result["ours"]["median_s"]
    result["speedup"] = result["eager_fp32"]["median_s"] / result["ours"]["median_s"]
    return result


def format_dense(result: dict[str, Any]) -> str:
    c = result["case"]

    def mem(r):
        return "" if r.get("peak_memory_mb") is None else f" {r['peak_memory_mb']:.0f} MiB"

    def boxes(r):
        n = r.get("detections_per_image")
        return "" if n is None else f" {n:.0f} boxes/img"

    return (f"{c['task']} {c['kind']} {c['backbone']} {c['batch_size']}x {c['img_size'][0]}x{c['img_size'][1]} "
            f"{c['dtype']} on {c['device']}: ours {result['ours']['latency_ms']:.0f} ms{mem(result['ours'])}"
            f"{boxes(result['ours'])}, {result['peer_name']} {result['peer']['latency_ms']:.0f} ms"
            f"{mem(result['peer'])}{boxes(result['peer'])}, {result['ratio']:.2f}x; "
            f"{result['speedup']:.2f}x ours in plain eager fp32 ({result['eager_fp32']['latency_ms']:.0f} ms)")
