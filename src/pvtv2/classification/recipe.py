"""The classification recipes: every default written once, with where it comes from.

``pvtv2 train --recipe NAME`` picks one of three presets (:data:`RECIPES`); a flag given
explicitly (a field set to anything but ``None``) always wins over the preset, and
``config.json`` records the preset's name and every resolved value.

* ``imagenet`` (default): the official PVTv2 ImageNet-1K recipe. Sources (whai362/PVT,
  ``classification/``): ``main.py`` argument defaults (DeiT's recipe), ``datasets.py``
  (transforms), ``configs/pvt_v2/pvt_v2_b*.py`` (per-variant drop path and gradient clipping).
* ``finetune``: transfer from the published ImageNet weights to one's own classes, with the
  settings established fine-tuning recipes use (each value's source beside it below).
* ``small``: from scratch on small images (up to about 64 px) and small datasets: the settings
  ``pvtv2 demo`` trains with, scaled from the official recipe to that regime.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..engine.config import RunConfig, option
from ..errors import ConfigError
from ..model import DEFAULT_DROP_PATH, MIN_INPUT_SIZE
from ..registry import REGISTRY

#: Per-variant gradient clipping of configs/pvt_v2/*.py (0: none), from :mod:`pvtv2.registry`.
DEFAULT_CLIP_GRAD = {name: v.clip_grad for name, v in REGISTRY.items()}

#: The settings each preset decides. ``None``: the variant's own (drop path, clipping:
#: :mod:`pvtv2.registry`) or no initial weights (``pretrained``). ``lr`` is for a total batch
#: of 512: a run uses ``lr * batch * processes / 512`` (main.py's linear scaling, every preset).
RECIPES: dict[str, dict[str, Any]] = {
    # whai362/PVT classification/main.py and datasets.py (DeiT's recipe), configs/pvt_v2.
    "imagenet": dict(
        pretrained=None, img_size=224, epochs=300, batch_size=128, lr=5e-4, min_lr=1e-5, warmup_epochs=5,
        sched_per_step=False, layer_decay=1.0, drop_path=None, clip_grad=None, aa="rand-m9-mstd0.5-inc1",
        color_jitter=0.4, scale=(0.08, 1.0), hflip=True, mixup=0.8, cutmix=1.0, reprob=0.25, repeated_aug=True,
        eval_crop_pct=224 / 256,
    ),
    "finetune": dict(
        pretrained="true",  # the published ImageNet-1K weights; the head is replaced for the new classes
        img_size=224,  # the size the published weights were trained at
        epochs=30,  # ConvNeXt's ImageNet-22K -> 1K fine-tuning; DeiT's 384 px fine-tuning (README)
        batch_size=128,  # as imagenet: per process
        lr=2e-4,  # timm's vit_base_patch16_224.augreg2_in21k_ft_in1k fine-tune: lr 2e-4, batch 512
        min_lr=1e-6,  # MAE's and BEiT's fine-tuning scripts (--min_lr 1e-6)
        warmup_epochs=2,  # short: MAE fine-tunes warm up 5 of 100 epochs; ConvNeXt's fine-tune has none
        sched_per_step=True,  # timm's fine-tunes step the schedule per update (--sched-on-updates)
        layer_decay=0.7,  # the same timm fine-tune (--layer-decay 0.7); BEiT 0.65, ConvNeXt 0.8
        drop_path=0.0,  # DeiT's transfer recipe removes stochastic depth (facebookresearch/deit#45)
        clip_grad=None,  # the variant's own
        aa="rand-m9-mstd0.5-inc1",  # kept: ConvNeXt's fine-tune (9, 0.5); DeiT's transfer keeps the rest
        color_jitter=0.4,
        scale=(0.08, 1.0),
        hflip=True,
        mixup=0.0, cutmix=0.0,  # ConvNeXt's fine-tune: no Mixup, no CutMix
        reprob=0.0,  # DeiT's transfer recipe removes random erasing (deit#45)
        repeated_aug=False,  # timm's fine-tune (aug_repeats 0); ConvNeXt's recipe has none
        eval_crop_pct=224 / 256,  # the published weights' evaluation (datasets.py)
    ),
    # src/pvtv2/demo.py's recipe, the official one scaled to a tiny problem; on a 1,400-image set of
    # 32 px images it reached 96% top-1 where imagenet's reached 90% (issue #20).
    "small": dict(
        pretrained=None,
        img_size=64,  # images up to about 64 px are not shrunk; give your images' side (the demo: 48)
        epochs=30, batch_size=32,
        lr=1.6e-2,  # 1e-3 at the batch of 32 (linear scaling from imagenet's 5e-4 would give 3e-5)
        min_lr=1e-5, warmup_epochs=2, sched_per_step=True,  # a short run: warm up and decay per update
        layer_decay=1.0,
        drop_path=0.0, clip_grad=1.0,
        aa="none", color_jitter=0.0, mixup=0.0, cutmix=0.0, reprob=0.0,  # ImageNet's regularisers off
        scale=(0.6, 1.0),  # a crop of 8% of a 32 px image is 9 px: keep most of the image
        hflip=False,  # a mirrored digit or letter is another class: opt in with --hflip
        repeated_aug=False,  # 3 views of each image only pays on large datasets
        eval_crop_pct=1.0,  # small images have no border to spare
    ),
}
DEFAULT_RECIPE = "imagenet"


def _shown(value: Any, none: str) -> str:
    if value is None:
        return none
    if isinstance(value, tuple):
        return " ".join(_shown(v, none) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _per_recipe(name: str) -> str:
    """``(from --recipe: imagenet 0.0005, finetune 0.0002, small 0.016)`` for ``--help``."""
    none = "none" if name == "pretrained" else "the variant's"
    return "(from --recipe: " + ", ".join(f"{k} {_shown(r[name], none)}" for k, r in RECIPES.items()) + ")"


def recipe_option(name: str, help: str, **kw: Any) -> Any:
    """A recipe field: ``None`` until :meth:`TrainConfig.resolved` takes the preset's value."""
    return option(None, f"{help} {_per_recipe(name)}", **kw)


