"""The official training and test settings of the FCOS, ATSS, GFL, Sparse R-CNN and Cascade Mask
R-CNN kinds, as data: one :class:`KindRecipe` per kind, each number with the config file and line
it comes from.

Sources: whai362/PVT ``detection/configs/`` (commit 57e2dfa):

* ``atss_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` and ``atss_pvt_v2_b2_li_fpn_3x_mstrain_fp16.py``
  (identical but for the backbone; the line numbers hold for both),
* ``gfl_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` and ``gfl_pvt_v2_b2_li_fpn_3x_mstrain_fp16.py`` (idem),
* ``sparse_rcnn_pvt_v2_b2_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py`` and
  ``sparse_rcnn_pvt_v2_b2_li_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py`` (these two
  differ: B2 trains with 1 image per GPU at lr 2.5e-5 / 1.4, B2-Li with 2 at lr 2.5e-5),
* ``cascade_mask_rcnn_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` and its ``_b2_li_`` twin (identical but for
  the backbone), on the base ``_base_/models/cascade_mask_rcnn_pvtv2_b2_fpn.py`` (the RPN, the
  cascade's assigners, samplers, stage loss weights, mask head and test settings; the main file
  replaces its ``Shared2FCBBoxHead`` stages with 4-conv + 1-fc heads, SyncBN, class-specific
  regression and GIoU) and ``_base_/datasets/coco_instance.py``,
* the bases they all name: ``_base_/schedules/schedule_1x.py`` (linear warm-up over 500
  iterations from 0.001x, kept because the configs only override ``step``) and
  ``_base_/datasets/coco_detection.py`` (2 images per GPU, 8 GPUs; test resize 1333x800).

whai362/PVT has no FCOS config: the ``fcos`` recipe is ours (the RetinaNet 1x recipe of
``recipe.py``, the nearest official one-stage setting) and says so.

The detectors read their test-time defaults (``test``) and, for the cascade, the head's training
settings (``head``) from here, so each number is written once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_ATSS = "atss_pvt_v2_b2_fpn_3x_mstrain_fp16.py"
_GFL = "gfl_pvt_v2_b2_fpn_3x_mstrain_fp16.py"
_SPARSE = "sparse_rcnn_pvt_v2_b2_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py"
_SPARSE_LI = "sparse_rcnn_pvt_v2_b2_li_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py"
_SCHEDULE = "_base_/schedules/schedule_1x.py"
_COCO = "_base_/datasets/coco_detection.py"
_CASCADE = "cascade_mask_rcnn_pvt_v2_b2_fpn_3x_mstrain_fp16.py"
_CASCADE_BASE = "_base_/models/cascade_mask_rcnn_pvtv2_b2_fpn.py"
_COCO_INSTANCE = "_base_/datasets/coco_instance.py"

#: The short sides of the DETR-style multi-scale augmentation (480..800 step 32), long side <= 1333.
MULTISCALE_SIZES = tuple(range(480, 801, 32))

#: What ``augmentation="multiscale_crop"`` means, in the configs' own terms.
MULTISCALE_CROP = (
    "RandomFlip(0.5); then AutoAugment with two equally likely policies: (a) Resize the short side to "
    "one of 480..800 step 32 (long side <= 1333, keep ratio); (b) Resize to one of 400/500/600 (long "
    "side <= 1333), RandomCrop absolute_range 384-600 (allow_negative_crop), Resize to one of 480..800 "
    "step 32 (override); then Normalize (ImageNet mean/std) and Pad to a multiple of 32")


@dataclass(frozen=True)
class KindRecipe:
    """One detector kind's official recipe. ``sources`` maps each field to ``file:line``
    (relative to whai362/PVT ``detection/configs/``); ``per_backbone`` holds the fields a
    backbone's own config changes."""

    kind: str
    configs: dict[str, str]
    optimizer: str = "AdamW"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    #: Parameter-name substrings whose weight decay is 0 (mmcv's ``paramwise_cfg.custom_keys``,
    #: matched as substrings of the full parameter name).
    no_decay_keys: tuple[str, ...] = ()
    clip_grad: float = 0.0
    epochs: int = 36
    steps: tuple[int, ...] = (27, 33)
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    batch_size: int = 16
    augmentation: str = "multiscale_crop"
    train_min_sizes: tuple[int, ...] = MULTISCALE_SIZES
    max_size: int = 1333
    test_min_size: int = 800
    amp: str = "fp16"
    #: Keyword arguments of the detector at test time.
    test: dict[str, Any] = field(default_factory=dict)
    #: Keyword arguments of the detector's training: assignment, sampling, losses (the cascade's).
    head: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    per_backbone: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_backbone(self, backbone: str) -> dict[str, Any]:
        """The recipe's training fields with ``backbone``'s overrides applied."""
        keys = ("optimizer", "lr", "betas", "weight_decay", "no_decay_keys", "clip_grad", "epochs", "steps", "gamma",
                "warmup_iters", "warmup_ratio", "batch_size", "augmentation", "train_min_sizes", "max_size",
                "test_min_size", "amp")
        return {**{k: getattr(self, k) for k in keys}, **self.per_backbone.get(backbone, {})}


