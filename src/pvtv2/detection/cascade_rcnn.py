"""Cascade Mask R-CNN (Cai & Vasconcelos, CVPR 2018) on a PVTv2 + FPN backbone, as whai362/PVT's
``cascade_mask_rcnn_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` and its base
``_base_/models/cascade_mask_rcnn_pvtv2_b2_fpn.py`` configure MMDetection v2 (``CascadeRCNN``,
``CascadeRoIHead``, ``ConvFCBBoxHead``, ``FCNMaskHead``); every number is in
:data:`pvtv2.detection.kinds.KIND_RECIPES` ``["cascade_maskrcnn"]`` with its source line:

* FPN on all four stages, 256 channels, P6 by max-pooling P5 (P2-P6), as Mask R-CNN;
* torchvision's RPN (one 3x3 conv, 3 anchors of size 8 x stride per location, sampling 256 anchors
  at IoU 0.7 / 0.3, 2000 proposals in training and 1000 at test after NMS 0.7);
* three stages, each a RoI Align 7x7 of its input boxes and a box head of its own: 4 x (3x3 conv
  without bias, BatchNorm, ReLU), one fc to 1024 + ReLU, a (K+1)-way softmax classifier and
  class-specific deltas (4 per class). Stage ``s`` samples 512 RoIs per image (a quarter positive
  at most) among its boxes plus the ground truth, positive at IoU >= 0.5 / 0.6 / 0.7, and decodes
  the deltas (stds 0.1/0.1/0.2/0.2, 0.05/0.05/0.1/0.1, 0.033/0.033/0.067/0.067) into boxes that
  the GIoU loss (weight 10, summed over the positives, divided by the sampled RoIs) compares to the
  matched ground truth; cross-entropy over all sampled RoIs. The next stage starts from the
  decoded sampled RoIs (for the ground truth's class, or for the predicted class of the
  negatives), clipped to the image, without the ground-truth boxes that were added (detached);
* a mask head per stage (4 x 3x3 conv + ReLU, 2x2 deconv + ReLU, 1x1 conv to K class masks of
  28x28) on the stage's positive RoIs, binary cross-entropy of the ground-truth class's mask;
* the stages' losses weighted 1, 0.5, 0.25;
* at test: the stages run in turn on the 1000 proposals (each refining the boxes for its
  predicted class), the class scores are the softmax of the three stages' mean logits, the boxes
  the last stage's decoding, per-class NMS 0.5 above score 0.05, the best 100; the masks are the
  mean of the three mask heads' probabilities on those boxes.

The head's BatchNorm is ``SyncBN`` in the official config: under DDP on CUDA convert the model with
``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` before wrapping it (same state dict); plain
BatchNorm takes its statistics over one process's RoIs. RoI Align is torchvision's
``MultiScaleRoIAlign`` (the level rule of mmdet's ``finest_scale=56``, sampling ratio 0 =
adaptive as the config, but ``aligned=False`` where mmcv's defaults to ``aligned=True``), and the
mask targets are torchvision's (the ground-truth mask resampled into each RoI, not binarised
again as mmdet does). Labels follow torchvision: ``1..K``, 0 the background.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image, generalized_box_iou_loss

from .kinds import KIND_RECIPES
from .one_stage import IMAGENET_MEAN, IMAGENET_STD, check_labels

_HEAD = KIND_RECIPES["cascade_maskrcnn"].head
_TEST = KIND_RECIPES["cascade_maskrcnn"].test


def _kaiming(m: nn.Module) -> None:
    """mmcv ``ConvModule``'s init (and ``FCNMaskHead``'s deconv and logits): He normal, fan-out."""
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)


class ConvFCBoxHead(nn.Module):
    """mmdet's ``ConvFCBBoxHead`` with ``num_shared_convs=4, num_shared_fcs=1``: RoI features
    ``(N, C, S, S)`` -> ``(class logits (N, K + 1), box deltas (N, K, 4))``; logit 0 is the
    background."""

    def __init__(self, num_classes: int, in_channels: int = 256, *, num_convs: int = 4, conv_channels: int = 256,
                 fc_channels: int = 1024, roi_size: int = 7):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):  # ConvModule with a norm: no conv bias
            conv = nn.Conv2d(in_channels if i == 0 else conv_channels, conv_channels, 3, padding=1, bias=False)
            _kaiming(conv)
            layers += [conv, nn.BatchNorm2d(conv_channels), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear((conv_channels if num_convs else in_channels) * roi_size ** 2, fc_channels)
        self.relu = nn.ReLU(inplace=True)
        self.cls_score = nn.Linear(fc_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_channels, 4 * num_classes)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.fc(self.convs(x).flatten(1)))
        return self.cls_score(x), self.bbox_pred(x).view(len(x), -1, 4)


class MaskHead(nn.Module):
    """mmdet's ``FCNMaskHead``: RoI features ``(N, C, S, S)`` -> mask logits ``(N, K, 2S, 2S)``,
    one per object class (no background mask)."""

    def __init__(self, num_classes: int, in_channels: int = 256, *, num_convs: int = 4, channels: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(channels if num_convs else in_channels, channels, 2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.logits = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                _kaiming(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.relu(self.upsample(self.convs(x))))


class CascadeRoIHeads(nn.Module):
    """The three box stages and their mask heads, in torchvision's ``RoIHeads`` interface:
    ``(features, proposals, image_shapes, targets) -> (detections, losses)``."""

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_heads: list[nn.Module], mask_roi_pool: MultiScaleRoIAlign,
                 mask_heads: list[nn.Module], *, stage_iou_thresholds: tuple[float, ...],
                 stage_box_stds: tuple[tuple[float, ...], ...], stage_loss_weights: tuple[float, ...],
                 batch_size_per_image: int, positive_fraction: float, giou_weight: float, score_thresh: float,
                 nms_thresh: float, detections_per_img: int):
        super().__init__()
        n = len(box_heads)
        if not (len(mask_heads) == len(stage_iou_thresholds) == len(stage_box_stds) == len(stage_loss_weights) == n):
            raise ValueError(f"every cascade stage needs a box head, a mask head, an IoU threshold, box stds and a "
                             f"loss weight: got {n}, {len(mask_heads)}, {len(stage_iou_thresholds)}, "
                             f"{len(stage_box_stds)}, {len(stage_loss_weights)}")
        self.box_roi_pool, self.mask_roi_pool = box_roi_pool, mask_roi_pool
        self.box_heads, self.mask_heads = nn.ModuleList(box_heads), nn.ModuleList(mask_heads)
        # MaxIoUAssigner(pos_iou_thr = neg_iou_thr = t, match_low_quality=False): one threshold.
        self.matchers = [Matcher(t, t, allow_low_quality_matches=False) for t in stage_iou_thresholds]
        # DeltaXYWHBBoxCoder(stds) is torchvision's coding with weights 1 / std.
        self.box_coders = [BoxCoder(tuple(1.0 / s for s in stds)) for stds in stage_box_stds]
        self.stage_loss_weights = tuple(stage_loss_weights)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.giou_weight = giou_weight
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training:
            return [], self._losses(features, [p.detach() for p in proposals], image_shapes, targets)
        return self._detect(features, proposals, image_shapes), {}

    # -- training ------------------------------------------------------------------------
    def _sample(self, stage: int, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]):
        """mmdet's ``MaxIoUAssigner`` + ``RandomSampler(add_gt_as_proposals=True)`` for one stage:
        per image the sampled boxes, their labels (0: background), the index of their ground
        truth and whether they are a ground-truth box themselves."""
        boxes, labels, matched, is_gt = [], [], [], []
        for p, t in zip(proposals, targets):
            gt = t["boxes"].to(p.dtype)
            p = torch.cat([gt, p])
            if len(gt):
                idx = self.matchers[stage](box_iou(gt, p))
                label = t["labels"][idx.clamp(min=0)]
                label[idx < 0] = 0
                idx = idx.clamp(min=0)
            else:
                idx = torch.zeros(len(p), dtype=torch.long, device=p.device)
                label = torch.zeros(len(p), dtype=torch.long, device=p.device)
            boxes.append(p)
            labels.append(label)
            matched.append(idx)
            is_gt.append(torch.arange(len(p), device=p.device) < len(gt))
        pos, neg = self.sampler(labels)
        keep = [torch.where(a | b)[0] for a, b in zip(pos, neg)]
        return ([x[k] for x, k in zip(boxes, keep)], [x[k] for x, k in zip(labels, keep)],
                [x[k] for x, k in zip(matched, keep)], [x[k] for x, k in zip(is_gt, keep)])

    def _losses(self, features, proposals, image_shapes, targets) -> dict[str, torch.Tensor]:
        if targets is None:
            raise ValueError("in training mode the detector needs targets")
        losses: dict[str, torch.Tensor] = {}
        last = len(self.box_heads) - 1
        for s, (head, coder, weight) in enumerate(zip(self.box_heads, self.box_coders, self.stage_loss_weights)):
            rois, labels, matched, is_gt = self._sample(s, proposals, targets)
            logits, deltas = head(self.box_roi_pool(features, rois, image_shapes))
            logits, deltas = logits.float(), deltas.float()
            all_rois, all_labels = torch.cat(rois), torch.cat(labels)
            gt_boxes = torch.cat([t["boxes"][m] if len(t["boxes"]) else r for t, m, r in zip(targets, matched, rois)])
            pos = torch.where(all_labels > 0)[0]
            pred = coder.decode_single(deltas[pos, all_labels[pos] - 1], all_rois[pos])
            # reg_decoded_bbox: GIoU on the decoded boxes, averaged over all sampled RoIs (mmdet's avg_factor).
            loss_box = generalized_box_iou_loss(pred, gt_boxes[pos].float(), reduction="sum", eps=1e-6)
            losses[f"loss_cls_{s}"] = weight * F.cross_entropy(logits, all_labels)
            losses[f"loss_box_{s}"] = weight * self.giou_weight * loss_box / max(len(all_labels), 1)
            pos_rois = [r[lab > 0] for r, lab in zip(rois, labels)]
            mask_logits = self.mask_heads[s](self.mask_roi_pool(features, pos_rois, image_shapes)).float()
            losses[f"loss_mask_{s}"] = weight * maskrcnn_loss(
                mask_logits, pos_rois, [t["masks"] for t in targets], [t["labels"] - 1 for t in targets],
                [m[lab > 0] for m, lab in zip(matched, labels)])
            if s < last:
                with torch.no_grad():  # regress the negatives for their predicted class
                    cls = torch.where(all_labels > 0, all_labels, logits[:, 1:].argmax(1) + 1)
                    refined = coder.decode_single(deltas[torch.arange(len(cls), device=cls.device), cls - 1], all_rois)
                    proposals = [clip_boxes_to_image(b[~g], size) for b, g, size in
                                 zip(refined.split([len(r) for r in rois]), is_gt, image_shapes)]
        return losses

    # -- test --------------------------------------------------------------------------------
    @torch.no_grad()
    def _detect(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        counts = [len(p) for p in proposals]
        rois = [p.float() for p in proposals]
        logit_sum = None
        for s, (head, coder) in enumerate(zip(self.box_heads, self.box_coders)):
            logits, deltas = head(self.box_roi_pool(features, rois, image_shapes))
            logits, deltas = logits.float(), deltas.float()
            logit_sum = logits if logit_sum is None else logit_sum + logits
            flat = torch.cat(rois)
            if s < len(self.box_heads) - 1:
                cls = logits[:, 1:].argmax(1)
                refined = coder.decode_single(deltas[torch.arange(len(cls), device=cls.device), cls], flat)
                rois = [clip_boxes_to_image(b, size) for b, size in zip(refined.split(counts), image_shapes)]
        # The mean of the stages' logits, then the softmax (mmdet averages cls_score, get_bboxes applies softmax).
        scores = F.softmax(logit_sum / len(self.box_heads), -1)[:, 1:]
        k = scores.shape[1]
        boxes = coder.decode_single(deltas.reshape(-1, 4), flat[:, None].expand(-1, k, -1).reshape(-1, 4)).view(-1, k, 4)
        results = []
        for b, sc, size in zip(boxes.split(counts), scores.split(counts), image_shapes):
            b = clip_boxes_to_image(b, size).reshape(-1, 4)
            labels = torch.arange(1, k + 1, device=sc.device).expand_as(sc).reshape(-1)
            sc = sc.reshape(-1)
            keep = torch.where(sc > self.score_thresh)[0]
            b, sc, labels = b[keep], sc[keep], labels[keep]
            keep = batched_nms(b, sc, labels, self.nms_thresh)[:self.detections_per_img]
            results.append({"boxes": b[keep], "scores": sc[keep], "labels": labels[keep]})
        det_boxes = [r["boxes"] for r in results]
        feats = self.mask_roi_pool(features, det_boxes, image_shapes)
        index = torch.arange(len(feats), device=feats.device)
        labels = torch.cat([r["labels"] for r in results]) - 1
        probs = sum(head(feats).float()[index, labels].sigmoid() for head in self.mask_heads) / len(self.mask_heads)
        for r, m in zip(results, probs.split([len(b) for b in det_boxes])):
            r["masks"] = m[:, None]  # (D, 1, 28, 28); transform.postprocess pastes them into the image
        return results


class CascadeMaskRCNN(GeneralizedRCNN):
    """Cascade Mask R-CNN with torchvision's detector interface (a ``GeneralizedRCNN``: the
    transform, the backbone, torchvision's RPN and :class:`CascadeRoIHeads`).

    ``backbone``: a :class:`~pvtv2.detection.PVTv2FPN` with P2-P6 (keys ``"0".."3", "pool"``);
    ``num_classes`` counts the background as torchvision does (``K + 1``; labels ``1..K``).
    Training: ``model(images, targets)`` with ``boxes``, ``labels`` and ``masks`` ``(N, H, W)``
    -> ``{"loss_objectness", "loss_rpn_box_reg", "loss_cls_s", "loss_box_s", "loss_mask_s"}``
    for stages ``s = 0, 1, 2`` (each already multiplied by its stage weight). Evaluation:
    ``model(images)`` -> per image ``{"boxes" (D, 4) xyxy in input pixels, "scores", "labels",
    "masks" (D, 1, H, W) probabilities}``.
    ``box_convs``, ``box_conv_channels``, ``box_fc_channels``, ``mask_convs``, ``mask_channels``
    shape the heads (the official 4, 256, 1024, 4, 256 by default); the other keywords are the
    official settings of :data:`~pvtv2.detection.kinds.KIND_RECIPES` (torchvision's names).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, min_size: int | tuple[int, ...] = 800,
                 max_size: int = 1333, image_mean: tuple[float, ...] | None = None,
                 image_std: tuple[float, ...] | None = None, box_convs: int = 4, box_conv_channels: int = 256,
                 box_fc_channels: int = 1024, mask_convs: int = 4, mask_channels: int = 256,
                 rpn_pre_nms_top_n_train: int = _HEAD["rpn_pre_nms_top_n_train"],
                 rpn_post_nms_top_n_train: int = _HEAD["rpn_post_nms_top_n_train"],
                 rpn_pre_nms_top_n_test: int = _TEST["rpn_pre_nms_top_n_test"],
                 rpn_post_nms_top_n_test: int = _TEST["rpn_post_nms_top_n_test"],
                 rpn_nms_thresh: float = _HEAD["rpn_nms_thresh"], rpn_fg_iou_thresh: float = _HEAD["rpn_fg_iou_thresh"],
                 rpn_bg_iou_thresh: float = _HEAD["rpn_bg_iou_thresh"],
                 rpn_batch_size_per_image: int = _HEAD["rpn_batch_size_per_image"],
                 rpn_positive_fraction: float = _HEAD["rpn_positive_fraction"],
                 box_batch_size_per_image: int = _HEAD["box_batch_size_per_image"],
                 box_positive_fraction: float = _HEAD["box_positive_fraction"],
                 stage_iou_thresholds: tuple[float, ...] = _HEAD["stage_iou_thresholds"],
                 stage_box_stds: tuple[tuple[float, ...], ...] = _HEAD["stage_box_stds"],
                 stage_loss_weights: tuple[float, ...] = _HEAD["stage_loss_weights"],
                 giou_weight: float = _HEAD["giou_weight"], box_score_thresh: float = _TEST["box_score_thresh"],
                 box_nms_thresh: float = _TEST["box_nms_thresh"],
                 box_detections_per_img: int = _TEST["box_detections_per_img"]):
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background: at least 2, got {num_classes}")
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        channels = backbone.out_channels
        levels = [str(i) for i in range(4)]  # RoIs from P2-P5 (featmap_strides 4-32); P6 feeds the RPN only
        # AnchorGenerator(scales=[8], ratios=[0.5, 1, 2], strides=[4..64]): sizes 32..512.
        anchors = AnchorGenerator(tuple((8 * s,) for s in backbone.strides), ((0.5, 1.0, 2.0),) * len(backbone.strides))
        rpn = RegionProposalNetwork(
            anchors, RPNHead(channels, 3), rpn_fg_iou_thresh, rpn_bg_iou_thresh, rpn_batch_size_per_image,
            rpn_positive_fraction, dict(training=rpn_pre_nms_top_n_train, testing=rpn_pre_nms_top_n_test),
            dict(training=rpn_post_nms_top_n_train, testing=rpn_post_nms_top_n_test), rpn_nms_thresh)
        k = num_classes - 1
        n = len(stage_iou_thresholds)
        roi_heads = CascadeRoIHeads(
            MultiScaleRoIAlign(levels, 7, sampling_ratio=0),
            [ConvFCBoxHead(k, channels, num_convs=box_convs, conv_channels=box_conv_channels,
                           fc_channels=box_fc_channels) for _ in range(n)],
            MultiScaleRoIAlign(levels, 14, sampling_ratio=0),
            [MaskHead(k, channels, num_convs=mask_convs, channels=mask_channels) for _ in range(n)],
            stage_iou_thresholds=stage_iou_thresholds, stage_box_stds=stage_box_stds,
            stage_loss_weights=stage_loss_weights, batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction, giou_weight=giou_weight, score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img)
        transform = GeneralizedRCNNTransform(min_size, max_size, image_mean or IMAGENET_MEAN, image_std or IMAGENET_STD,
                                             size_divisible=32)
        super().__init__(backbone, rpn, roi_heads, transform)
        self.num_classes = k
        #: The shape-defining settings, saved with the weights (see ``save_detector``).
        self.arch = {"box_convs": box_convs, "box_conv_channels": box_conv_channels, "box_fc_channels": box_fc_channels,
                     "mask_convs": mask_convs, "mask_channels": mask_channels}

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("in training mode the detector needs targets (a list of {'boxes', 'labels', "
                                 "'masks'} dicts)")
            check_labels(targets, self.num_classes)
            if any("masks" not in t for t in targets):
                raise ValueError("Cascade Mask R-CNN trains on instance masks: every target needs 'masks' (N, H, W)")
        return super().forward(images, targets)
