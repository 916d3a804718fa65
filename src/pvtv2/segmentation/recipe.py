"""The Semantic FPN recipe: every default written once, with where it comes from.

Sources (whai362/PVT, ``segmentation/``): ``configs/sem_fpn/PVT/fpn_pvt_*_ade20k_40k.py``
(AdamW lr 0.0001*2, weight decay 1e-4, poly power 0.9 to 0 by iteration, 40k iterations,
drop path 0.1 on the backbone), ``configs/_base_/datasets/ade20k.py`` (scale 2048x512, ratio
0.5-2.0, crop 512, cat_max_ratio 0.75, flip, photometric distortion, reduce_zero_label, 4 images
per GPU; the paper trains on 4 GPUs: batch 16), ``configs/_base_/models/fpn_r50.py`` (neck 256,
head 128, dropout 0.1) and MMSegmentation's 40k schedule (evaluation every 4000 iterations).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunConfig, option
from ..model import MIN_INPUT_SIZE


@dataclass
class SegTrainConfig(RunConfig):
    """``pvtv2 segment train`` options (the run options of :class:`~pvtv2.engine.RunConfig`,
    then the recipe)."""

    data: str = option("", "dataset root: images/{training,validation}/* and annotations/{training,validation}/*.png (ADE20K layout)")
    model: str = option("pvt_v2_b2", "backbone variant (pvtv2.list_models())")
    pretrained: str | None = option(None, "backbone weights: a file, folder, hub id, or 'true' for the ImageNet weights")
    output: str = option("runs/segment", "output folder")
    num_classes: int | None = option(None, "classes (default: from DATA/synth.json or DATA/classes.json; ADE20K: 150)", min=2)
    reduce_zero_label: bool = option(False, "label 0 is 'other' and ignored, labels 1..N become 0..N-1 (ADE20K needs it)")
    iters: int = option(40000, "training iterations (fpn_pvt_*_ade20k_40k.py)", min=1)
    batch_size: int = option(16, "images per step over all processes (ade20k.py 4 per GPU x 4 GPUs)", min=1)
    lr: float = option(2e-4, "AdamW learning rate (0.0001*2 in fpn_pvt_*_ade20k_40k.py)", min=0)
    weight_decay: float = option(1e-4, "AdamW weight decay (fpn_pvt_*_ade20k_40k.py)", min=0)
    power: float = option(0.9, "poly schedule power; lr falls to min-lr by the last iteration", min=0)
    min_lr: float = option(0.0, "poly schedule floor", min=0)
    warmup_iters: int = option(0, "linear warm-up iterations (official: none)", min=0)
    drop_path: float = option(0.1, "backbone stochastic depth rate (fpn_pvt_*_ade20k_40k.py)", min=0, below=1)
    scale: tuple[int, int] = option((2048, 512), "base rescale: long side, short side (ade20k.py img_scale)", nargs=2, min=1)
    ratio_range: tuple[float, float] = option((0.5, 2.0), "random rescale ratio range (ade20k.py)", nargs=2, min=0.01)
    crop: int = option(512, "training crop size (ade20k.py)", min=MIN_INPUT_SIZE)
    cat_max_ratio: float = option(0.75, "re-draw a crop (up to 10 times) while one class covers more than this (ade20k.py)",
                                  min=0, max=1)
    eval_interval: int = option(4000, "evaluate and keep the best model every N iterations (mmseg 40k schedule)", min=1)
    checkpoint_interval: int = option(1000, "write last.pt every N iterations", min=1)
    eval_mode: str = option("whole", "validation inference: whole image or sliding window", choices=["whole", "slide"])
    clip_grad: float = option(0.0, "max gradient norm; 0 disables (official: none)", min=0)