def _dense_sources(cfg: str, head: dict[str, str]) -> dict[str, str]:
    """ATSS and GFL share every line but the head's; ``cfg``'s pipeline and optimiser lines."""
    off = 0 if cfg == _ATSS else -5  # the GFL file is 5 lines shorter above its pipeline
    return {
        "neck": f"{cfg}:13-19", **head,
        "augmentation": f"{cfg}:{60 + off}-{94 + off}", "train_min_sizes": f"{cfg}:{67 + off}-{69 + off}",
        "optimizer": f"{cfg}:{97 + off}", "lr": f"{cfg}:{97 + off}", "betas": f"{cfg}:{97 + off}",
        "weight_decay": f"{cfg}:{97 + off}", "no_decay_keys": f"{cfg}:{98 + off}-{100 + off}",
        "steps": f"{cfg}:{101 + off}", "epochs": f"{cfg}:{107 + off}", "clip_grad": f"{cfg}:{112 + off}",
        "amp": f"{cfg}:{107 + off},{115 + off}", "warmup_iters": f"{_SCHEDULE}:5-10", "warmup_ratio": f"{_SCHEDULE}:9",
        "gamma": f"{_SCHEDULE}:6 (mmcv's step policy default 0.1)", "batch_size": f"{_COCO}:43 (x 8 GPUs)",
        "max_size": f"{cfg}:{67 + off}", "test_min_size": f"{_COCO}:31",
    }


_DENSE_TEST = {"score_thresh": 0.05, "nms_thresh": 0.6, "detections_per_img": 100, "topk_candidates": 1000}

