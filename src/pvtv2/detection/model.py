"""PVTv2 + FPN backbones for torchvision's detectors (RetinaNet, Faster R-CNN, Mask R-CNN,
FCOS) and ours on torchvision's parts (ATSS, GFL, Sparse R-CNN, Cascade Mask R-CNN).

For torchvision's detectors only the glue is ours: the FPN, anchor generators, heads, RoI ops,
losses and box coding are torchvision's (anchors and box coding kept in float32 under autocast:
:mod:`pvtv2.detection.fp32_boxes`). The necks follow whai362/PVT ``detection/configs``:

* RetinaNet (``retinanet_pvt_v2_*_fpn_1x_coco.py``): FPN over stages 2-4 (``start_level=1``),
  256 channels, P6/P7 from stage 4's map (``add_extra_convs='on_input'``), 5 levels P3-P7.
* Faster/Mask R-CNN (``mask_rcnn_pvt_v2_*_fpn_1x_coco.py``) and Cascade Mask R-CNN
  (``cascade_mask_rcnn_pvt_v2_*_fpn_3x_mstrain_fp16.py``): FPN over all 4 stages, 256 channels,
  P6 by max-pooling P5 (``num_outs=5``), 5 levels P2-P6.
* ATSS / GFL (``atss_pvt_v2_*_fpn_3x_mstrain_fp16.py``, ``gfl_...``): stages 2-4, P6/P7 by
  stride-2 convs on P5's output without a ReLU between them (``add_extra_convs='on_output'``,
  MMDetection's default ``relu_before_extra_convs=False``), P3-P7.
* Sparse R-CNN (``sparse_rcnn_pvt_v2_*_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py``): all 4
  stages, ``num_outs=4``: no extra level, P2-P5.
* FCOS (no official PVT config): torchvision's ``fcos_resnet50_fpn`` neck, stages 2-4 with
  P6/P7 from P5's output and a ReLU before P7 (MMDetection's FCOS sets
  ``relu_before_extra_convs=True`` too), P3-P7.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..checkpoint import TaskFile, load_task_file, save_task_file
from ..checkpoint.dense import (DenseCheckpoint, backbone_from_keys, is_torch_file, load_strict, mmdet_maskrcnn_to_pvtv2,
                                mmdet_retinanet_to_pvtv2, read_dense_checkpoint)
from ..errors import CheckpointError
from ..factory import create_model
from ..layers.onednn import channels_last_pays
from ..model import PyramidVisionTransformerV2
from .atss import ATSS
from .cascade_rcnn import CascadeMaskRCNN
from .fp32_boxes import Float32BoxCoder, use_float32_boxes
from .gfl import GFL
from .retinanet import RetinaNet
from .roi_align import use_parallel_roi_align
from .sparse_rcnn import SparseRCNN

DETECTORS = {"retinanet": RetinaNet, "fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "fcos": FCOS, "atss": ATSS,
             "gfl": GFL, "sparse_rcnn": SparseRCNN, "cascade_maskrcnn": CascadeMaskRCNN}
KINDS = tuple(DETECTORS)
#: The kinds whose heads read the maps through RoI Align: torchvision's CPU kernel copies channels-last maps
#: back to the default layout on every call (Mask R-CNN b0 in bf16 ran 8% slower), so their necks keep it.
ROI_KINDS = ("fasterrcnn", "maskrcnn", "cascade_maskrcnn", "sparse_rcnn")
#: The kinds that predict instance masks: they train on the masks and are scored on ``segm`` too.
MASK_KINDS = ("maskrcnn", "cascade_maskrcnn")

#: The neck of each kind's official config (see the module docstring): the first PVTv2 stage
#: the FPN reads (1-based) and how the levels above the last stage are made.
NECKS = {"retinanet": (2, "p6p7_on_input"), "fasterrcnn": (1, "maxpool"), "maskrcnn": (1, "maxpool"),
         "fcos": (2, "p6p7_on_output_relu"), "atss": (2, "p6p7_on_output"), "gfl": (2, "p6p7_on_output"),
         "sparse_rcnn": (1, "none"), "cascade_maskrcnn": (1, "maxpool")}
#: The neck of files saved before detector files recorded their neck: RetinaNet had
#: torchvision's ``LastLevelP6P7`` (a ReLU before P7; b0's P6 read P5, not C5).
LEGACY_NECKS = {"retinanet": (2, "p6p7")}
#: Test settings of the official configs where torchvision's defaults differ: mmdet's RetinaNet keeps
#: ``max_per_img=100`` boxes per image (torchvision's 300).
TEST_OVERRIDES = {"retinanet": {"detections_per_img": 100}}
EXTRA_LEVELS = {"maxpool": [64], "p6p7": [64, 128], "p6p7_on_output": [64, 128], "p6p7_on_output_relu": [64, 128],
                "p6p7_on_input": [64, 128], "none": []}


class P6P7OnOutput(ExtraFPNBlock):
    """P6 = 3x3 stride-2 conv on P5 (the FPN's output), P7 = the same on P6, with or without a
    ReLU before P7 (MMDetection's ``relu_before_extra_convs``)."""

    def __init__(self, channels: int, *, relu: bool):
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)
        for m in (self.p6, self.p7):
            nn.init.kaiming_uniform_(m.weight, a=1)
            nn.init.zeros_(m.bias)
        self.relu = relu

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor], names: list[str]):
        p6 = self.p6(p[-1])
        p7 = self.p7(F.relu(p6) if self.relu else p6)
        return p + [p6, p7], names + ["p6", "p7"]


