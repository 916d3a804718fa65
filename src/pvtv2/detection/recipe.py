"""The detection 1x recipe: every default written once, with where it comes from.

Sources (whai362/PVT, ``detection/``): ``configs/retinanet_pvt_v2_*_fpn_1x_coco.py`` (AdamW lr 1e-4,
weight decay 1e-4, no gradient clipping), ``configs/mask_rcnn_pvt_v2_*_fpn_1x_coco.py`` (AdamW lr
2e-4, weight decay 1e-4), ``pvt_v2.py`` (backbone drop path 0.1), and the MMDetection bases they
name: ``schedule_1x.py`` (12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up over 500
iterations from 0.001x), ``coco_detection.py`` / ``coco_instance.py`` (resize to 1333x800 keeping
the ratio, flip 0.5, 2 images per GPU on 8 GPUs: batch 16).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..engine.config import RunConfig, option
from ..model import MIN_INPUT_SIZE
from .kinds import KIND_RECIPES

#: Learning rate per detector in the official configs (the newer kinds' from their recipes in
#: ``kinds.py``; their 3x schedules and multi-scale augmentation are not wired into training yet:
#: ``pvtv2 detect train`` runs them on the 1x schedule below).
DEFAULT_LR = {"retinanet": 1e-4, "fasterrcnn": 2e-4, "maskrcnn": 2e-4,
              **{kind: recipe.lr for kind, recipe in KIND_RECIPES.items()}}


@dataclass
class DetTrainConfig(RunConfig):
    """``pvtv2 detect train`` options (the run options of :class:`~pvtv2.engine.RunConfig`,
    then the recipe). ``None`` where the default depends on the detector."""

    data: str = option("", "COCO-layout root: annotations/instances_{train,val}2017.json and {train,val}2017/")
    model: str = option("pvt_v2_b2", "backbone variant (pvtv2.list_models())")
    pretrained: str | None = option(None, "backbone weights: a file, folder, hub id, or 'true' for the ImageNet weights")
    output: str = option("runs/detect", "output folder")
    kind: str = option("maskrcnn", "detector", choices=list(DEFAULT_LR))
    train_images: str | None = option(None, "training image folder (default DATA/train2017)")
    train_ann: str | None = option(None, "training instances JSON (default DATA/annotations/instances_train2017.json)")
    val_images: str | None = option(None, "validation image folder (default DATA/val2017)")
    val_ann: str | None = option(None, "validation instances JSON (default DATA/annotations/instances_val2017.json)")
    epochs: int = option(12, "epochs (schedule_1x.py)", min=1)
    steps: tuple[int, int] = option((8, 11), "epochs after which the lr drops by --gamma (schedule_1x.py)", nargs="+", min=0)
    gamma: float = option(0.1, "lr factor at each step (schedule_1x.py)", min=0)
    lr: float | None = option(None, "AdamW learning rate (default 1e-4 RetinaNet, 2e-4 Faster/Mask R-CNN; the configs)", min=0)
    weight_decay: float = option(1e-4, "AdamW weight decay (the configs)", min=0)
    warmup_iters: int = option(500, "linear warm-up iterations (schedule_1x.py)", min=0)
    warmup_ratio: float = option(0.001, "lr factor at the start of warm-up (schedule_1x.py)", min=0, max=1)
    batch_size: int = option(16, "images per step over all processes (2 per GPU x 8 GPUs)", min=1)
    min_size: int = option(800, "resize the short side to this (coco_detection.py img_scale 1333x800)", min=MIN_INPUT_SIZE)
    max_size: int = option(1333, "... unless the long side would exceed this", min=MIN_INPUT_SIZE)
    flip: float = option(0.5, "horizontal flip probability (coco_detection.py)", min=0, max=1)
    drop_path: float = option(0.1, "backbone stochastic depth rate (detection/pvt_v2.py)", min=0, below=1)
    clip_grad: float = option(0.0, "max gradient norm; 0 disables (the configs: grad_clip=None)", min=0)
    eval_interval: int = option(1, "evaluate every N epochs (and after the last)", min=1)

    def resolved(self) -> "DetTrainConfig":
        out = replace(self)
        if out.lr is None:  # an unknown kind is refused by validate()
            recipe = KIND_RECIPES.get(out.kind)
            out.lr = recipe.for_backbone(out.model)["lr"] if recipe is not None else DEFAULT_LR.get(out.kind)
        out.steps = tuple(out.steps)
        return out
