"""The published dense-prediction checkpoints: MMSegmentation 0.x / MMDetection 2.x files
(``{"state_dict": ..., "meta": {...}}``) -> the keys of our task models.

* ``mmseg-fpn``: whai362/PVTv2-Seg and whai362/PVT ``segmentation`` Semantic FPN
  (``configs/sem_fpn/*``): ``backbone.*`` in the official PVTv2 layout, MMSegmentation's FPN neck
  (``neck.lateral_convs.{i}.conv``, ``neck.fpn_convs.{i}.conv``) and ``FPNHead``
  (``decode_head.scale_heads.{i}.{j}.conv/bn``, ``decode_head.conv_seg``).
* ``mmdet-retinanet``: whai362/PVT ``detection`` RetinaNet (``retinanet_pvt_v2_*_fpn_1x_coco.py``):
  ``backbone.*``, MMDetection's FPN (``neck.lateral_convs.{i}``, ``neck.fpn_convs.{i}``; with
  ``start_level=1`` and ``num_outs=5`` the last two ``fpn_convs`` make P6 and P7) and
  ``RetinaHead`` (``bbox_head.cls_convs/reg_convs.{i}.conv``, ``bbox_head.retina_cls/retina_reg``).
* ``mmdet-maskrcnn``: whai362/PVT ``detection`` Mask R-CNN (``mask_rcnn_pvt_v2_*_fpn_1x_coco.py``):
  ``backbone.*``, the FPN (4 lateral and 4 output convs; P6 is max-pooled), ``rpn_head.rpn_conv/
  rpn_cls/rpn_reg``, ``roi_head.bbox_head.shared_fcs.{0,1}/fc_cls/fc_reg`` and
  ``roi_head.mask_head.convs.{i}.conv/upsample/conv_logits``.

The backbone may also be in MMDetection's own layout (``backbone.layers.{i}.*``: mmdet's
``PyramidVisionTransformer(V2)`` classes, which its ``pvt_convert`` fills from the official files and
in which MMDetection's own ``configs/pvt`` RetinaNets are published): :func:`mmdet_backbone_to_official`
renames it back, and the backbone is built with LayerNorm eps 1e-6 everywhere, as mmdet's is.

The task packages build the models; this module only reads, sniffs and renames, and
:func:`load_strict` refuses a file that does not fit key for key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..model import PyramidVisionTransformerV2
from .formats import describe_keys, infer_config, unwrap_state_dict
from .io import _read_file
from .load import check_values


@dataclass
class DenseCheckpoint:
    """A published detector's or segmenter's file: its tensors (keys as written) and ``meta``."""

    state_dict: dict[str, torch.Tensor]
    format: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    backbone_layout: str = "official"  # or "mmdet": read from backbone.layers.* (renamed in state_dict)

    def class_names(self, num_classes: int) -> list[str]:
        """``meta["CLASSES"]`` (MMDetection 2.x) or ``meta["dataset_meta"]["classes"]`` (3.x) when it
        has one name per class, else the class indices."""
        names = self.meta.get("CLASSES")
        if names is None and isinstance(self.meta.get("dataset_meta"), Mapping):
            names = self.meta["dataset_meta"].get("classes")
        if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
            return list(names)
        return [str(i) for i in range(num_classes)]


def is_torch_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``torch.save`` file (zip or legacy pickle), not safetensors."""
    with open(path, "rb") as fh:
        return fh.read(2) in (b"PK", b"\x80\x02") or Path(path).suffix in (".pth", ".pt")


#: Published MMDetection detectors that are recognised but not loaded: (key prefix, name).
_NOT_LOADED = [("rpn_head.init_proposal_bboxes", "Sparse R-CNN"), ("roi_head.bbox_head.0.", "Cascade (Mask) R-CNN"),
               ("bbox_head.atss_cls.", "ATSS"), ("bbox_head.gfl_cls.", "GFL")]


