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

Ours is also timed in plain eager float32 (PyTorch's own kernels and layouts, torchvision's candidate selection:
:func:`plain_paths`), the path every user had before the CPU fast paths; ``speedup`` is that time over ours
in ``dtype``.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .speed import _autocast, _summary, float32_mode, machine_info, measure_step, on_device, profile_step

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
    profile: bool = False  # also where our step's time goes (speed.profile_step)


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


#: Module attributes that switch a CPU fast path of this package, and their value in plain eager float32:
#: oneDNN's kernels (pvtv2.layers.onednn), channels-last necks, RetinaNet's pruned candidate selection, RoI Align
#: over several threads (pvtv2.detection.roi_align).
FAST_PATH_SWITCHES = {"onednn": False, "channels_last": False, "prune_candidates": False, "parallel": False}


@contextlib.contextmanager
def plain_paths(model: nn.Module) -> Iterator[None]:
    """Within the block, every CPU fast path of ``model`` (:data:`FAST_PATH_SWITCHES`) is off, as in plain
    eager PyTorch before them; the modules' settings are restored after it."""
    settings = [(m, name, getattr(m, name)) for m in model.modules() for name in FAST_PATH_SWITCHES if hasattr(m, name)]
    for m, name, _ in settings:
        setattr(m, name, FAST_PATH_SWITCHES[name])
    try:
        yield
    finally:
        for m, name, value in settings:
            setattr(m, name, value)


def _step(model: nn.Module, case: DenseCase, device: torch.device, *, plain: bool = False) -> Callable[[], Any]:
    """One inference call; ``plain``: in eager float32 without the CPU fast paths (:func:`plain_paths`)
    whatever ``case.dtype``."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(case.batch_size, 3, *case.img_size, generator=g).to(device)
    detect = case.task == "detect"
    x = list(images) if detect else images
    dtype = "fp32" if plain else case.dtype

    def step():
        paths = plain_paths(model) if plain else contextlib.nullcontext()
        with float32_mode(device, dtype), torch.inference_mode(), _autocast(device, dtype), paths:
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
    if case.profile:
        result["profile"] = profile_step(steps["ours"])
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


def published_accuracy(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """``(ours, peer)`` published accuracy for a :func:`run_dense_case` result: our detector's COCO box AP
    on its backbone or Semantic FPN's ADE20K mIoU (the registry's ``paper_accuracy``), and the torchvision
    peer's COCO box AP (its weights' metadata). ``None`` where none is published: our FCOS and Faster
    R-CNN on PVTv2, and the segmentation peers, which torchvision trained on COCO with VOC labels, not ADE20K."""
    import torchvision

    from ..registry import get_variant

    case = result["case"]
    key = case["kind"] if case["task"] == "detect" else "semantic_fpn"
    ours = get_variant(case["backbone"]).paper_accuracy.get(key)
    peer = None
    if case["task"] == "detect":
        metrics = torchvision.models.get_model_weights(result["peer_name"]).DEFAULT.meta.get("_metrics", {})
        peer = metrics.get("COCO-val2017", {}).get("box_map")
    return ours, peer


def plot_speed_accuracy(results: list[dict[str, Any]], path: str | Path) -> Path:
    """The speed-accuracy figure: published accuracy (:func:`published_accuracy`) against the measured
    latency of every :func:`run_dense_case` result in ``results``, one panel per task. Ours on its fast path
    (filled) and in plain eager float32 (hollow) per detector kind across backbones; the torchvision peers as
    stars. Written as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = [t for t in ("detect", "segment") if any(r["case"]["task"] == t for r in results)]
    if not tasks:
        raise ConfigError("no dense-prediction results to plot")
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in results if r["case"]["task"] == task]
        kinds = sorted({r["case"]["kind"] for r in rows}) if task == "detect" else ["semantic_fpn"]
        for i, kind in enumerate(kinds):
            colour = f"C{i}"
            same = {}  # one point per backbone (a segmenter is timed once per peer)
            for r in rows:
                if task == "segment" or r["case"]["kind"] == kind:
                    same.setdefault(r["case"]["backbone"], r)
            mine = [(r, published_accuracy(r)[0]) for r in same.values()]
            mine = sorted(((r, a) for r, a in mine if a is not None), key=lambda ra: ra[0]["ours"]["median_s"])
            if not mine:
                continue
            label = "Semantic FPN" if task == "segment" else kind
            fast = [r["ours"]["latency_ms"] / 1000 for r, _ in mine]
            plain = [r["eager_fp32"]["latency_ms"] / 1000 for r, _ in mine]
            acc = [a for _, a in mine]
            ax.plot(fast, acc, "o-", color=colour, label=f"{label}, {mine[0][0]['case']['dtype']}")
            ax.plot(plain, acc, "o--", color=colour, mfc="none", label=f"{label}, plain eager fp32")
            for (r, a), x in zip(mine, fast):
                ax.annotate(r["case"]["backbone"].replace("pvt_v2_", ""), (x, a), textcoords="offset points",
                            xytext=(4, -10), fontsize=8)
        peers = {}
        for r in rows:
            acc = published_accuracy(r)[1]
            if acc is not None:
                peers.setdefault(r["peer_name"], []).append((r["peer"]["latency_ms"] / 1000, acc))
        for j, (name, points) in enumerate(sorted(peers.items())):
            xs = sorted(x for x, _ in points)
            ax.plot(xs[len(xs) // 2], points[0][1], "*", ms=13, color=f"C{len(kinds) + j}",
                    label=f"torchvision {name}, {rows[0]['case']['dtype']}")
        size = rows[0]["case"]["img_size"]
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(matplotlib.ticker.FormatStrFormatter("%.2g"))
        ax.set_xlabel(f"latency, s per {size[0]}x{size[1]} image ({rows[0]['machine'].get('threads', '?')} CPU threads)")
        ax.set_ylabel("published COCO box AP" if task == "detect" else "published ADE20K mIoU")
        ax.set_title("Detectors (COCO val2017)" if task == "detect" else "Semantic FPN (ADE20K val)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
