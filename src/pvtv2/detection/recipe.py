"""The detection 1x recipe: every default written once, with where it comes from.

Sources (whai362/PVT, ``detection/``): ``configs/retinanet_pvt_v2_*_fpn_1x_coco.py`` (AdamW lr 1e-4,
weight decay 1e-4, no gradient clipping), ``configs/mask_rcnn_pvt_v2_*_fpn_1x_coco.py`` (AdamW lr
2e-4, weight decay 1e-4), ``pvt_v2.py`` (backbone drop path 0.1), and the MMDetection bases they
name: ``schedule_1x.py`` (12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up over 500
iterations from 0.001x), ``coco_detection.py`` / ``coco_instance.py`` (resize to 1333x800 keeping
the ratio, flip 0.5, 2 images per GPU on 8 GPUs: batch 16).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Learning rate per detector in the official configs.
DEFAULT_LR = {"retinanet": 1e-4, "fasterrcnn": 2e-4, "maskrcnn": 2e-4}


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DetTrainConfig:
    """``pvtv2 detect train`` options. ``None`` where the default depends on the detector."""

    data: str = _f("", "COCO-layout root: annotations/instances_{train,val}2017.json and {train,val}2017/")
    kind: str = _f("maskrcnn", "detector", choices=["retinanet", "fasterrcnn", "maskrcnn"])
    model: str = _f("pvt_v2_b2", "backbone variant (pvtv2.list_models())")
    train_images: str | None = _f(None, "training image folder (default DATA/train2017)")
    train_ann: str | None = _f(None, "training instances JSON (default DATA/annotations/instances_train2017.json)")
    val_images: str | None = _f(None, "validation image folder (default DATA/val2017)")
    val_ann: str | None = _f(None, "validation instances JSON (default DATA/annotations/instances_val2017.json)")
    pretrained: str | None = _f(None, "backbone weights: a file, folder, hub id, or 'true' for the ImageNet weights")
    epochs: int = _f(12, "epochs (schedule_1x.py)")
    steps: tuple[int, int] = _f((8, 11), "epochs after which the lr drops by --gamma (schedule_1x.py)", nargs="+")
    gamma: float = _f(0.1, "lr factor at each step (schedule_1x.py)")
    lr: float | None = _f(None, "AdamW learning rate (default 1e-4 RetinaNet, 2e-4 Faster/Mask R-CNN; the configs)")
    weight_decay: float = _f(1e-4, "AdamW weight decay (the configs)")
    warmup_iters: int = _f(500, "linear warm-up iterations (schedule_1x.py)")
    warmup_ratio: float = _f(0.001, "lr factor at the start of warm-up (schedule_1x.py)")
    batch_size: int = _f(16, "images per step over all processes (2 per GPU x 8 GPUs)")
    min_size: int = _f(800, "resize the short side to this (coco_detection.py img_scale 1333x800)")
    max_size: int = _f(1333, "... unless the long side would exceed this")
    flip: float = _f(0.5, "horizontal flip probability (coco_detection.py)")
    drop_path: float = _f(0.1, "backbone stochastic depth rate (detection/pvt_v2.py)")
    clip_grad: float = _f(0.0, "max gradient norm; 0 disables (the configs: grad_clip=None)")
    eval_interval: int = _f(1, "evaluate every N epochs (and after the last)")
    amp: str = _f("auto", "autocast precision: auto (fp16 on CUDA, none on CPU), bf16, fp16, none",
                  choices=["auto", "bf16", "fp16", "none"])
    output: str = _f("runs/detect", "output folder")
    resume: str | None = _f(None, "resume from a last.pt ('auto': OUTPUT/last.pt)")
    seed: int = _f(0, "random seed")
    workers: int = _f(4, "data loading processes per training process")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N")
    progress: bool = _f(True, "progress bar on a terminal")

    def resolved(self) -> "DetTrainConfig":
        out = DetTrainConfig(**asdict(self))
        if out.lr is None:
            out.lr = DEFAULT_LR[out.kind]
        out.steps = tuple(out.steps)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_fields():
    return fields(DetTrainConfig)
