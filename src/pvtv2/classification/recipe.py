"""The classification recipe: every default written once, with where it comes from.

Sources (whai362/PVT, ``classification/``): ``main.py`` argument defaults (DeiT's recipe),
``datasets.py`` (transforms), ``configs/pvt_v2/pvt_v2_b*.py`` (per-variant drop path and
gradient clipping).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..engine.config import RunConfig, option
from ..model import DEFAULT_DROP_PATH, MIN_INPUT_SIZE
from ..registry import REGISTRY

#: Per-variant gradient clipping of configs/pvt_v2/*.py (0: none), from :mod:`pvtv2.registry`.
DEFAULT_CLIP_GRAD = {name: v.clip_grad for name, v in REGISTRY.items()}


@dataclass
class TrainConfig(RunConfig):
    """``pvtv2 train`` options (the run options of :class:`~pvtv2.engine.RunConfig`, then the
    recipe). ``None`` where the default depends on the variant."""

    data: str = option("", "dataset root holding train/<class>/* and val/<class>/* (ImageFolder layout)")
    model: str = option("pvt_v2_b2", "variant to train (pvtv2.list_models())")
    pretrained: str | None = option(None, "initial weights: file, folder, hub id or 'true' for the published ones (fine-tuning)")
    output: str = option("runs/train", "output folder (metrics.jsonl, last.pt, best.safetensors, curves.png, config.json)")
    img_size: int = option(224, "training crop and evaluation size in pixels (main.py --input-size)", min=MIN_INPUT_SIZE)
    epochs: int = option(300, "epochs (main.py)", min=1)
    batch_size: int = option(128, "images per process per step (main.py; the paper used 8 GPUs x 128)", min=1)
    lr: float = option(5e-4, "base learning rate for a total batch of 512; the run uses lr * batch * processes / 512 (main.py)",
                       min=0)
    min_lr: float = option(1e-5, "cosine schedule floor (main.py)", min=0)
    warmup_lr: float = option(1e-6, "learning rate at the start of warm-up (main.py)", min=0)
    warmup_epochs: int = option(5, "linear warm-up epochs (main.py)", min=0)
    sched_per_step: bool = option(False, "update the learning rate every step instead of every epoch (official: per epoch)")
    weight_decay: float = option(0.05, "AdamW weight decay; biases and norms are exempt as in timm's create_optimizer (main.py)",
                                 min=0)
    opt_eps: float = option(1e-8, "AdamW epsilon (main.py)", min=0)
    clip_grad: float | None = option(None, "max gradient norm; 0 disables (default: 1.0 for b3-b5, none otherwise; configs/pvt_v2)",
                                     min=0)
    drop_path: float | None = option(None, "stochastic depth rate (default: 0.1 for b0-b2_li, 0.3 for b3-b5; configs/pvt_v2)",
                                     min=0, below=1)
    aa: str = option("rand-m9-mstd0.5-inc1", "RandAugment policy for timm; 'none' disables (main.py)")
    color_jitter: float = option(0.4, "colour jitter strength, used when --aa is none (main.py)", min=0)
    train_interpolation: str = option("bicubic", "resize interpolation for training crops (main.py)")
    scale: tuple[float, float] = option((0.08, 1.0), "RandomResizedCrop area range (timm default, as DeiT)", nargs=2,
                                        min=0, max=1)
    mixup: float = option(0.8, "Mixup alpha; 0 disables (main.py)", min=0)
    cutmix: float = option(1.0, "CutMix alpha; 0 disables (main.py)", min=0)
    mixup_prob: float = option(1.0, "probability of applying Mixup/CutMix to a batch (main.py)", min=0, max=1)
    mixup_switch_prob: float = option(0.5, "probability of CutMix instead of Mixup when both are on (main.py)", min=0, max=1)
    smoothing: float = option(0.1, "label smoothing (main.py)", min=0, below=1)
    reprob: float = option(0.25, "random erasing probability (main.py)", min=0, max=1)
    repeated_aug: bool = option(True, "repeated augmentation sampler, 3 views per image (main.py: on)")
    eval_crop_pct: float = option(224 / 256, "evaluation centre-crop fraction: resize to size/0.875 then crop (datasets.py)",
                                  min=0.05, max=1)
    ema: bool = option(False, "keep an exponential moving average of the weights (off in the official run)")
    ema_decay: float = option(0.99996, "EMA decay (main.py's commented-out default)", min=0, max=1)

    def resolved(self) -> "TrainConfig":
        """Fill the variant-dependent defaults."""
        cfg = replace(self)
        if cfg.drop_path is None:
            cfg.drop_path = DEFAULT_DROP_PATH.get(cfg.model, 0.1)
        if cfg.clip_grad is None:
            cfg.clip_grad = DEFAULT_CLIP_GRAD.get(cfg.model, 0.0)
        if isinstance(cfg.scale, list):
            cfg.scale = tuple(cfg.scale)
        return cfg