KIND_RECIPES: dict[str, KindRecipe] = {
    "atss": KindRecipe(
        kind="atss",
        configs={"pvt_v2_b2": _ATSS, "pvt_v2_b2_li": _ATSS.replace("b2_", "b2_li_")},
        weight_decay=0.05, no_decay_keys=("absolute_pos_embed", "relative_position_bias_table", "norm"),
        test=dict(_DENSE_TEST),
        sources=_dense_sources(_ATSS, {
            "anchors": f"{_ATSS}:26-31", "box_coder": f"{_ATSS}:32-35", "loss_cls": f"{_ATSS}:36-41",
            "loss_bbox": f"{_ATSS}:42", "loss_centerness": f"{_ATSS}:43-44", "assigner": f"{_ATSS}:47",
            "test": f"{_ATSS}:51-56"}),
    ),
    "gfl": KindRecipe(
        kind="gfl",
        configs={"pvt_v2_b2": _GFL, "pvt_v2_b2_li": _GFL.replace("b2_", "b2_li_")},
        weight_decay=0.05, no_decay_keys=("absolute_pos_embed", "relative_position_bias_table", "norm"),
        test=dict(_DENSE_TEST),
        sources=_dense_sources(_GFL, {
            "anchors": f"{_GFL}:26-31", "loss_cls": f"{_GFL}:32-36", "loss_dfl": f"{_GFL}:37", "reg_max": f"{_GFL}:38",
            "loss_bbox": f"{_GFL}:39", "assigner": f"{_GFL}:42", "test": f"{_GFL}:46-51"}),
    ),
    "sparse_rcnn": KindRecipe(
        kind="sparse_rcnn",
        configs={"pvt_v2_b2": _SPARSE, "pvt_v2_b2_li": _SPARSE_LI},
        lr=2.5e-5, weight_decay=1e-4, clip_grad=1.0, batch_size=16, amp="none",
        # max_per_img = num_proposals; no NMS (set prediction), no score threshold.
        test={"detections_per_img": 300},
        per_backbone={"pvt_v2_b2": {"lr": 2.5e-5 / 1.4, "batch_size": 8}},
        sources={
            "neck": f"{_SPARSE}:15-21", "proposals": f"{_SPARSE}:7,22-25", "stages": f"{_SPARSE}:6,26-29",
            "roi_align": f"{_SPARSE}:31-35", "dii_head": f"{_SPARSE}:37-55", "box_coder": f"{_SPARSE}:64-68",
            "loss_bbox": f"{_SPARSE}:56", "loss_iou": f"{_SPARSE}:57", "loss_cls": f"{_SPARSE}:58-63",
            "matcher": f"{_SPARSE}:75-80", "test": f"{_SPARSE}:84",
            "optimizer": f"{_SPARSE}:87", "lr": f"{_SPARSE}:87 (B2: 2.5e-5 / 1.4); {_SPARSE_LI}:87 (B2-Li: 2.5e-5)",
            "weight_decay": f"{_SPARSE}:87", "betas": "torch.optim.AdamW default (the config sets none)",
            "clip_grad": f"{_SPARSE}:88", "augmentation": f"{_SPARSE}:92-126", "train_min_sizes": f"{_SPARSE}:99-101",
            "max_size": f"{_SPARSE}:99", "batch_size": f"{_SPARSE}:128 (B2: 1 x 8 GPUs); {_SPARSE_LI}:128 (B2-Li: 2 x 8)",
            "steps": f"{_SPARSE}:131", "epochs": f"{_SPARSE}:132", "amp": f"{_SPARSE}:132 (EpochBasedRunner, no fp16)",
            "warmup_iters": f"{_SCHEDULE}:5-10", "warmup_ratio": f"{_SCHEDULE}:9", "gamma": f"{_SCHEDULE}:6",
            "test_min_size": f"{_COCO}:31",
        },
    ),
    "fcos": KindRecipe(
        kind="fcos",
        configs={},
        # Not official: whai362/PVT trains no FCOS. The RetinaNet 1x recipe (recipe.py) and
        # torchvision's FCOS test defaults.
        lr=1e-4, weight_decay=1e-4, epochs=12, steps=(8, 11), augmentation="resize", train_min_sizes=(800,),
        amp="auto",
        test={"score_thresh": 0.2, "nms_thresh": 0.6, "detections_per_img": 100, "topk_candidates": 1000},
        sources={"all": "none official: pvtv2's RetinaNet 1x recipe (detection/recipe.py) and torchvision FCOS defaults"},
    ),
    "cascade_maskrcnn": KindRecipe(
        kind="cascade_maskrcnn",
        configs={"pvt_v2_b2": _CASCADE, "pvt_v2_b2_li": _CASCADE.replace("b2_", "b2_li_")},
        weight_decay=0.05, no_decay_keys=("absolute_pos_embed", "relative_position_bias_table", "norm"),
        head={
            # The RPN (train_cfg.rpn, rpn_proposal): MaxIoUAssigner 0.7 / 0.3 with low-quality matches,
            # 256 anchors half positive, 2000 proposals per level before NMS 0.7 and 2000 after.
            "rpn_fg_iou_thresh": 0.7, "rpn_bg_iou_thresh": 0.3, "rpn_batch_size_per_image": 256,
            "rpn_positive_fraction": 0.5, "rpn_pre_nms_top_n_train": 2000, "rpn_post_nms_top_n_train": 2000,
            "rpn_nms_thresh": 0.7,
            # The cascade (train_cfg.rcnn, one dict per stage): MaxIoUAssigner pos = neg = min_pos IoU,
            # no low-quality matches; RandomSampler 512 RoIs, 25% positive, ground truth added.
            "stage_iou_thresholds": (0.5, 0.6, 0.7), "box_batch_size_per_image": 512, "box_positive_fraction": 0.25,
            "stage_box_stds": ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)),
            "stage_loss_weights": (1.0, 0.5, 0.25), "giou_weight": 10.0,
        },
        test={"rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000, "box_score_thresh": 0.05,
              "box_nms_thresh": 0.5, "box_detections_per_img": 100},
        sources={
            "neck": f"{_CASCADE}:14-18", "rpn_head": f"{_CASCADE_BASE}:12-27", "anchors": f"{_CASCADE_BASE}:16-20",
            "rpn_fg_iou_thresh": f"{_CASCADE_BASE}:105-111", "rpn_bg_iou_thresh": f"{_CASCADE_BASE}:108",
            "rpn_batch_size_per_image": f"{_CASCADE_BASE}:114", "rpn_positive_fraction": f"{_CASCADE_BASE}:115",
            "rpn_pre_nms_top_n_train": f"{_CASCADE_BASE}:123", "rpn_post_nms_top_n_train": f"{_CASCADE_BASE}:125",
            "rpn_nms_thresh": f"{_CASCADE_BASE}:126,187",
            "num_stages": f"{_CASCADE_BASE}:30", "stage_loss_weights": f"{_CASCADE_BASE}:31",
            "roi_align": f"{_CASCADE_BASE}:32-36 (box, 7x7), 89-93 (mask, 14x14)",
            "box_head": f"{_CASCADE}:19-78 (ConvFCBBoxHead: num_shared_convs=4, num_shared_fcs=1, 256 / 1024 channels, "
                        f"reg_class_agnostic=False, norm_cfg=SyncBN at 23-27, 34, 36)",
            "stage_box_stds": f"{_CASCADE}:30-33, 49-52, 68-71", "reg_decoded_bbox": f"{_CASCADE}:35,54,73",
            "loss_cls": f"{_CASCADE}:37-38,56-57,75-76", "giou_weight": f"{_CASCADE}:39,58,77",
            "mask_head": f"{_CASCADE_BASE}:94-101 (FCNMaskHead, 4 convs; one per stage: mmdet's CascadeRoIHead)",
            "stage_iou_thresholds": f"{_CASCADE_BASE}:130-136, 147-153, 164-170",
            "box_batch_size_per_image": f"{_CASCADE_BASE}:137-142, 154-159, 171-176",
            "box_positive_fraction": f"{_CASCADE_BASE}:140,157,174", "mask_size": f"{_CASCADE_BASE}:143,160,177",
            "rpn_pre_nms_top_n_test": f"{_CASCADE_BASE}:184", "rpn_post_nms_top_n_test": f"{_CASCADE_BASE}:186",
            "box_score_thresh": f"{_CASCADE_BASE}:190", "box_nms_thresh": f"{_CASCADE_BASE}:191",
            "box_detections_per_img": f"{_CASCADE_BASE}:192", "mask_thr_binary": f"{_CASCADE_BASE}:193",
            "augmentation": f"{_CASCADE}:84-121", "train_min_sizes": f"{_CASCADE}:92-94,108-111",
            "max_size": f"{_CASCADE}:92", "optimizer": f"{_CASCADE}:124", "lr": f"{_CASCADE}:124",
            "betas": f"{_CASCADE}:124", "weight_decay": f"{_CASCADE}:124", "no_decay_keys": f"{_CASCADE}:125-127",
            "steps": f"{_CASCADE}:128", "epochs": f"{_CASCADE}:134", "clip_grad": f"{_CASCADE}:139",
            "amp": f"{_CASCADE}:134,142", "warmup_iters": f"{_SCHEDULE}:5-10", "warmup_ratio": f"{_SCHEDULE}:9",
            "gamma": f"{_SCHEDULE}:6 (mmcv's step policy default 0.1)", "batch_size": f"{_COCO_INSTANCE}:32 (x 8 GPUs)",
            "test_min_size": f"{_COCO_INSTANCE}:20",
        },
    ),
}
