"""The Semantic FPN recipe: every default written once, with where it comes from.

Sources (whai362/PVT, ``segmentation/``): ``configs/sem_fpn/PVT/fpn_pvt_*_ade20k_40k.py``
(AdamW lr 0.0001*2, weight decay 1e-4, poly power 0.9 to 0 by iteration, 40k iterations,
drop path 0.1 on the backbone), ``configs/_base_/datasets/ade20k.py`` (scale 2048x512, ratio
0.5-2.0, crop 512, cat_max_ratio 0.75, flip, photometric distortion, reduce_zero_label, 4 images
per GPU; the paper trains on 4 GPUs: batch 16), ``configs/_base_/models/fpn_r50.py`` (neck 256,
head 128, dropout 0.1) and MMSegmentation's 40k schedule (evaluation every 4000 iterations).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class SegTrainConfig:
    """``pvtv2 segment train`` options."""

    data: str = _f("", "dataset root: images/{training,validation}/* and annotations/{training,validation}/*.png (ADE20K layout)")
    model: str = _f("pvt_v2_b2", "backbone variant (pvtv2.list_models())")
    num_classes: int | None = _f(None, "classes (default: from DATA/synth.json or DATA/classes.json; ADE20K: 150)")
    reduce_zero_label: bool = _f(False, "label 0 is 'other' and ignored, labels 1..N become 0..N-1 (ADE20K needs it)")
    pretrained: str | None = _f(None, "backbone weights: a file, folder, hub id, or 'true' for the ImageNet weights")
    iters: int = _f(40000, "training iterations (fpn_pvt_*_ade20k_40k.py)")
    batch_size: int = _f(16, "images per step over all processes (ade20k.py 4 per GPU x 4 GPUs)")
    lr: float = _f(2e-4, "AdamW learning rate (0.0001*2 in fpn_pvt_*_ade20k_40k.py)")
    weight_decay: float = _f(1e-4, "AdamW weight decay (fpn_pvt_*_ade20k_40k.py)")
    power: float = _f(0.9, "poly schedule power; lr falls to min-lr by the last iteration")
    min_lr: float = _f(0.0, "poly schedule floor")
    warmup_iters: int = _f(0, "linear warm-up iterations (official: none)")
    drop_path: float = _f(0.1, "backbone stochastic depth rate (fpn_pvt_*_ade20k_40k.py)")
    scale: tuple[int, int] = _f((2048, 512), "base rescale: long side, short side (ade20k.py img_scale)", nargs=2)
    ratio_range: tuple[float, float] = _f((0.5, 2.0), "random rescale ratio range (ade20k.py)", nargs=2)
    crop: int = _f(512, "training crop size (ade20k.py)")
    cat_max_ratio: float = _f(0.75, "re-draw a crop (up to 10 times) while one class covers more than this (ade20k.py)")
    eval_interval: int = _f(4000, "evaluate and keep the best model every N iterations (mmseg 40k schedule)")
    checkpoint_interval: int = _f(1000, "write last.pt every N iterations")
    eval_mode: str = _f("whole", "validation inference: whole image or sliding window", choices=["whole", "slide"])
    clip_grad: float = _f(0.0, "max gradient norm; 0 disables (official: none)")
    amp: str = _f("auto", "autocast precision: auto (fp16 on CUDA, none on CPU), bf16, fp16, none",
                  choices=["auto", "bf16", "fp16", "none"])
    output: str = _f("runs/segment", "output folder")
    resume: str | None = _f(None, "resume from a last.pt ('auto': OUTPUT/last.pt)")
    seed: int = _f(0, "random seed")
    workers: int = _f(4, "data loading processes per training process")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N")
    progress: bool = _f(True, "progress bar on a terminal")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_fields():
    return fields(SegTrainConfig)