@dataclass
class TrainConfig(RunConfig):
    """``pvtv2 train`` options (the run options of :class:`~pvtv2.engine.RunConfig`, then the
    recipe). ``None``: the preset's value (:data:`RECIPES`), filled by :meth:`resolved`."""

    data: str = option("", "dataset root holding train/<class>/* and val/<class>/* (ImageFolder layout)")
    recipe: str = option(DEFAULT_RECIPE, "preset: imagenet (the official ImageNet-1K recipe), finetune (from the "
                                         "published ImageNet weights), small (from scratch, small images and datasets); "
                                         "flags given explicitly override it", choices=tuple(RECIPES))
    model: str = option("pvt_v2_b2", "variant to train (pvtv2.list_models())")
    pretrained: str | None = recipe_option("pretrained", "initial weights: file, folder, hub id, 'true' for the published "
                                                         "ones, 'none' for random")
    output: str = option("runs/train", "output folder (metrics.jsonl, last.pt, best.safetensors, curves.png, config.json)")
    img_size: int | None = recipe_option("img_size", "training crop and evaluation size in pixels", min=MIN_INPUT_SIZE)
    epochs: int | None = recipe_option("epochs", "epochs", min=1)
    batch_size: int | None = recipe_option("batch_size", "images per process per step", min=1)
    lr: float | None = recipe_option("lr", "base learning rate for a total batch of 512; the run uses "
                                           "lr * batch * processes / 512 (main.py)", min=0)
    min_lr: float | None = recipe_option("min_lr", "cosine schedule floor", min=0)
    warmup_lr: float = option(1e-6, "learning rate at the start of warm-up (main.py)", min=0)
    warmup_epochs: int | None = recipe_option("warmup_epochs", "linear warm-up epochs", min=0)
    sched_per_step: bool | None = recipe_option("sched_per_step", "update the learning rate every step instead of every "
                                                                  "epoch")
    layer_decay: float | None = recipe_option("layer_decay", "layer-wise lr decay (timm's --layer-decay): the head "
                                                             "trains at lr, each stage below at this factor more, the "
                                                             "stem least; 1 disables", min=0, max=1)
    weight_decay: float = option(0.05, "AdamW weight decay; biases and norms are exempt as in timm's create_optimizer (main.py)",
                                 min=0)
    opt_eps: float = option(1e-8, "AdamW epsilon (main.py)", min=0)
    clip_grad: float | None = recipe_option("clip_grad", "max gradient norm; 0 disables (variant's: 1.0 for b3-b5, none "
                                                         "otherwise; configs/pvt_v2)", min=0)
    drop_path: float | None = recipe_option("drop_path", "stochastic depth rate (variant's: 0.1 for b0-b2_li, 0.3 for "
                                                         "b3-b5; configs/pvt_v2)", min=0, below=1)
    aa: str | None = recipe_option("aa", "RandAugment policy for timm; 'none' disables")
    color_jitter: float | None = recipe_option("color_jitter", "colour jitter strength, used when --aa is none", min=0)
    train_interpolation: str = option("bicubic", "resize interpolation for training crops (main.py)")
    scale: tuple[float, float] | None = recipe_option("scale", "RandomResizedCrop area range", nargs=2, min=0, max=1)
    hflip: bool | None = recipe_option("hflip", "random horizontal flips (wrong for digits and text)")
    mixup: float | None = recipe_option("mixup", "Mixup alpha; 0 disables", min=0)
    cutmix: float | None = recipe_option("cutmix", "CutMix alpha; 0 disables", min=0)
    mixup_prob: float = option(1.0, "probability of applying Mixup/CutMix to a batch (main.py)", min=0, max=1)
    mixup_switch_prob: float = option(0.5, "probability of CutMix instead of Mixup when both are on (main.py)", min=0, max=1)
    smoothing: float = option(0.1, "label smoothing (main.py; ConvNeXt's fine-tune)", min=0, below=1)
    reprob: float | None = recipe_option("reprob", "random erasing probability", min=0, max=1)
    repeated_aug: bool | None = recipe_option("repeated_aug", "repeated augmentation sampler, 3 views per image")
    eval_crop_pct: float | None = recipe_option("eval_crop_pct", "evaluation centre-crop fraction: resize to "
                                                                 "size/crop_pct then crop", min=0.05, max=1)
    ema: bool = option(False, "keep an exponential moving average of the weights (off in the official run)")
    ema_decay: float = option(0.99996, "EMA decay (main.py's commented-out default)", min=0, max=1)

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` filled: from the preset, then the variant's defaults."""
        if self.recipe not in RECIPES:
            raise ConfigError(f"--recipe {self.recipe}: unknown recipe; choose one of {', '.join(RECIPES)}")
        cfg = replace(self)
        for name, value in RECIPES[cfg.recipe].items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        if cfg.drop_path is None:
            cfg.drop_path = DEFAULT_DROP_PATH.get(cfg.model, 0.1)
        if cfg.clip_grad is None:
            cfg.clip_grad = DEFAULT_CLIP_GRAD.get(cfg.model, 0.0)
        if isinstance(cfg.scale, list):
            cfg.scale = tuple(cfg.scale)
        return cfg


#: When the imagenet preset looks wrong for a dataset (:func:`advice`).
ADVICE_MIN_IMAGES = 10_000
ADVICE_MIN_LR = 1e-4


def advice(cfg: TrainConfig, *, images: int, image_side: int | None, lr_scaled: float) -> str | None:
    """One line of advice when the imagenet preset meets data it was not made for: fewer than
    :data:`ADVICE_MIN_IMAGES` training images, images (``image_side``: their typical shorter
    side) under half the crop, or a linearly scaled lr below :data:`ADVICE_MIN_LR`; ``None``
    otherwise, and always under the other presets (chosen on purpose)."""
    if cfg.recipe != "imagenet":
        return None
    found, flags = [], []
    if images < ADVICE_MIN_IMAGES:
        found.append(f"{images:,} training images (it is made for ImageNet's 1.28 million)")
    if image_side is not None and image_side * 2 <= cfg.img_size:
        found.append(f"images of about {image_side} px for a {cfg.img_size} px crop")
        flags.append(f"--img-size {max(MIN_INPUT_SIZE, image_side)}")
    if lr_scaled < ADVICE_MIN_LR:
        found.append(f"a linearly scaled lr of {lr_scaled:.2g} (lr {cfg.lr:g} x batch / 512)")
        flags.append("a larger --lr")
    if not found:
        return None
    more = f", or {' and '.join(flags)}" if flags else ""
    return (f"the imagenet recipe may not fit this data: {'; '.join(found)}. Consider --recipe finetune (from the "
            f"published ImageNet weights) or --recipe small (from scratch, small images){more}")
