"""The Semantic FPN recipe: every default written once, with where it comes from.

PVTv2 backbones follow whai362/PVTv2-Seg, PVTv1 backbones whai362/PVT ``segmentation/``; the
two repositories' files agree value for value (the same ``_base_`` files, and the PVTv1
configs ``configs/sem_fpn/PVT/fpn_pvt_*_ade20k_40k.py`` set what the PVTv2 ones set), so one
set of defaults serves both families. Sources, in PVTv2-Seg:

* ``configs/sem_fpn/PVTv2/fpn_pvtv2_b*_ade20k_40k.py`` (b0 and b1 inherit b2's file; b2_li, b3, b4
  and b5 repeat it)::

      gpu_multiples = 2  # we use 8 gpu instead of 4 in mmsegmentation, so lr*2 and max_iters/2
      optimizer = dict(type='AdamW', lr=0.0001*gpu_multiples, weight_decay=0.0001)
      lr_config = dict(policy='poly', power=0.9, min_lr=0.0, by_epoch=False)
      runner = dict(type='IterBasedRunner', max_iters=80000//gpu_multiples)
      checkpoint_config = dict(by_epoch=False, interval=8000//gpu_multiples)
      evaluation = dict(interval=8000//gpu_multiples, metric='mIoU')

  that is AdamW lr 2e-4, weight decay 1e-4, poly power 0.9 to 0 by iteration (no warm-up,
  no gradient clipping: ``optimizer_config = dict()``), 40k iterations, evaluation every 4000.
* ``configs/_base_/datasets/ade20k.py``: ``samples_per_gpu=4`` on the 8 GPUs above: batch 32;
  training ``Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))``,
  ``RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75)``, flip, ``PhotoMetricDistortion``,
  ``Pad(seg_pad_val=255)``, ``reduce_zero_label=True``; test ``img_scale=(2048, 512)`` through
  ``AlignResize(keep_ratio=True, size_divisor=32)`` (``align_resize.py``: keep-ratio rescale,
  then each side up to a multiple of 32; :func:`pvtv2.segmentation.data.align_size`).
* ``pvtv2.py``: every backbone (b0 ... b5, b2_li) is built with ``drop_path_rate=0.1`` (the PVT
  repo's ``segmentation/pvt.py`` the same for tiny ... large).
* ``configs/_base_/models/fpn_r50.py``: FPN 256 channels, FPN head 128 channels, dropout 0.1,
  SyncBN, ``test_cfg=dict(mode='whole')``.

MMSegmentation itself trains on 4 GPUs (batch 16); the ``gpu_multiples`` comment says these
runs used 8 (batch 32), hence lr x2 and iterations / 2.
The PVT repository's README reports these configs' results as "mIoU(code)", above the
PVTv1 paper's.
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
    iters: int = option(40000, "training iterations (80000//2 in fpn_pvtv2_b*_ade20k_40k.py)", min=1)
    batch_size: int = option(32, "images per step over all processes (ade20k.py 4 per GPU x the configs' 8 GPUs)", min=1)
    lr: float = option(2e-4, "AdamW learning rate (0.0001*2 in fpn_pvtv2_b*_ade20k_40k.py)", min=0)
    weight_decay: float = option(1e-4, "AdamW weight decay (fpn_pvtv2_b*_ade20k_40k.py)", min=0)
    power: float = option(0.9, "poly schedule power; lr falls to min-lr by the last iteration", min=0)
    min_lr: float = option(0.0, "poly schedule floor", min=0)
    warmup_iters: int = option(0, "linear warm-up iterations (official: none)", min=0)
    drop_path: float = option(0.1, "backbone stochastic depth rate (PVTv2-Seg pvtv2.py, every variant)", min=0, below=1)
    scale: tuple[int, int] = option((2048, 512), "base rescale: long side, short side (ade20k.py img_scale); evaluation "
                                                  "then rounds each side up to a multiple of 32 (AlignResize)", nargs=2, min=1)
    ratio_range: tuple[float, float] = option((0.5, 2.0), "random rescale ratio range (ade20k.py)", nargs=2, min=0.01)
    crop: int = option(512, "training crop size (ade20k.py)", min=MIN_INPUT_SIZE)
    cat_max_ratio: float = option(0.75, "re-draw a crop (up to 10 times) while one class covers more than this (ade20k.py)",
                                  min=0, max=1)
    eval_interval: int = option(4000, "evaluate and keep the best model every N iterations (8000//2 in fpn_pvtv2_b*_ade20k_40k.py)", min=1)
    checkpoint_interval: int = option(1000, "write last.pt every N iterations", min=1)
    eval_mode: str = option("whole", "validation inference: whole image or sliding window", choices=["whole", "slide"])
    clip_grad: float = option(0.0, "max gradient norm; 0 disables (official: none)", min=0)