class P6P7OnInput(ExtraFPNBlock):
    """MMDetection's ``add_extra_convs='on_input'`` (``relu_before_extra_convs=False``): P6 = 3x3
    stride-2 conv on C5 (the backbone's last map), P7 = the same on P6, no ReLU between them.
    torchvision's ``LastLevelP6P7`` differs twice: a ReLU before P7, and it reads P5 instead of
    C5 when the two have the same width (pvt_v2_b0: 256)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor], names: list[str]):
        p6 = self.p6(c[-1])
        return p + [p6, self.p7(p6)], names + ["p6", "p7"]


class MMDetAnchorGenerator(AnchorGenerator):
    """MMDetection 2.x's ``AnchorGenerator`` of the RetinaNet configs, in float32: at stride s,
    sizes ``s * octave_base_scale * 2**(i / scales_per_octave)`` times each ratio (ratio-major, as
    torchvision), centred on the cell's corner (``center_offset=0``, as torchvision), but neither
    rounded (torchvision rounds the base anchors and truncates the sizes: 40 for 40.3) nor
    strided by ``image size // map size`` (torchvision's stride, 61 instead of 64 on a P6 of 13
    rows from 800 pixels): the strides are fixed."""

    def __init__(self, strides: tuple[int, ...] = (8, 16, 32, 64, 128), *, octave_base_scale: float = 4,
                 scales_per_octave: int = 3, ratios: tuple[float, ...] = (0.5, 1.0, 2.0)):
        scales = [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        super().__init__(tuple(tuple(s * k for k in scales) for s in strides), (tuple(ratios),) * len(strides))
        self.strides = tuple(strides)

    def generate_anchors(self, scales, aspect_ratios, dtype: torch.dtype = torch.float32,
                         device: torch.device = torch.device("cpu")) -> torch.Tensor:
        scales = torch.as_tensor(scales, dtype=torch.float64)
        h_ratios = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=torch.float64))
        ws = ((1 / h_ratios)[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).to(dtype=torch.float32, device=device)

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        device = feature_maps[0].device
        self.set_cell_anchors(torch.float32, device)
        strides = [[torch.tensor(s, device=device), torch.tensor(s, device=device)] for s in self.strides]
        anchors = torch.cat(self.grid_anchors([list(f.shape[-2:]) for f in feature_maps], strides))
        return [anchors for _ in image_list.image_sizes]


class MMDetBoxCoder(Float32BoxCoder):
    """MMDetection's ``DeltaXYWHBBoxCoder`` (means 0, stds 1): torchvision's decoding, but with
    ``dw``/``dh`` clamped on both sides to ``log(1000/16)`` (torchvision clamps the top only)."""

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        rel_codes = rel_codes.float().clone()
        rel_codes[:, 2::4] = rel_codes[:, 2::4].clamp(min=-self.bbox_xform_clip)
        rel_codes[:, 3::4] = rel_codes[:, 3::4].clamp(min=-self.bbox_xform_clip)
        return super().decode_single(rel_codes, boxes)


class MMDetRoIAlign(MultiScaleRoIAlign):
    """MMDetection's ``SingleRoIExtractor`` over P2-P5: ``RoIAlign(aligned=True, sampling_ratio=0)``
    (torchvision's ``MultiScaleRoIAlign`` uses ``aligned=False`` and 2 samples per bin), level
    ``floor(log2(sqrt(area) / 56 + 1e-6))`` clamped to 0..3 (``finest_scale=56``), fixed strides."""

    def __init__(self, output_size: int, strides: tuple[int, ...] = (4, 8, 16, 32)):
        super().__init__([str(i) for i in range(len(strides))], output_size, sampling_ratio=0)
        self.strides = tuple(strides)

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        feats = [x[name] for name in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
        scale = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).sqrt()
        levels = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(0, len(feats) - 1).long()
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], *self.output_size))
        for level, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.where(levels == level)[0]
            out[idx] = roi_align(feat, rois[idx].to(feat.dtype), self.output_size, spatial_scale=1 / stride,
                                 sampling_ratio=0, aligned=True).to(out.dtype)
        return out


class PVTv2FPN(nn.Module):
    """PVTv2 stages ``first_stage..4`` -> FPN -> ``OrderedDict`` of maps with ``out_channels``
    channels each, keyed ``"0", "1", ...`` then the extra levels (``"pool"`` or ``"p6", "p7"``)."""

    def __init__(self, body: PyramidVisionTransformerV2, *, first_stage: int = 1, out_channels: int = 256,
                 extra: str = "maxpool", channels_last: bool | None = None):
        super().__init__()
        self.body = body
        self.first_stage, self.extra = first_stage, extra
        in_channels = list(body.embed_dims)[first_stage - 1:]
        if extra == "maxpool":
            extra_blocks = LastLevelMaxPool()
        elif extra == "p6p7":
            extra_blocks = LastLevelP6P7(in_channels[-1], out_channels)  # older files (LEGACY_NECKS)
        elif extra == "p6p7_on_input":
            extra_blocks = P6P7OnInput(in_channels[-1], out_channels)
        elif extra in ("p6p7_on_output", "p6p7_on_output_relu"):
            extra_blocks = P6P7OnOutput(out_channels, relu=extra.endswith("relu"))
        elif extra == "none":
            extra_blocks = None
        else:
            raise ValueError(f"extra levels must be one of {', '.join(EXTRA_LEVELS)}, got {extra!r}")
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels
        self.strides = [2 ** (s + 1) for s in range(first_stage, 5)] + EXTRA_LEVELS[extra]
        self.channels_last = channels_last  # the FPN (and the heads) on channels-last maps: None where it pays

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body.forward_features(x)[self.first_stage - 1:]
        layout = torch.channels_last if channels_last_pays(x, self.channels_last, self.training) else torch.contiguous_format
        return self.fpn(OrderedDict((str(i), f.contiguous(memory_format=layout)) for i, f in enumerate(feats)))


def create_backbone(backbone_name: str, kind: str, *, pretrained_backbone: Any = None, drop_path_rate: float = 0.1,
                    **overrides: Any) -> PVTv2FPN:
    # features_only: the maps alone (a PVTv1 then has no class token or final norm, as the
    # official detection backbone).
    body = create_model(backbone_name, features_only=True, pretrained=pretrained_backbone,
                        drop_path_rate=drop_path_rate, **overrides)
    return _with_fpn(body, kind)


def _with_fpn(body: PyramidVisionTransformerV2, kind: str, neck: tuple[int, str] | None = None) -> PVTv2FPN:
    """The neck of the official configs for ``kind`` (see the module docstring), or ``neck``
    (``(first_stage, extra)``, as a saved file records it)."""
    if kind not in NECKS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {', '.join(KINDS)}")
    first_stage, extra = neck or NECKS[kind]
    return PVTv2FPN(body, first_stage=first_stage, extra=extra, channels_last=False if kind in ROI_KINDS else None)


def create_detector(kind: str, backbone_name: str, num_classes: int, *, pretrained_backbone: Any = None,
                    drop_path_rate: float = 0.1, min_size: int | tuple[int, ...] = 800, max_size: int = 1333,
                    **kwargs: Any) -> nn.Module:
    """A torchvision detector on a PVTv2 + FPN backbone.

    ``kind``: one of :data:`KINDS` (``retinanet``, ``fasterrcnn``, ``maskrcnn``, ``fcos``,
    ``atss``, ``gfl``, ``sparse_rcnn``, ``cascade_maskrcnn``). ``num_classes`` counts the object categories; targets
    use labels ``1..num_classes`` (0 is the background, as torchvision).
    ``min_size``/``max_size``: the 1333x800-style test resize of the official configs.
    Other keyword arguments go to the detector (score thresholds, NMS...).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {', '.join(KINDS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1 (object categories, without background), got {num_classes}")
    backbone = create_backbone(backbone_name, kind, pretrained_backbone=pretrained_backbone, drop_path_rate=drop_path_rate)
    model = use_float32_boxes(DETECTORS[kind](backbone, num_classes=num_classes + 1, min_size=min_size,
                                              max_size=max_size, **{**TEST_OVERRIDES.get(kind, {}), **kwargs}))
    model = use_parallel_roi_align(model)
    model.kind, model.backbone_name, model.num_object_classes = kind, backbone_name, num_classes
    return model


def save_detector(model: nn.Module, path: str | os.PathLike, *, class_names: list[str],
                  extra: dict[str, Any] | None = None) -> Path:
    """Safetensors weights with the detector kind, backbone config, class names, resize, the
    head's shape settings (``model.arch``: Sparse R-CNN's proposals and stages...) and ``extra``
    (e.g. the COCO category ids) in the metadata: :func:`load_detector` needs nothing else."""
    t = model.transform
    return save_task_file(model, path, task="detect", backbone=model.backbone.body, class_names=class_names,
                          extra=extra, kind=model.kind, min_size=json.dumps(list(t.min_size)), max_size=str(t.max_size),
                          arch=json.dumps(getattr(model, "arch", {})),
                          neck=json.dumps([model.backbone.first_stage, model.backbone.extra]))


def load_detector(path: str | os.PathLike, *, device: str | torch.device = "cpu", **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a detector written by :func:`save_detector` -> ``(model in eval mode, metadata)``;
    keyword arguments (``box_score_thresh``...) go to the torchvision model. A published
    MMDetection 2.x RetinaNet ``.pth`` (whai362/PVT ``detection``) loads too, format
    auto-detected, and so does a Mask R-CNN one: see :func:`official_retinanet`, :func:`official_maskrcnn`."""
    if Path(path).is_file() and is_torch_file(path):
        model, info = _load_mmdet(path, **kwargs)
        return model.eval().to(device), info
    def build(f: TaskFile) -> nn.Module:
        kind = f.metadata.get("kind")
        if kind not in DETECTORS:
            raise CheckpointError(f"{f.path}: a {kind!r} detector, which this version of pvtv2 does not know "
                                  f"(it knows {', '.join(KINDS)}); upgrade pvtv2")
        arch = json.loads(f.metadata.get("arch", "{}"))  # absent in files of the torchvision kinds before it existed
        neck = tuple(json.loads(f.metadata["neck"])) if "neck" in f.metadata else LEGACY_NECKS.get(kind)
        model = use_float32_boxes(DETECTORS[kind](_with_fpn(f.backbone, kind, neck), num_classes=len(f.class_names) + 1,
                                                  min_size=tuple(f.json("min_size")), max_size=int(f.json("max_size")),
                                                  **{**TEST_OVERRIDES.get(kind, {}), **arch, **kwargs}))
        model = use_parallel_roi_align(model)
        model.kind, model.num_object_classes = kind, len(f.class_names)
        return model

    model, f = load_task_file(path, task="detect", label="detection", build=build)
    info = {"kind": model.kind, "class_names": f.class_names, **f.extra}
    return model.eval().to(device), info


# -- the published MMDetection checkpoints ----------------------------------------------------
#: mmdet's sigmoid classifier has no background column; torchvision's label 0 is the background.
#: Its logit gets this bias (and zero weights): sigmoid gives exactly 0, below any score threshold.
BACKGROUND_LOGIT = -1000.0


def official_retinanet(body: PyramidVisionTransformerV2, num_classes: int, **kwargs: Any) -> RetinaNet:
    """torchvision's RetinaNet made to compute what ``retinanet_pvt_v2_*_fpn_1x_coco.py`` does
    (MMDetection 2.x): the neck's P6/P7 (:class:`P6P7OnInput`), the anchors
    (:class:`MMDetAnchorGenerator`), the box decoding (:class:`MMDetBoxCoder`) and ``test_cfg``
    (``nms_pre=1000, score_thr=0.05, nms iou 0.5, max_per_img=100``). ``num_classes`` counts the
    object categories (torchvision's head gets one more, the background)."""
    backbone = _with_fpn(body, "retinanet")  # the neck pvtv2 trains: P6 on C5, P7 on P6 without ReLU
    settings = dict(min_size=800, max_size=1333, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100,
                    topk_candidates=1000)
    model = RetinaNet(backbone, num_classes=num_classes + 1, anchor_generator=MMDetAnchorGenerator(),
                      **{**settings, **kwargs})
    model = use_float32_boxes(model)
    model.box_coder = MMDetBoxCoder(model.box_coder.weights, model.box_coder.bbox_xform_clip)
    model.kind, model.num_object_classes = "retinanet", num_classes
    return model


def _load_mmdet(path: str | os.PathLike, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    ckpt = read_dense_checkpoint(path)
    if ckpt.format == "mmseg-fpn":
        raise CheckpointError(f"{path}: a published Semantic FPN (segmentation) checkpoint; `pvtv2 segment eval` takes it")
    if ckpt.format == "mmdet-maskrcnn":
        return _load_mmdet_maskrcnn(ckpt, **kwargs)
    return _load_mmdet_retinanet(ckpt, **kwargs)


def _load_mmdet_retinanet(ckpt: DenseCheckpoint, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    cls = ckpt.state_dict.get("bbox_head.retina_cls.weight")
    num_anchors = 9  # 3 scales x 3 ratios (octave_base_scale=4, scales_per_octave=3)
    if cls is None or cls.ndim != 4 or cls.shape[0] % num_anchors:
        raise CheckpointError(f"{ckpt.source}: bbox_head.retina_cls.weight is missing or not "
                              f"{num_anchors} anchors x classes rows")
    num_classes = cls.shape[0] // num_anchors
    model = official_retinanet(backbone_from_keys(ckpt), num_classes, **kwargs)
    load_strict(model, mmdet_retinanet_to_pvtv2(ckpt.state_dict, num_anchors=num_anchors,
                                                background_logit=BACKGROUND_LOGIT), ckpt)
    names = ckpt.class_names(num_classes)
    return model, {"kind": "retinanet", "class_names": names, "format": ckpt.format}


def official_maskrcnn(body: PyramidVisionTransformerV2, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """torchvision's Mask R-CNN made to compute what ``mask_rcnn_pvt_v2_*_fpn_1x_coco.py`` does
    (MMDetection 2.x): RPN anchors (scale 8, ratios 0.5/1/2, strides 4-64, not rounded), RoIAlign
    (:class:`MMDetRoIAlign`), box decoding clamped both sides (:class:`MMDetBoxCoder`; RPN stds 1,
    RoI stds 0.1/0.1/0.2/0.2 = torchvision's weights 10/10/5/5) and ``test_cfg`` (RPN 1000 per level,
    NMS 0.7, 1000 proposals; RoI score 0.05, NMS 0.5, 100 per image). The neck is the one our
    training uses (P2-P5 + max-pooled P6, as MMDetection's ``num_outs=5`` without extra convs)."""
    backbone = PVTv2FPN(body, first_stage=1, extra="maxpool", channels_last=False)
    settings = dict(min_size=800, max_size=1333, rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000,
                    rpn_nms_thresh=0.7, box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100)
    anchors = MMDetAnchorGenerator((4, 8, 16, 32, 64), octave_base_scale=8, scales_per_octave=1)
    model = MaskRCNN(backbone, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                     box_roi_pool=MMDetRoIAlign(7), mask_roi_pool=MMDetRoIAlign(14), **{**settings, **kwargs})
    model = use_float32_boxes(model)
    for owner in (model.rpn, model.roi_heads):
        owner.box_coder = MMDetBoxCoder(owner.box_coder.weights, owner.box_coder.bbox_xform_clip)
    model.kind, model.num_object_classes = "maskrcnn", num_classes
    return model


def _load_mmdet_maskrcnn(ckpt: DenseCheckpoint, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    cls = ckpt.state_dict.get("roi_head.bbox_head.fc_cls.weight")
    if cls is None or cls.ndim != 2 or cls.shape[0] < 2:
        raise CheckpointError(f"{ckpt.source}: roi_head.bbox_head.fc_cls.weight is missing or not (classes + 1, features)")
    num_classes = cls.shape[0] - 1
    model = official_maskrcnn(backbone_from_keys(ckpt), num_classes, **kwargs)
    load_strict(model, mmdet_maskrcnn_to_pvtv2(ckpt.state_dict), ckpt)
    return model, {"kind": "maskrcnn", "class_names": ckpt.class_names(num_classes), "format": ckpt.format}