def detect_dense_format(sd: Mapping[str, torch.Tensor]) -> str | None:
    """``"mmseg-fpn"``, ``"mmdet-retinanet"``, ``"mmdet-maskrcnn"`` from the keys, else ``None``;
    a CheckpointError for a published detector of another kind."""
    for prefix, name in _NOT_LOADED:
        if any(k.startswith(prefix) for k in sd):
            raise CheckpointError(f"a published MMDetection {name} checkpoint ({prefix}* keys): pvtv2 loads the published "
                                  f"RetinaNet, Mask R-CNN and Semantic FPN files, not this kind yet")
    if any(k.startswith("roi_head.") for k in sd) and not any(k.startswith("roi_head.mask_head.") for k in sd):
        raise CheckpointError("a published MMDetection Faster R-CNN checkpoint (roi_head.* without a mask head): pvtv2 "
                              "loads the published RetinaNet, Mask R-CNN and Semantic FPN files, not this kind yet")
    if any(k.startswith("decode_head.scale_heads.") for k in sd):
        return "mmseg-fpn"
    if any(k.startswith("bbox_head.retina_cls.") for k in sd):
        return "mmdet-retinanet"
    if any(k.startswith("roi_head.") for k in sd):
        return "mmdet-maskrcnn"
    return None


def read_dense_checkpoint(path: str | os.PathLike) -> DenseCheckpoint:
    """Read an MMSegmentation/MMDetection checkpoint (never unpickling code) and sniff its format."""
    obj, _ = _read_file(Path(path))
    meta = obj.get("meta") if isinstance(obj.get("meta"), Mapping) else {}
    sd = unwrap_state_dict(obj)
    try:
        fmt = detect_dense_format(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if fmt is None and any(re.match(r"^(patch_embed\d|block\d)\.", k) for k in sd):
        raise CheckpointError(f"{path}: a PVTv2 classifier/backbone checkpoint, not a detector or segmenter; "
                              f"it can serve as --pretrained backbone weights")
    if fmt is None:
        raise CheckpointError(f"{path}: neither a pvtv2 task file nor a published MMSegmentation Semantic FPN / "
                              f"MMDetection checkpoint; first keys: {describe_keys(sorted(sd))}")
    layout = "official"
    if any(k.startswith("backbone.layers.") for k in sd):
        rest = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
        sub = mmdet_backbone_to_official({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
        sd, layout = {**{f"backbone.{k}": v for k, v in sub.items()}, **rest}, "mmdet"
    return DenseCheckpoint(sd, fmt, str(path), dict(meta), layout)


def backbone_from_keys(ckpt: DenseCheckpoint) -> PyramidVisionTransformerV2:
    """A fresh features-only PVTv2 (or PVTv1) with the architecture of the file's ``backbone.*`` tensors."""
    sub = {k[len("backbone."):]: v for k, v in ckpt.state_dict.items() if k.startswith("backbone.")}
    config = infer_config(sub)
    if config is None:
        raise CheckpointError(f"{ckpt.source}: the backbone.* tensors are not a PVTv2 or PVTv1 in the official or "
                              f"MMDetection layout; first keys: {describe_keys(sorted(sub))}")
    config = replace(config, num_classes=0, features_only=True)  # as create_backbone builds them for training
    if ckpt.backbone_layout == "mmdet":  # mmdet builds every LayerNorm from one norm_cfg: LN, eps 1e-6
        config = replace(config, embed_norm_eps=1e-6)
    return PyramidVisionTransformerV2(config)


def mmdet_backbone_to_official(sub: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMDetection's own PVT / PVTv2 backbone keys -> the official (and our) layout: the inverse of
    mmdet's ``pvt_convert``. Stage ``i`` is ``layers.{i}``: ``0`` the patch embedding (``projection``,
    ``norm``), ``1`` the blocks (after the position embedding ``1.0.pos_embed`` when there is one),
    ``2`` the stage norm (PVTv2). In a block, ``nn.MultiheadAttention`` holds q and kv stacked
    (``attn.attn.in_proj_*``, q first) and ``attn.attn.out_proj``; the feed-forward's linear layers are
    1x1 convolutions in ``ffn.layers`` (fc1 ``0``, depth-wise conv ``1``, fc2 ``4``; PVTv1: fc2 ``3``).
    Stage 4's position embedding has no class-token row there; ours keeps that row (the features
    never read it): it gets zeros. Keys that fit none of this are kept, to be reported as unused."""
    pos = any(re.match(r"^layers\.\d+\.1\.0\.pos_embed$", k) for k in sub)
    out: dict[str, torch.Tensor] = {}
    for k, v in sub.items():
        m = re.match(r"^layers\.(\d+)\.(.*)$", k)
        if m is None:
            out[k] = v
            continue
        stage, rest = int(m[1]) + 1, m[2]
        if m2 := re.match(r"^0\.projection\.(.*)$", rest):
            out[f"patch_embed{stage}.proj.{m2[1]}"] = v
        elif m2 := re.match(r"^0\.norm\.(.*)$", rest):
            out[f"patch_embed{stage}.norm.{m2[1]}"] = v
        elif m2 := re.match(r"^2\.(weight|bias)$", rest):
            out[f"norm{stage}.{m2[1]}"] = v
        elif rest == "1.0.pos_embed" and pos:
            out[f"pos_embed{stage}"] = torch.cat([torch.zeros_like(v[:, :1]), v], 1) if stage == 4 else v
        elif m2 := re.match(r"^1\.(\d+)\.(.*)$", rest):
            block, name = f"block{stage}.{int(m2[1]) - pos}", m2[2]
            if m3 := re.match(r"^attn\.attn\.in_proj_(weight|bias)$", name):
                dim = v.shape[0] // 3
                out[f"{block}.attn.q.{m3[1]}"], out[f"{block}.attn.kv.{m3[1]}"] = v[:dim], v[dim:]
            elif m3 := re.match(r"^attn\.attn\.out_proj\.(.*)$", name):
                out[f"{block}.attn.proj.{m3[1]}"] = v
            elif m3 := re.match(r"^ffn\.layers\.(\d+)\.(weight|bias)$", name):
                conv_ffn = f"layers.{stage - 1}.1.{m2[1]}.ffn.layers.1.weight" in sub
                layer = {"0": "fc1", "1": "dwconv.dwconv", "4" if conv_ffn else "3": "fc2"}.get(m3[1])
                if layer is None:
                    out[k] = v
                    continue
                out[f"{block}.mlp.{layer}.{m3[2]}"] = v.flatten(1) if layer != "dwconv.dwconv" and v.dim() == 4 else v
            else:  # norm1, norm2, attn.sr, attn.norm: the same names
                out[f"{block}.{name}"] = v
        else:
            out[k] = v
    return out


# -- key maps ---------------------------------------------------------------------------
_MMSEG_FPN_KEYS = [  # (MMSegmentation, SemanticFPN) as regular expressions; backbone.* is kept as is
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"neck.inner_blocks.\1.0."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"neck.layer_blocks.\1.0."),
    # ConvModule(conv, bn, activation) -> our Sequential(conv, bn, relu); the Upsample between
    # ConvModules has no tensors, so the Sequential indices j are the same.
    (r"^decode_head\.scale_heads\.(\d+)\.(\d+)\.conv\.", r"head.scale_heads.\1.\2.0."),
    (r"^decode_head\.scale_heads\.(\d+)\.(\d+)\.bn\.", r"head.scale_heads.\1.\2.1."),
    (r"^decode_head\.conv_seg\.", r"head.classifier."),
]


def _rename(sd: Mapping[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, k)
            if n:
                k = new
                break
        out[k] = v  # an unmatched key stays, to be reported as unexpected
    return out


def mmseg_fpn_to_pvtv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMSegmentation Semantic FPN keys -> :class:`pvtv2.segmentation.SemanticFPN` keys."""
    return _rename(sd, _MMSEG_FPN_KEYS)


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], ckpt: DenseCheckpoint) -> None:
    """Copy ``sd`` (already renamed) into ``model``: every tensor used, none missing, shapes exact."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                        for k in sd if k in own and sd[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        parts = [f"{len(keys)} {label}: {describe_keys(keys)}" for label, keys in
                 (("missing", missing), ("unused", unexpected), ("shape-mismatched", mismatched)) if keys]
        raise CheckpointError(f"{ckpt.source} ({ckpt.format} format) does not fit the model: " + "; ".join(parts))
    check_values(sd, own, ckpt.source)
    model.load_state_dict(dict(sd))


def mmdet_retinanet_to_pvtv2(sd: Mapping[str, torch.Tensor], *, num_anchors: int,
                             background_logit: float) -> dict[str, torch.Tensor]:
    """MMDetection RetinaNet keys -> our torchvision RetinaNet's. Both lay the class logits out
    anchor-major (row ``a * K + k``), but mmdet's K object classes have no background column and
    torchvision's K + 1 have it first: each anchor's block gets a background row with zero
    weights and ``background_logit`` as bias."""
    n_lateral = len({k.split(".")[2] for k in sd if k.startswith("neck.lateral_convs.")})
    extra_names = {n_lateral: "p6", n_lateral + 1: "p7"}
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            out["backbone.body." + k[len("backbone."):]] = v
        elif m := re.match(r"^neck\.lateral_convs\.(\d+)\.conv\.(.*)$", k):
            out[f"backbone.fpn.inner_blocks.{m[1]}.0.{m[2]}"] = v
        elif (m := re.match(r"^neck\.fpn_convs\.(\d+)\.conv\.(.*)$", k)) and int(m[1]) < n_lateral:
            out[f"backbone.fpn.layer_blocks.{m[1]}.0.{m[2]}"] = v
        elif m and int(m[1]) in extra_names:
            out[f"backbone.fpn.extra_blocks.{extra_names[int(m[1])]}.{m[2]}"] = v
        elif m := re.match(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.(.*)$", k):
            head = "classification_head" if m[1] == "cls" else "regression_head"
            out[f"head.{head}.conv.{m[2]}.0.{m[3]}"] = v
        elif m := re.match(r"^bbox_head\.retina_cls\.(weight|bias)$", k):
            per_anchor = v.reshape(num_anchors, -1, *v.shape[1:])
            background = torch.full_like(per_anchor[:, :1], background_logit if m[1] == "bias" else 0.0)
            out[f"head.classification_head.cls_logits.{m[1]}"] = torch.cat([background, per_anchor], 1).flatten(0, 1)
        elif m := re.match(r"^bbox_head\.retina_reg\.(weight|bias)$", k):
            out[f"head.regression_head.bbox_reg.{m[1]}"] = v
        else:
            out[k] = v  # reported as unused
    return out


_MMDET_MASKRCNN_KEYS = [  # (MMDetection, torchvision MaskRCNN); the class-indexed layers are handled apart
    (r"^backbone\.", "backbone.body."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"^rpn_head\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"^rpn_head\.rpn_cls\.", "rpn.head.cls_logits."),
    (r"^rpn_head\.rpn_reg\.", "rpn.head.bbox_pred."),
    (r"^roi_head\.bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6."),
    (r"^roi_head\.bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7."),
    (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.", r"roi_heads.mask_head.\1.0."),
    (r"^roi_head\.mask_head\.upsample\.", "roi_heads.mask_predictor.conv5_mask."),
]


def mmdet_maskrcnn_to_pvtv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMDetection Mask R-CNN keys -> our torchvision Mask R-CNN's. mmdet's softmax classifier
    has the background last (row K), torchvision's first: the rows are rotated. mmdet's class-wise
    box deltas and mask logits cover the K object classes only; torchvision's have a background
    slot first, which it never reads: it gets zeros."""
    out = {}
    for k, v in sd.items():
        if m := re.match(r"^roi_head\.bbox_head\.fc_cls\.(weight|bias)$", k):
            out[f"roi_heads.box_predictor.cls_score.{m[1]}"] = torch.cat([v[-1:], v[:-1]])
        elif m := re.match(r"^roi_head\.bbox_head\.fc_reg\.(weight|bias)$", k):
            out[f"roi_heads.box_predictor.bbox_pred.{m[1]}"] = torch.cat([torch.zeros_like(v[:4]), v])
        elif m := re.match(r"^roi_head\.mask_head\.conv_logits\.(weight|bias)$", k):
            out[f"roi_heads.mask_predictor.mask_fcn_logits.{m[1]}"] = torch.cat([torch.zeros_like(v[:1]), v])
        else:
            out.update(_rename({k: v}, _MMDET_MASKRCNN_KEYS))
    return out
