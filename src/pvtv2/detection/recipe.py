"""The detection recipes, 1x and 3x: every default written once, with where it comes from.

``--schedule`` picks one (``auto``, the default: the kind's official one: 1x for RetinaNet and
Faster/Mask R-CNN, the schedule of its :data:`~pvtv2.detection.kinds.KIND_RECIPES` entry for the
others: 3x for ATSS, GFL, Sparse R-CNN, 1x for FCOS). The recipe fills every option left unset
(``None``); an option given explicitly always wins.

1x sources (whai362/PVT, ``detection/``): ``configs/retinanet_pvt_v2_*_fpn_1x_coco.py`` (AdamW lr
1e-4, weight decay 1e-4, no gradient clipping), ``configs/mask_rcnn_pvt_v2_*_fpn_1x_coco.py`` (AdamW lr
2e-4, weight decay 1e-4), ``pvt_v2.py`` (backbone drop path 0.1), and the MMDetection bases they
name: ``schedule_1x.py`` (12 epochs, lr x0.1 after epochs 8 and 11, linear warm-up over 500
iterations from 0.001x), ``coco_detection.py`` / ``coco_instance.py`` (resize to 1333x800 keeping
the ratio, flip 0.5, 2 images per GPU on 8 GPUs: batch 16).

3x sources (``detection/configs/``): ``mask_rcnn_pvt_v2_b2_fpn_3x_mstrain.py`` (the pipeline
lines 24-61: flip, then the DETR-style multi-scale resize or resize + crop, see
:mod:`pvtv2.detection.augment`; AdamW lr 1e-4, weight decay 0.05 with none on parameters named
``absolute_pos_embed``, ``relative_position_bias_table`` or ``norm``: lines 64-67; lr steps 27 and
33: line 68; 36 epochs: line 69) and ``cascade_mask_rcnn_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` (the
same pipeline and optimiser, lines 84-128, trained in fp16: lines 134-143). whai362/PVT has no 3x
RetinaNet or Faster R-CNN config: those kinds take the Mask R-CNN 3x values. The mask_rcnn 3x file
itself trains in fp32 (``EpochBasedRunner``, line 69); ``--amp auto`` follows the fp16 of the other
3x runs (ATSS, GFL, Cascade Mask R-CNN) on CUDA. The kinds of ``KIND_RECIPES`` take their optimiser
(lr, weight decay and its exclusions, clipping, batch, precision) from their entry under either
schedule; the schedule sets the epochs, lr steps, augmentation and training sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..engine.config import RunConfig, option
from ..errors import ConfigError
from ..model import MIN_INPUT_SIZE
from .kinds import KIND_RECIPES, MULTISCALE_SIZES

#: Learning rate per detector under 1x (torchvision's kinds: their 1x configs; the 3x rate is in
#: ``TORCHVISION_OPTIMIZERS``) and the newer kinds' from their recipes in ``kinds.py``.
DEFAULT_LR = {"retinanet": 1e-4, "fasterrcnn": 2e-4, "maskrcnn": 2e-4,
              **{kind: recipe.lr for kind, recipe in KIND_RECIPES.items()}}

#: mmcv ``paramwise_cfg.custom_keys`` with ``decay_mult=0`` of the 3x configs: a parameter whose
#: full name contains one of these gets no weight decay.
NO_DECAY_KEYS = ("absolute_pos_embed", "relative_position_bias_table", "norm")

#: What a schedule sets for every kind: epochs, lr steps, augmentation, training short sides.
SCHEDULES: dict[str, dict[str, Any]] = {
    "1x": dict(epochs=12, steps=(8, 11), augmentation="resize", min_size=(800,)),
    "3x": dict(epochs=36, steps=(27, 33), augmentation="multiscale_crop", min_size=MULTISCALE_SIZES),
}

#: The optimiser of torchvision's kinds (RetinaNet, Faster/Mask R-CNN) under each schedule; ``amp``
#: is what ``--amp auto`` means on CUDA (``auto``: the engine's choice, bf16 where the GPU has it).
TORCHVISION_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "1x": dict(weight_decay=1e-4, no_decay_keys=(), clip_grad=0.0, batch_size=16, amp="auto"),
    "3x": dict(lr=1e-4, weight_decay=0.05, no_decay_keys=NO_DECAY_KEYS, clip_grad=0.0, batch_size=16, amp="fp16"),
}


def official_schedule(kind: str) -> str:
    """The schedule of ``kind``'s official config: 1x for torchvision's kinds (the paper's Table
    2), the one of its ``KIND_RECIPES`` entry otherwise (36 epochs: 3x)."""
    recipe = KIND_RECIPES.get(kind)
    return "3x" if recipe is not None and recipe.epochs == 36 else "1x"


def recipe_defaults(kind: str, model: str, schedule: str) -> dict[str, Any]:
    """The recipe values of ``kind`` on backbone ``model`` under ``schedule`` (``1x``, ``3x`` or
    ``auto``), keyed by :class:`DetTrainConfig` field, plus ``schedule`` (resolved) and ``amp``
    (what ``--amp auto`` becomes on CUDA)."""
    if schedule != "auto" and schedule not in SCHEDULES:
        raise ConfigError(f"--schedule {schedule}: must be one of auto, {', '.join(SCHEDULES)}")
    name = official_schedule(kind) if schedule == "auto" else schedule
    recipe = KIND_RECIPES.get(kind)
    if recipe is None:
        return {"schedule": name, "lr": DEFAULT_LR.get(kind), **SCHEDULES[name], **TORCHVISION_OPTIMIZERS[name]}
    r = recipe.for_backbone(model)
    values = {"schedule": name, **{k: r[k] for k in ("lr", "weight_decay", "no_decay_keys", "clip_grad", "batch_size", "amp")}}
    if name == official_schedule(kind):
        return {**values, "epochs": r["epochs"], "steps": r["steps"], "augmentation": r["augmentation"],
                "min_size": r["train_min_sizes"]}
    return {**values, **SCHEDULES[name]}


@dataclass
class DetTrainConfig(RunConfig):
    """``pvtv2 detect train`` options (the run options of :class:`~pvtv2.engine.RunConfig`,
    then the recipe). ``None`` where the default depends on the detector and ``schedule``."""

    data: str = option("", "COCO-layout root: annotations/instances_{train,val}2017.json and {train,val}2017/")
    model: str = option("pvt_v2_b2", "backbone variant (pvtv2.list_models())")
    pretrained: str | None = option(None, "backbone weights: a file, folder, hub id, or 'true' for the ImageNet weights")
    output: str = option("runs/detect", "output folder")
    kind: str = option("maskrcnn", "detector", choices=list(DEFAULT_LR))
    train_images: str | None = option(None, "training image folder (default DATA/train2017)")
    train_ann: str | None = option(None, "training instances JSON (default DATA/annotations/instances_train2017.json)")
    val_images: str | None = option(None, "validation image folder (default DATA/val2017)")
    val_ann: str | None = option(None, "validation instances JSON (default DATA/annotations/instances_val2017.json)")
    schedule: str = option("auto", "the recipe: 1x (12 epochs, single scale), 3x (36 epochs, multi-scale + crop), or auto: "
                                   "the kind's official one (1x RetinaNet/Faster/Mask R-CNN/FCOS, 3x ATSS/GFL/Sparse "
                                   "R-CNN); the options below left unset take its values", choices=("auto", "1x", "3x"))
    epochs: int | None = option(None, "epochs (1x: 12, 3x: 36)", min=1)
    steps: tuple[int, ...] | None = option(None, "epochs after which the lr drops by --gamma (1x: 8 11, 3x: 27 33)",
                                           nargs="+", min=0)
    gamma: float = option(0.1, "lr factor at each step (schedule_1x.py)", min=0)
    lr: float | None = option(None, "AdamW learning rate (1x: 1e-4 RetinaNet, 2e-4 Faster/Mask R-CNN; 3x: 1e-4; other "
                                    "kinds: their recipe's)", min=0)
    weight_decay: float | None = option(None, "AdamW weight decay (1x: 1e-4, 3x: 0.05; other kinds: their recipe's)", min=0)
    no_decay_keys: tuple[str, ...] | None = option(None, "no weight decay for parameters whose name contains one of "
                                                         "these (1x: none; 3x: absolute_pos_embed "
                                                         "relative_position_bias_table norm)", nargs="*")
    warmup_iters: int = option(500, "linear warm-up iterations (schedule_1x.py)", min=0)
    warmup_ratio: float = option(0.001, "lr factor at the start of warm-up (schedule_1x.py)", min=0, max=1)
    batch_size: int | None = option(None, "images per step over all processes (16: 2 per GPU x 8 GPUs; Sparse R-CNN "
                                          "B2: 8)", min=1)
    augmentation: str | None = option(None, "resize (1x: flip; the detector resizes) or multiscale_crop (3x: flip, then "
                                            "half the images resized to --crop-resize and cropped to --crop-range "
                                            "before the detector's resize)", choices=("resize", "multiscale_crop"))
    min_size: tuple[int, ...] | None = option(None, "training short sides, one drawn per image; evaluation uses the "
                                                    "last (1x: 800; 3x: 480..800 step 32)", nargs="+", min=MIN_INPUT_SIZE)
    max_size: int = option(1333, "... unless the long side would exceed this", min=MIN_INPUT_SIZE)
    crop_resize: tuple[int, ...] = option((400, 500, 600), "multiscale_crop: short sides before the crop (long side "
                                                           "<= --max-size)", nargs="+", min=1)
    crop_range: tuple[int, int] = option((384, 600), "multiscale_crop: crop height and width drawn from this range "
                                                     "(absolute_range)", nargs=2, min=1)
    flip: float = option(0.5, "horizontal flip probability (coco_detection.py)", min=0, max=1)
    drop_path: float = option(0.1, "backbone stochastic depth rate (detection/pvt_v2.py)", min=0, below=1)
    clip_grad: float | None = option(None, "max gradient norm; 0 disables (the configs: grad_clip=None; Sparse R-CNN 1.0)",
                                     min=0)
    eval_interval: int = option(1, "evaluate every N epochs (and after the last)", min=1)

    def resolved(self) -> "DetTrainConfig":
        """The recipe of ``schedule`` (see :func:`recipe_defaults`) in every option left ``None``."""
        out = replace(self)
        defaults = recipe_defaults(out.kind, out.model, out.schedule)  # an unknown kind is refused by validate()
        for name, value in defaults.items():
            if name not in ("schedule", "amp") and getattr(out, name) is None:
                setattr(out, name, value)
        out.schedule = defaults["schedule"]
        if isinstance(out.min_size, int):
            out.min_size = (out.min_size,)
        for name in ("steps", "no_decay_keys", "min_size", "crop_resize", "crop_range"):
            setattr(out, name, tuple(getattr(out, name)))
        return out

    def validate(self, models) -> None:
        super().validate(models)
        if self.crop_range[0] > self.crop_range[1]:
            raise ConfigError(f"--crop-range {self.crop_range[0]} {self.crop_range[1]}: the first number is the "
                              f"smallest crop side, the second the largest")

    def amp_on(self, device_type: str) -> str:
        """``--amp`` for a device: ``auto`` on CUDA is the recipe's precision (fp16 for the 3x
        recipes, as the official runs; none for Sparse R-CNN, whose config trains in fp32)."""
        if self.amp == "auto" and device_type == "cuda":
            return recipe_defaults(self.kind, self.model, self.schedule)["amp"]
        return self.amp
