"""The classification recipe: every default written once, with where it comes from.

Sources (whai362/PVT, ``classification/``): ``main.py`` argument defaults (DeiT's recipe),
``datasets.py`` (transforms), ``configs/pvt_v2/pvt_v2_b*.py`` (per-variant drop path and
gradient clipping).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..model import DEFAULT_DROP_PATH
from ..registry import REGISTRY

#: Per-variant gradient clipping of configs/pvt_v2/*.py (0: none), from :mod:`pvtv2.registry`.
DEFAULT_CLIP_GRAD = {name: v.clip_grad for name, v in REGISTRY.items()}


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """``pvtv2 train`` options. ``None`` where the default depends on the variant."""

    data: str = _f("", "dataset root holding train/<class>/* and val/<class>/* (ImageFolder layout)")
    model: str = _f("pvt_v2_b2", "variant to train (pvtv2.list_models())")
    img_size: int = _f(224, "training crop and evaluation size in pixels (main.py --input-size)")
    epochs: int = _f(300, "epochs (main.py)")
    batch_size: int = _f(128, "images per process per step (main.py; the paper used 8 GPUs x 128)")
    lr: float = _f(5e-4, "base learning rate for a total batch of 512; the run uses lr * batch * processes / 512 (main.py)")
    min_lr: float = _f(1e-5, "cosine schedule floor (main.py)")
    warmup_lr: float = _f(1e-6, "learning rate at the start of warm-up (main.py)")
    warmup_epochs: int = _f(5, "linear warm-up epochs (main.py)")
    sched_per_step: bool = _f(False, "update the learning rate every step instead of every epoch (official: per epoch)")
    weight_decay: float = _f(0.05, "AdamW weight decay; biases and norms are exempt as in timm's create_optimizer (main.py)")
    opt_eps: float = _f(1e-8, "AdamW epsilon (main.py)")
    clip_grad: float | None = _f(None, "max gradient norm; 0 disables (default: 1.0 for b3-b5, none otherwise; configs/pvt_v2)")
    drop_path: float | None = _f(None, "stochastic depth rate (default: 0.1 for b0-b2_li, 0.3 for b3-b5; configs/pvt_v2)")
    aa: str = _f("rand-m9-mstd0.5-inc1", "RandAugment policy for timm; 'none' disables (main.py)")
    color_jitter: float = _f(0.4, "colour jitter strength, used when --aa is none (main.py)")
    train_interpolation: str = _f("bicubic", "resize interpolation for training crops (main.py)")
    scale: tuple[float, float] = _f((0.08, 1.0), "RandomResizedCrop area range (timm default, as DeiT)", nargs=2)
    mixup: float = _f(0.8, "Mixup alpha; 0 disables (main.py)")
    cutmix: float = _f(1.0, "CutMix alpha; 0 disables (main.py)")
    mixup_prob: float = _f(1.0, "probability of applying Mixup/CutMix to a batch (main.py)")
    mixup_switch_prob: float = _f(0.5, "probability of CutMix instead of Mixup when both are on (main.py)")
    smoothing: float = _f(0.1, "label smoothing (main.py)")
    reprob: float = _f(0.25, "random erasing probability (main.py)")
    repeated_aug: bool = _f(True, "repeated augmentation sampler, 3 views per image (main.py: on)")
    eval_crop_pct: float = _f(224 / 256, "evaluation centre-crop fraction: resize to size/0.875 then crop (datasets.py)")
    pretrained: str | None = _f(None, "initial weights: file, folder, hub id or 'true' for the published ones (fine-tuning)")
    output: str = _f("runs/train", "output folder (metrics.jsonl, last.pt, best.safetensors, curves.png, config.json)")
    resume: str | None = _f(None, "resume from this last.pt ('auto': OUTPUT/last.pt)")
    seed: int = _f(0, "random seed (main.py)")
    workers: int = _f(4, "data-loading worker processes per training process")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    amp: str = _f("auto", "autocast: bf16, fp16 (CUDA), none, or auto (fp16 on CUDA as the official runs, none on CPU)",
                  choices=("auto", "none", "bf16", "fp16"))
    ema: bool = _f(False, "keep an exponential moving average of the weights (off in the official run)")
    ema_decay: float = _f(0.99996, "EMA decay (main.py's commented-out default)")
    progress: bool = _f(True, "tqdm progress bars on a terminal")

    def resolved(self) -> "TrainConfig":
        """Fill the variant-dependent defaults."""
        cfg = TrainConfig(**asdict(self))
        if cfg.drop_path is None:
            cfg.drop_path = DEFAULT_DROP_PATH.get(cfg.model, 0.1)
        if cfg.clip_grad is None:
            cfg.clip_grad = DEFAULT_CLIP_GRAD.get(cfg.model, 0.0)
        if isinstance(cfg.scale, list):
            cfg.scale = tuple(cfg.scale)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def config_fields() -> list:
    return list(fields(TrainConfig))
