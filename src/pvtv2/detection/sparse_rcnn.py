"""Sparse R-CNN (Sun et al., CVPR 2021) on a PVTv2 + FPN backbone, as whai362/PVT's
``sparse_rcnn_pvt_v2_b2_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py`` configures
MMDetection v2 (``EmbeddingRPNHead``, ``SparseRoIHead``, ``DIIHead``, ``DynamicConv``,
``HungarianAssigner``):

* FPN on all four stages, 256 channels, no extra level (P2-P5);
* 300 learned proposal boxes (normalised cx, cy, w, h, initialised to the whole image) and
  300 learned 256-d proposal features;
* six stages, each: 7x7 RoI Align of the current boxes (sampling ratio 2, level by box size);
  multi-head self-attention (8 heads) over the proposal features + residual + LayerNorm; the
  dynamic instance-interactive conv (two 1x1 convs whose 256x64 and 64x256 weights are
  generated from each proposal feature and applied to its RoI features, then a linear layer
  over the flattened 7x7x256) + residual + LayerNorm; an FFN (256-2048-256) + residual +
  LayerNorm; one fc-LN-ReLU then the sigmoid classifier; three fc-LN-ReLU then 4 box deltas
  (stds 0.5, 0.5, 1, 1) applied to the stage's boxes, which the next stage starts from
  (detached; the features are not);
* per stage, a one-to-one Hungarian matching (focal cost x2 + L1 on normalised xyxy x5 +
  GIoU cost x2) and the set loss: focal (x2) over all proposals, L1 on boxes normalised by
  the image size (x5) and GIoU (x2) over the matched ones, each averaged over the number of
  ground-truth boxes of all GPUs; the six stages' losses are summed (weight 1 each);
* at test: no NMS, the 300 best (proposal, class) scores of the last stage.

RoI Align is torchvision's ``MultiScaleRoIAlign`` (the same level rule as MMDetection's
``finest_scale=56``, but ``aligned=False`` where mmcv's RoIAlign defaults to ``aligned=True``:
a half-pixel shift of the sampling grid).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image, generalized_box_iou_loss, sigmoid_focal_loss

from .kinds import KIND_RECIPES
from .losses import reduce_mean
from .matcher import HungarianMatcher
from .one_stage import IMAGENET_MEAN, IMAGENET_STD, check_labels

_TEST = KIND_RECIPES["sparse_rcnn"].test


class DynamicConv(nn.Module):
    """Sparse R-CNN's dynamic instance-interactive conv: each proposal's feature ``(M, C)``
    generates the weights of two 1x1 convs applied to its own RoI features ``(M, C, S, S)`` ->
    ``(M, out_channels)``."""

    def __init__(self, in_channels: int = 256, feat_channels: int = 64, out_channels: int = 256, pooler_size: int = 7):
        super().__init__()
        self.in_channels, self.feat_channels, self.out_channels = in_channels, feat_channels, out_channels
        self.dynamic_layer = nn.Linear(in_channels, (in_channels + out_channels) * feat_channels)
        self.norm_in = nn.LayerNorm(feat_channels)
        self.norm_out = nn.LayerNorm(out_channels)
        self.fc_layer = nn.Linear(out_channels * pooler_size ** 2, out_channels)
        self.fc_norm = nn.LayerNorm(out_channels)

    def forward(self, proposal_feat: torch.Tensor, roi_feat: torch.Tensor) -> torch.Tensor:
        x = roi_feat.flatten(2).transpose(1, 2)  # (M, S*S, C)
        params = self.dynamic_layer(proposal_feat)
        n_in = self.in_channels * self.feat_channels
        w_in = params[:, :n_in].view(-1, self.in_channels, self.feat_channels)
        w_out = params[:, n_in:].view(-1, self.feat_channels, self.out_channels)
        x = torch.relu(self.norm_in(torch.bmm(x, w_in)))
        x = torch.relu(self.norm_out(torch.bmm(x, w_out)))
        return torch.relu(self.fc_norm(self.fc_layer(x.flatten(1))))


def _fc_ln_relu(channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(channels, channels, bias=False), nn.LayerNorm(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DIIHead(nn.Module):
    """One dynamic instance-interactive stage: RoI features ``(B * P, C, S, S)`` and proposal
    features ``(B, P, C)`` -> ``(class logits (B, P, K), box deltas (B, P, 4), new proposal
    features (B, P, C))``."""

    def __init__(self, num_classes: int, channels: int = 256, *, num_heads: int = 8, feedforward_channels: int = 2048,
                 dynamic_channels: int = 64, pooler_size: int = 7, num_cls_fcs: int = 1, num_reg_fcs: int = 3,
                 dropout: float = 0.0, prior_prob: float = 0.01):
        super().__init__()
        self.attention = nn.MultiheadAttention(channels, num_heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(channels)
        self.instance_interactive_conv = DynamicConv(channels, dynamic_channels, channels, pooler_size)
        self.instance_interactive_conv_dropout = nn.Dropout(dropout)
        self.instance_interactive_conv_norm = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(feedforward_channels, channels), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(channels)
        self.cls_fcs = _fc_ln_relu(channels, num_cls_fcs)
        self.fc_cls = nn.Linear(channels, num_classes)
        self.reg_fcs = _fc_ln_relu(channels, num_reg_fcs)
        self.fc_reg = nn.Linear(channels, 4)
        # The official init: Xavier for every matrix, norms as PyTorch, the classifier's bias
        # at the focal-loss prior.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.constant_(self.fc_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, roi_feat: torch.Tensor, proposal_feat: torch.Tensor):
        b, p, c = proposal_feat.shape
        x = self.attention_norm(proposal_feat + self.attention(proposal_feat, proposal_feat, proposal_feat,
                                                               need_weights=False)[0])
        x = x.reshape(b * p, c)
        x = self.instance_interactive_conv_norm(
            x + self.instance_interactive_conv_dropout(self.instance_interactive_conv(x, roi_feat)))
        x = self.ffn_norm(x + self.ffn(x))
        logits = self.fc_cls(self.cls_fcs(x)).view(b, p, -1)
        deltas = self.fc_reg(self.reg_fcs(x)).view(b, p, 4)
        return logits, deltas, x.view(b, p, c)


class SparseRCNN(nn.Module):
    """Sparse R-CNN with torchvision's detector interface.

    ``backbone``: a :class:`~pvtv2.detection.PVTv2FPN` with 4 levels (P2-P5, keys ``"0".."3"``);
    ``num_classes`` counts the background as torchvision does (``K + 1``; labels ``1..K``).
    Training: ``model(images, targets)`` -> ``{"loss_cls", "loss_bbox", "loss_iou"}`` (each the
    sum over the stages). Evaluation: ``model(images)`` -> per image ``{"boxes" (D, 4) xyxy in
    input pixels, "scores" (D,), "labels" (D,)}``, ``D = detections_per_img``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, min_size: int | tuple[int, ...] = 800,
                 max_size: int = 1333, image_mean: tuple[float, ...] | None = None,
                 image_std: tuple[float, ...] | None = None, num_proposals: int = 300, num_stages: int = 6,
                 num_heads: int = 8, feedforward_channels: int = 2048, dynamic_channels: int = 64,
                 pooler_size: int = 7, sampling_ratio: int = 2, dropout: float = 0.0,
                 detections_per_img: int = _TEST["detections_per_img"], cls_weight: float = 2.0, l1_weight: float = 5.0,
                 giou_weight: float = 2.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background: at least 2, got {num_classes}")
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        channels = backbone.out_channels
        self.num_classes = num_classes - 1
        self.transform = GeneralizedRCNNTransform(min_size, max_size, image_mean or IMAGENET_MEAN,
                                                  image_std or IMAGENET_STD, size_divisible=32)
        self.backbone = backbone
        self.init_proposal_bboxes = nn.Embedding(num_proposals, 4)
        self.init_proposal_features = nn.Embedding(num_proposals, channels)
        with torch.no_grad():  # every proposal starts as the whole image: (cx, cy, w, h) = (.5, .5, 1, 1)
            self.init_proposal_bboxes.weight[:, :2] = 0.5
            self.init_proposal_bboxes.weight[:, 2:] = 1.0
        names = [str(i) for i in range(len(backbone.strides))]
        self.box_roi_pool = MultiScaleRoIAlign(names, pooler_size, sampling_ratio)
        self.stages = nn.ModuleList(
            DIIHead(self.num_classes, channels, num_heads=num_heads, feedforward_channels=feedforward_channels,
                    dynamic_channels=dynamic_channels, pooler_size=pooler_size, dropout=dropout)
            for _ in range(num_stages))
        # DeltaXYWHBBoxCoder with stds (0.5, 0.5, 1, 1), no clipping: torchvision's with weights 1/std.
        self.box_coder = BoxCoder(weights=(2.0, 2.0, 1.0, 1.0))
        self.matcher = HungarianMatcher(cls_weight=cls_weight, l1_weight=l1_weight, giou_weight=giou_weight,
                                        alpha=focal_alpha, gamma=focal_gamma)
        self.cls_weight, self.l1_weight, self.giou_weight = cls_weight, l1_weight, giou_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.detections_per_img = detections_per_img
        #: The shape-defining settings, saved with the weights (see ``save_detector``).
        self.arch = {"num_proposals": num_proposals, "num_stages": num_stages, "num_heads": num_heads,
                     "feedforward_channels": feedforward_channels, "dynamic_channels": dynamic_channels,
                     "pooler_size": pooler_size}

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the detector needs targets (a list of {'boxes', 'labels'} dicts)")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        if self.training:
            check_labels(targets, self.num_classes)
        feats = self.backbone(batch.tensors)
        whwh = torch.tensor([[w, h, w, h] for h, w in batch.image_sizes], dtype=torch.float32,
                            device=batch.tensors.device)  # (B, 4)
        init = self.init_proposal_bboxes.weight
        init_xyxy = torch.cat([init[:, :2] - init[:, 2:] / 2, init[:, :2] + init[:, 2:] / 2], 1)
        boxes = init_xyxy[None] * whwh[:, None]  # (B, P, 4): gradients reach the learned boxes
        obj = self.init_proposal_features.weight[None].expand(len(images), -1, -1)
        losses: dict[str, torch.Tensor] = {}
        for stage in self.stages:
            roi = self.box_roi_pool(feats, list(boxes.detach()), batch.image_sizes)
            logits, deltas, obj = stage(roi, obj)
            boxes = self.box_coder.decode_single(deltas.reshape(-1, 4).float(), boxes.reshape(-1, 4)).view_as(deltas)
            if self.training:
                for k, v in self._stage_loss(logits.float(), boxes, targets, whwh).items():
                    losses[k] = losses[k] + v if k in losses else v
            boxes = boxes.detach()
        if self.training:
            return losses
        return self.transform.postprocess(self._detect(logits, boxes, batch.image_sizes), batch.image_sizes,
                                          original_sizes)

    def _stage_loss(self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                    whwh: torch.Tensor) -> dict[str, torch.Tensor]:
        cls_target = torch.zeros_like(logits)
        img, rows, gt_boxes = [], [], []
        for i, t in enumerate(targets):
            gt, labels = t["boxes"].float(), t["labels"] - 1
            pred_idx, gt_idx = self.matcher(logits[i].detach(), boxes[i].detach(), labels, gt, whwh[i])
            cls_target[i, pred_idx, labels[gt_idx]] = 1.0
            img.append(torch.full_like(pred_idx, i))
            rows.append(pred_idx)
            gt_boxes.append(gt[gt_idx])
        img, rows, gt_boxes = torch.cat(img), torch.cat(rows), torch.cat(gt_boxes)
        avg = reduce_mean(logits.new_tensor(float(len(rows)))).clamp(min=1.0)
        loss_cls = sigmoid_focal_loss(logits.flatten(0, 1), cls_target.flatten(0, 1), alpha=self.focal_alpha,
                                      gamma=self.focal_gamma, reduction="sum") / avg
        pred = boxes[img, rows]
        scale = whwh[img]
        loss_bbox = (pred / scale - gt_boxes / scale).abs().sum() / avg
        loss_iou = generalized_box_iou_loss(pred, gt_boxes, reduction="sum", eps=1e-6) / avg
        return {"loss_cls": self.cls_weight * loss_cls, "loss_bbox": self.l1_weight * loss_bbox,
                "loss_iou": self.giou_weight * loss_iou}

    @torch.no_grad()
    def _detect(self, logits: torch.Tensor, boxes: torch.Tensor, image_sizes: list[tuple[int, int]]
                ) -> list[dict[str, torch.Tensor]]:
        scores = logits.float().sigmoid().flatten(1)  # (B, P * K)
        k = min(self.detections_per_img, scores.shape[1])
        out = []
        for i, size in enumerate(image_sizes):
            top, idx = scores[i].topk(k)
            out.append({"boxes": clip_boxes_to_image(boxes[i, idx // self.num_classes], size), "scores": top,
                        "labels": idx % self.num_classes + 1})
        return out
