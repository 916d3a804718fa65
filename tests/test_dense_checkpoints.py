"""The published dense-prediction checkpoints (MMSegmentation / MMDetection layouts) load into
our task models: every tensor used, shapes exact, and the outputs of the official networks.

The files are built here from the official configs' shapes (b0, few classes, random values)
with the official key names written out, not derived from our own renaming."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from pvtv2 import create_model
from pvtv2.errors import CheckpointError
from pvtv2.segmentation.model import load_segmenter

B0_DIMS = (32, 64, 160, 256)


def _official_backbone_and_fpn(scale: float, seed: int, *, laterals, fpn_inputs, model: str = "pvt_v2_b0"):
    """The part every whai362 dense checkpoint shares: a b0 backbone (``backbone.*``, random values)
    and an MMDetection/MMSegmentation FPN neck whose lateral convs take ``laterals`` channels and
    whose 3x3 output convs take ``fpn_inputs`` channels. Returns the state dict, the ``rand(*shape)``
    that filled it (values times ``scale``) and its generator, for the heads."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * scale

    backbone = create_model(model, features_only=True)
    sd = {f"backbone.{k}": rand(*v.shape) if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    for i, c in enumerate(laterals):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = rand(256, c, 1, 1)
        sd[f"neck.lateral_convs.{i}.conv.bias"] = rand(256)
    for i, c in enumerate(fpn_inputs):
        sd[f"neck.fpn_convs.{i}.conv.weight"] = rand(256, c, 3, 3)
        sd[f"neck.fpn_convs.{i}.conv.bias"] = rand(256)
    return sd, rand, g


def _mmseg_fpn_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """whai362/PVTv2-Seg ``fpn_pvtv2_b0_ade20k_40k.py``: FPN(in [32, 64, 160, 256], out 256,
    num_outs 4) + FPNHead(channels 128, strides 4-32, SyncBN) in MMSegmentation 0.x names."""
    sd, rand, g = _official_backbone_and_fpn(0.05, seed, laterals=B0_DIMS, fpn_inputs=[256] * 4)
    for i in range(4):
        for k in range(max(1, i)):
            j = 2 * k if i > 0 else 0  # ConvModule, Upsample, ConvModule, ...
            p = f"decode_head.scale_heads.{i}.{j}"
            sd[f"{p}.conv.weight"] = rand(128, 256 if k == 0 else 128, 3, 3)  # no bias: the conv has a norm
            sd[f"{p}.bn.weight"] = 1 + rand(128)
            sd[f"{p}.bn.bias"] = rand(128)
            sd[f"{p}.bn.running_mean"] = rand(128)
            sd[f"{p}.bn.running_var"] = 0.5 + torch.rand(128, generator=g)
            sd[f"{p}.bn.num_batches_tracked"] = torch.tensor(100)
    sd["decode_head.conv_seg.weight"] = rand(num_classes, 128, 1, 1)
    sd["decode_head.conv_seg.bias"] = rand(num_classes)
    return sd


def _mmseg_reference(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """MMSegmentation 0.x's FPN + FPNHead + resize, written from its code with the file's tensors."""
    backbone = create_model("pvt_v2_b0", features_only=True).eval()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    feats = backbone.forward_features(x)
    lat = [F.conv2d(f, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(feats)]
    for i in range(3, 0, -1):  # upsample_cfg=dict(mode='nearest')
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(t, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, t in enumerate(lat)]
    out = None
    for i, t in enumerate(outs):
        for k in range(max(1, i)):
            p = f"decode_head.scale_heads.{i}.{2 * k if i > 0 else 0}"
            t = F.conv2d(t, sd[f"{p}.conv.weight"], padding=1)
            t = F.batch_norm(t, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                             sd[f"{p}.bn.bias"], training=False, eps=1e-5)
            t = F.relu(t)
            if i > 0:
                t = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        out = t if out is None else out + F.interpolate(t, size=out.shape[2:], mode="bilinear", align_corners=False)
    logits = F.conv2d(out, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])
    return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def _save(tmp_path, sd, meta=None, name="fpn.pth"):
    path = tmp_path / name
    torch.save({"state_dict": sd, "meta": meta or {"mmseg_version": "0.11.0"}}, path)
    return path


@torch.no_grad()
def test_mmseg_semantic_fpn_loads_every_tensor_and_computes_the_official_logits(tmp_path):
    sd = _mmseg_fpn_state_dict(num_classes=5)
    model, info = load_segmenter(_save(tmp_path, sd, {"CLASSES": ["a", "b", "c", "d", "e"]}))
    assert model.num_classes == 5 and not model.training
    assert info["class_names"] == ["a", "b", "c", "d", "e"] and "reduce_zero_label" not in info
    assert len(model.state_dict()) == len(sd)
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    ref = _mmseg_reference(x, sd)
    out = model(x)
    assert out.shape == (1, 5, 96, 64)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_mmseg_semantic_fpn_without_class_names_gets_indices_and_ade20k_label_shift(tmp_path):
    model, info = load_segmenter(_save(tmp_path, _mmseg_fpn_state_dict(num_classes=150)))
    assert model.num_classes == 150
    assert info["class_names"] == [str(i) for i in range(150)]
    assert info["reduce_zero_label"] is True  # ADE20K's config trains with reduce_zero_label=True


def test_mmseg_semantic_fpn_with_a_missing_and_an_extra_tensor_is_refused_naming_both(tmp_path):
    sd = _mmseg_fpn_state_dict(num_classes=3)
    del sd["decode_head.scale_heads.3.4.bn.running_var"]
    sd["decode_head.conv_seg_extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 missing: head\.scale_heads\.3\.4\.1\.running_var; "
                                              r"1 unused: decode_head\.conv_seg_extra\.weight"):
        load_segmenter(_save(tmp_path, sd))


def test_mmseg_semantic_fpn_with_a_wrong_shape_is_refused(tmp_path):
    sd = _mmseg_fpn_state_dict(num_classes=3)
    sd["neck.fpn_convs.2.conv.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(CheckpointError, match=r"shape-mismatched: neck\.layer_blocks\.2\.0\.weight"):
        load_segmenter(_save(tmp_path, sd))


def test_a_torch_file_that_is_no_published_segmenter_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="neither a pvtv2 task file nor a published"):
        load_segmenter(path)


# -- RetinaNet (whai362/PVT detection, MMDetection 2.x) ---------------------------------------
def _mmdet_retinanet_state_dict(num_classes: int, seed: int = 0, model: str = "pvt_v2_b0",
                                dims: tuple[int, ...] = B0_DIMS) -> dict[str, torch.Tensor]:
    """``retinanet_pvt_v2_b0_fpn_1x_coco.py``: FPN(in [32, 64, 160, 256], out 256, start_level=1,
    add_extra_convs='on_input', num_outs=5) + RetinaHead(stacked_convs=4, 9 anchors, sigmoid)."""
    # fpn_convs 3: P6 from C5 ('on_input'), 4: P7
    sd, rand, _ = _official_backbone_and_fpn(0.03, seed, laterals=dims[1:], fpn_inputs=[256, 256, 256, dims[-1], 256],
                                             model=model)
    for branch in ("cls", "reg"):
        for i in range(4):
            sd[f"bbox_head.{branch}_convs.{i}.conv.weight"] = rand(256, 256, 3, 3)
            sd[f"bbox_head.{branch}_convs.{i}.conv.bias"] = rand(256)
    sd["bbox_head.retina_cls.weight"] = rand(9 * num_classes, 256, 3, 3)
    sd["bbox_head.retina_cls.bias"] = rand(9 * num_classes)  # scores near 0.5: detections to check
    sd["bbox_head.retina_reg.weight"] = rand(9 * 4, 256, 3, 3)
    sd["bbox_head.retina_reg.bias"] = rand(9 * 4)
    return sd


def _mmdet_fpn_reference(feats: list[torch.Tensor], sd: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """MMDetection 2.x ``FPN.forward`` with start_level=1, add_extra_convs='on_input',
    relu_before_extra_convs=False (the default), num_outs=5."""
    inputs = feats[1:]
    lat = [F.conv2d(f, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(inputs)]
    for i in range(2, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(t, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, t in enumerate(lat)]
    outs.append(F.conv2d(inputs[-1], sd["neck.fpn_convs.3.conv.weight"], sd["neck.fpn_convs.3.conv.bias"],
                         stride=2, padding=1))
    outs.append(F.conv2d(outs[-1], sd["neck.fpn_convs.4.conv.weight"], sd["neck.fpn_convs.4.conv.bias"],
                         stride=2, padding=1))  # no ReLU before P7
    return outs


def _mmdet_cls_reference(p: torch.Tensor, sd: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """RetinaHead's class logits of one level, laid out as ``get_bboxes`` reads them: (H*W*A, K)."""
    for i in range(4):
        p = F.relu(F.conv2d(p, sd[f"bbox_head.cls_convs.{i}.conv.weight"], sd[f"bbox_head.cls_convs.{i}.conv.bias"],
                            padding=1))
    score = F.conv2d(p, sd["bbox_head.retina_cls.weight"], sd["bbox_head.retina_cls.bias"], padding=1)
    return score[0].permute(1, 2, 0).reshape(-1, num_classes)


@torch.no_grad()
def test_mmdet_retinanet_loads_every_tensor_and_computes_the_official_pyramid_and_logits(tmp_path):
    from pvtv2.detection.model import load_detector

    sd = _mmdet_retinanet_state_dict(num_classes=3)
    path = tmp_path / "retinanet.pth"
    torch.save({"state_dict": sd, "meta": {"CLASSES": ("cat", "dog", "bird")}}, path)
    model, info = load_detector(path)
    assert info["kind"] == "retinanet" and info["class_names"] == ["cat", "dog", "bird"]
    assert len(model.state_dict()) == len(sd)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    pyramid = list(model.backbone(x).values())
    ref = _mmdet_fpn_reference(model.backbone.body.forward_features(x), sd)
    assert [p.shape[-2:] for p in pyramid] == [r.shape[-2:] for r in ref]
    for ours, theirs in zip(pyramid, ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # P7 without the ReLU torchvision's LastLevelP6P7 applies: differs from conv(relu(P6)) here
    with_relu = F.conv2d(F.relu(ref[3]), sd["neck.fpn_convs.4.conv.weight"], sd["neck.fpn_convs.4.conv.bias"],
                         stride=2, padding=1)
    assert (pyramid[4] - with_relu).abs().max() > 1e-3
    logits = model.head.classification_head(pyramid)  # (1, sum H*W*A, 1 + K): background first
    theirs = torch.cat([_mmdet_cls_reference(p, sd, 3) for p in ref])
    torch.testing.assert_close(logits[0, :, 1:], theirs, rtol=1e-4, atol=1e-5)
    assert torch.sigmoid(logits[0, :, 0]).max() == 0  # the background column never scores
    assert (model.score_thresh, model.nms_thresh, model.detections_per_img, model.topk_candidates) == (0.05, 0.5, 100, 1000)
    model.transform.min_size, model.transform.max_size = (64,), 64
    out = model([x[0]])[0]
    assert set(out) == {"boxes", "scores", "labels"} and 0 < len(out["boxes"]) <= 100
    assert ((out["labels"] >= 1) & (out["labels"] <= 3)).all() and (out["scores"] > 0.05).all()


def test_mmdet_anchors_follow_mmdetection_formula_with_fixed_strides():
    from torchvision.models.detection.image_list import ImageList

    from pvtv2.detection.model import MMDetAnchorGenerator

    gen = MMDetAnchorGenerator()
    maps = [torch.zeros(1, 1, h, w) for h, w in ((100, 152), (50, 76), (25, 38), (13, 19), (7, 10))]
    anchors = gen(ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)]), maps)[0]
    sizes = [h * w * 9 for h, w in ((100, 152), (50, 76), (25, 38), (13, 19), (7, 10))]
    levels = anchors.split(sizes)
    # mmdet gen_single_level_base_anchors(base_size=8, scales=4*2**(i/3), ratios=[.5, 1, 2]), center 0:
    scales = torch.tensor([4 * 2 ** (i / 3) for i in range(3)])
    h_ratios = torch.tensor([0.5, 1.0, 2.0]).sqrt()
    ws = (8 * (1 / h_ratios)[:, None] * scales[None]).reshape(-1)
    hs = (8 * h_ratios[:, None] * scales[None]).reshape(-1)
    base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], 1)
    torch.testing.assert_close(levels[0][:9], base)
    torch.testing.assert_close(levels[0][9:18], base + torch.tensor([8.0, 0, 8, 0]))  # next cell along x
    assert levels[0][4].tolist() == pytest.approx([-20.1587, -20.1587, 20.1587, 20.1587], abs=1e-3)  # 32*2^(1/3), unrounded
    # P6: 13 rows from 800 pixels; torchvision's stride would be 800 // 13 = 61, mmdet's is 64
    p6 = levels[3].reshape(13, 19, 9, 4)
    assert (p6[1, 0, 0] - p6[0, 0, 0]).tolist() == pytest.approx([0.0, 64.0, 0.0, 64.0], abs=1e-4)


def test_mmdet_box_coder_clamps_shrinking_deltas_too():
    import math

    from pvtv2.detection.model import MMDetBoxCoder

    coder = MMDetBoxCoder((1.0, 1.0, 1.0, 1.0), math.log(1000.0 / 16))
    anchors = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    box = coder.decode_single(torch.tensor([[0.0, 0.0, -10.0, 10.0]]), anchors)[0]
    # width 100 * 16/1000 = 1.6 (mmdet delta2bbox clamps dw to [-log(1000/16), log(1000/16)]), height 100 * 1000/16
    assert (box[2] - box[0]).item() == pytest.approx(1.6, rel=1e-5)
    assert (box[3] - box[1]).item() == pytest.approx(6250.0, rel=1e-5)


def test_mmdet_retinanet_with_a_missing_and_an_extra_tensor_is_refused_naming_both(tmp_path):
    from pvtv2.detection.model import load_detector

    sd = _mmdet_retinanet_state_dict(num_classes=2)
    del sd["neck.fpn_convs.4.conv.bias"]
    sd["bbox_head.retina_iou.weight"] = torch.zeros(1)
    path = tmp_path / "r.pth"
    torch.save({"state_dict": sd, "meta": {}}, path)
    with pytest.raises(CheckpointError, match=r"1 missing: backbone\.fpn\.extra_blocks\.p7\.bias; "
                                              r"1 unused: bbox_head\.retina_iou\.weight"):
        load_detector(path)


def test_published_checkpoints_given_to_the_wrong_task_are_refused(tmp_path):
    from pvtv2.detection.model import load_detector

    seg, det = tmp_path / "seg.pth", tmp_path / "det.pth"
    torch.save({"state_dict": _mmseg_fpn_state_dict(num_classes=2)}, seg)
    torch.save({"state_dict": _mmdet_retinanet_state_dict(num_classes=2)}, det)
    with pytest.raises(CheckpointError, match="segment eval"):
        load_detector(seg)
    with pytest.raises(CheckpointError, match="detect eval"):
        load_segmenter(det)
    clf = tmp_path / "pvt_v2_b0.pth"
    torch.save(create_model("pvt_v2_b0", num_classes=3).state_dict(), clf)  # an official classification release
    with pytest.raises(CheckpointError, match="classifier/backbone checkpoint.*--pretrained"):
        load_detector(clf)


def test_segment_eval_takes_a_published_semantic_fpn_file(tmp_path, capsys):
    import json

    from pvtv2.cli import main
    from pvtv2.data import make_segmentation_dataset

    data = make_segmentation_dataset(tmp_path / "d", classes=3, train_images=1, val_images=2, size=64, seed=0,
                                     progress=False)
    ckpt = _save(tmp_path, _mmseg_fpn_state_dict(num_classes=3), {"CLASSES": ["bg", "a", "b"]})
    out = tmp_path / "r.json"
    assert main(["segment", "eval", "--data", str(data), "--checkpoint", str(ckpt), "--scale", "64", "64",
                 "--device", "cpu", "--workers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["mIoU"] <= 100 and set(result["per_class"]) == {"bg", "a", "b"}


@pytest.mark.slow  # the official 800-pixel test size on CPU: 6-12 s
def test_detect_eval_takes_a_published_retinanet_file(tmp_path):
    import json

    from pvtv2.cli import main
    from pvtv2.data import make_detection_dataset

    data = make_detection_dataset(tmp_path / "d", classes=2, train_images=1, val_images=1, size=64, seed=0,
                                  progress=False)
    names = [c["name"] for c in json.loads((data / "annotations" / "instances_val2017.json").read_text())["categories"]]
    ckpt = tmp_path / "retinanet.pth"
    torch.save({"state_dict": _mmdet_retinanet_state_dict(num_classes=2), "meta": {"CLASSES": tuple(names)}}, ckpt)
    out = tmp_path / "r.json"
    assert main(["detect", "eval", "--data", str(data), "--checkpoint", str(ckpt), "--device", "cpu",
                 "--workers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 1 and result["detections"] == 100  # max_per_img
    assert 0 <= result["bbox"]["stats"]["AP"] <= 1


# -- Mask R-CNN (whai362/PVT detection, MMDetection 2.x) --------------------------------------
def _mmdet_maskrcnn_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``mask_rcnn_pvt_v2_b0_fpn_1x_coco.py``: FPN(in [32, 64, 160, 256], out 256, num_outs=5), RPNHead
    (3 anchors), Shared2FCBBoxHead (fc 1024, K + 1 classes, class-wise deltas), FCNMaskHead (4 convs)."""
    sd, rand, _ = _official_backbone_and_fpn(0.03, seed, laterals=B0_DIMS, fpn_inputs=[256] * 4)
    sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"] = rand(256, 256, 3, 3), rand(256)
    sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"] = rand(3, 256, 1, 1), rand(3)
    sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"] = rand(12, 256, 1, 1), rand(12)
    sd["roi_head.bbox_head.shared_fcs.0.weight"] = rand(1024, 256 * 7 * 7)
    sd["roi_head.bbox_head.shared_fcs.0.bias"] = rand(1024)
    sd["roi_head.bbox_head.shared_fcs.1.weight"], sd["roi_head.bbox_head.shared_fcs.1.bias"] = rand(1024, 1024), rand(1024)
    sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"] = rand(num_classes + 1, 1024), rand(num_classes + 1)
    sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"] = rand(4 * num_classes, 1024), rand(4 * num_classes)
    for i in range(4):
        sd[f"roi_head.mask_head.convs.{i}.conv.weight"], sd[f"roi_head.mask_head.convs.{i}.conv.bias"] = \
            rand(256, 256, 3, 3), rand(256)
    sd["roi_head.mask_head.upsample.weight"], sd["roi_head.mask_head.upsample.bias"] = rand(256, 256, 2, 2), rand(256)
    sd["roi_head.mask_head.conv_logits.weight"] = rand(num_classes, 256, 1, 1)
    sd["roi_head.mask_head.conv_logits.bias"] = rand(num_classes)
    return sd


@torch.no_grad()
def test_mmdet_maskrcnn_loads_every_tensor_with_the_classes_rotated_to_background_first(tmp_path):
    from pvtv2.detection.model import load_detector

    sd = _mmdet_maskrcnn_state_dict(num_classes=2)
    path = tmp_path / "mrcnn.pth"
    torch.save({"state_dict": sd, "meta": {"CLASSES": ("cat", "dog")}}, path)
    model, info = load_detector(path)
    assert info["kind"] == "maskrcnn" and info["class_names"] == ["cat", "dog"]
    assert len(model.state_dict()) == len(sd)
    # Shared2FCBBoxHead on pooled features vs our box head + predictor
    pooled = torch.randn(5, 256, 7, 7, generator=torch.Generator().manual_seed(3))
    h = F.relu(F.linear(pooled.flatten(1), sd["roi_head.bbox_head.shared_fcs.0.weight"], sd["roi_head.bbox_head.shared_fcs.0.bias"]))
    h = F.relu(F.linear(h, sd["roi_head.bbox_head.shared_fcs.1.weight"], sd["roi_head.bbox_head.shared_fcs.1.bias"]))
    their_probs = F.linear(h, sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"]).softmax(-1)
    their_deltas = F.linear(h, sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"])
    logits, deltas = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
    probs = logits.softmax(-1)
    torch.testing.assert_close(probs[:, 0], their_probs[:, 2])  # background: mmdet's last, torchvision's first
    torch.testing.assert_close(probs[:, 1:], their_probs[:, :2])
    torch.testing.assert_close(deltas[:, 4:], their_deltas)
    assert model.roi_heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)  # mmdet target_stds 0.1, 0.1, 0.2, 0.2
    model.transform.min_size, model.transform.max_size = (64,), 64
    out = model([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))])[0]
    assert set(out) == {"boxes", "scores", "labels", "masks"}
    # RPN anchors: scale 8 at stride 4, ratios 0.5/1/2, not rounded (torchvision would round 22.63 to 23)
    p2 = model.rpn.anchor_generator.cell_anchors[0]
    torch.testing.assert_close(p2[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    torch.testing.assert_close(p2[0], torch.tensor([-16 * 2 ** 0.5, -8 * 2 ** 0.5, 16 * 2 ** 0.5, 8 * 2 ** 0.5]))


def test_mmdet_roi_align_is_aligned_and_maps_levels_by_finest_scale_56():
    from torchvision.ops import roi_align

    from pvtv2.detection.model import MMDetRoIAlign

    g = torch.Generator().manual_seed(5)
    feats = {str(i): torch.randn(1, 2, 64 // 2 ** i, 64 // 2 ** i, generator=g) for i in range(4)}
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [0.0, 0.0, 120.0, 120.0], [3.0, 5.0, 250.0, 240.0]])
    out = MMDetRoIAlign(7)(feats, [boxes], [(256, 256)])
    # sqrt(area) 30 -> level 0 (stride 4); 120 -> floor(log2(120/56)) = 1 (stride 8); ~242 -> 2 (stride 16)
    for row, level in zip(range(3), (0, 1, 2)):
        ref = roi_align(feats[str(level)], [boxes[row:row + 1]], 7, spatial_scale=1 / 4 / 2 ** level,
                        sampling_ratio=0, aligned=True)
        torch.testing.assert_close(out[row:row + 1], ref)


# -- MMDetection's own PVT / PVTv2 backbone layout (mmdet's configs/pvt) ----------------------------
def _pvt_convert(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMDetection's ``pvt_convert`` (mmdet/models/backbones/pvt.py) on the ``backbone.*`` part, its rules
    written out here: official -> ``layers.{stage}.{0 patch embed | 1 [pos embed] blocks | 2 norm}``."""
    pos = "backbone.pos_embed1" in sd
    conv_ffn = any("dwconv" in k for k in sd)
    out = {}
    for k, v in sd.items():
        if not k.startswith("backbone."):
            out[k] = v
            continue
        k = k[len("backbone."):]
        if m := re.match(r"^pos_embed(\d)$", k):
            s = int(m[1])
            out[f"layers.{s - 1}.1.0.pos_embed"] = v[:, 1:] if s == 4 and v.shape[1] == 50 else v
        elif m := re.match(r"^patch_embed(\d)\.(.*)$", k):
            out[f"layers.{int(m[1]) - 1}.0.{m[2].replace('proj.', 'projection.')}"] = v
        elif m := re.match(r"^block(\d)\.(\d+)\.(.*)$", k):
            head, name = f"layers.{int(m[1]) - 1}.1.{int(m[2]) + pos}", m[3]
            if name.startswith("attn.q."):
                out[f"{head}.attn.attn.in_proj_{name.split('.')[-1]}"] = torch.cat([v, sd["backbone." + k.replace("q.", "kv.")]])
            elif name.startswith("attn.kv."):
                continue
            elif name.startswith("attn.proj."):
                out[f"{head}.attn.attn.out_proj.{name.split('.')[-1]}"] = v
            elif name.startswith("mlp."):
                layer = {"fc1": "0", "dwconv": "1", "fc2": "4" if conv_ffn else "3"}[name.split(".")[1]]
                v = v.reshape(*v.shape, 1, 1) if name in ("mlp.fc1.weight", "mlp.fc2.weight") else v
                out[f"{head}.ffn.layers.{layer}.{name.split('.')[-1]}"] = v
            else:
                out[f"{head}.{name}"] = v
        elif m := re.match(r"^norm(\d)\.(.*)$", k):
            out[f"layers.{int(m[1]) - 1}.2.{m[2]}"] = v
        else:
            raise AssertionError(k)
    return {(f"backbone.{k}" if k.startswith("layers.") else k): v for k, v in out.items()}


def _mmdet_block_reference(x, hw, sd, prefix, heads, sr, conv_ffn):
    """mmdet's ``PVTEncoderLayer`` with the file's tensors: LayerNorms with eps 1e-6, SRA through
    ``nn.MultiheadAttention`` (q from x, k/v from the reduced map), MixFFN as 1x1 / 3x3 convolutions."""
    c = x.shape[-1]
    t = lambda name: sd[f"{prefix}.{name}"]  # noqa: E731
    q = F.layer_norm(x, (c,), t("norm1.weight"), t("norm1.bias"), eps=1e-6)
    kv = q
    if sr > 1:
        m = F.conv2d(q.transpose(1, 2).reshape(1, c, *hw), t("attn.sr.weight"), t("attn.sr.bias"), stride=sr)
        kv = F.layer_norm(m.flatten(2).transpose(1, 2), (c,), t("attn.norm.weight"), t("attn.norm.bias"), eps=1e-6)
    mha = torch.nn.MultiheadAttention(c, heads, batch_first=True)
    mha.load_state_dict({"in_proj_weight": t("attn.attn.in_proj_weight"), "in_proj_bias": t("attn.attn.in_proj_bias"),
                         "out_proj.weight": t("attn.attn.out_proj.weight"), "out_proj.bias": t("attn.attn.out_proj.bias")})
    x = x + mha(q, kv, kv, need_weights=False)[0]
    h = F.layer_norm(x, (c,), t("norm2.weight"), t("norm2.bias"), eps=1e-6).transpose(1, 2).reshape(1, c, *hw)
    h = F.conv2d(h, t("ffn.layers.0.weight"), t("ffn.layers.0.bias"))
    if conv_ffn:
        h = F.conv2d(h, t("ffn.layers.1.weight"), t("ffn.layers.1.bias"), padding=1, groups=h.shape[1])
    fc2 = "4" if conv_ffn else "3"
    h = F.conv2d(F.gelu(h), t(f"ffn.layers.{fc2}.weight"), t(f"ffn.layers.{fc2}.bias"))
    return x + h.flatten(2).transpose(1, 2)


@torch.no_grad()
@pytest.mark.parametrize("model, dims, heads", [("pvt_v2_b0", B0_DIMS, 1), ("pvt_tiny", (64, 128, 320, 512), 1)])
def test_mmdet_own_backbone_layout_loads_as_mmdetection_computes_it(tmp_path, model, dims, heads):
    from pvtv2.detection.model import load_detector

    official = _mmdet_retinanet_state_dict(num_classes=2, model=model, dims=dims)
    mmdet = _pvt_convert(official)
    assert any(k.startswith("backbone.layers.0.1.") for k in mmdet) and not any(k.startswith("backbone.block") for k in mmdet)
    for name, sd in (("official", official), ("mmdet", mmdet)):
        torch.save({"state_dict": sd, "meta": {"dataset_meta": {"classes": ("a", "b")}}}, tmp_path / f"{name}.pth")
    ours_official, _ = load_detector(tmp_path / "official.pth")
    ours_mmdet, info = load_detector(tmp_path / "mmdet.pth")  # every tensor used, or a CheckpointError
    assert info["class_names"] == ["a", "b"]  # MMDetection 3.x keeps them in meta["dataset_meta"]
    body = ours_mmdet.backbone.body
    assert {m.eps for m in body.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}  # mmdet's norm_cfg
    # One block as mmdet computes it, from the mmdet-layout tensors, equals ours with the renamed ones.
    x = torch.randn(1, 64, dims[0], generator=torch.Generator().manual_seed(3))
    ref = _mmdet_block_reference(x, (8, 8), mmdet, "backbone.layers.0.1." + ("1" if model == "pvt_tiny" else "0"),
                                 heads, 8, conv_ffn=model != "pvt_tiny")
    torch.testing.assert_close(body.block1[0](x, 8, 8), ref, rtol=1e-4, atol=1e-5)
    # The whole detector: the same as the one loaded from the official layout, but for the eps of the
    # patch-embedding and reduction norms (1e-5 in the official code).
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    for a, b in zip(ours_mmdet.backbone(image).values(), ours_official.backbone(image).values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("key, name", [
    ("bbox_head.atss_cls.weight", "ATSS"), ("bbox_head.gfl_cls.weight", "GFL"),
    ("roi_head.bbox_head.0.fc_cls.weight", "Cascade (Mask) R-CNN"), ("rpn_head.init_proposal_bboxes.weight", "Sparse R-CNN"),
    ("roi_head.bbox_head.fc_cls.weight", "Faster R-CNN")])
def test_published_detectors_of_other_kinds_are_named_and_refused(tmp_path, key, name):
    from pvtv2.detection.model import load_detector

    path = tmp_path / "det.pth"
    torch.save({"state_dict": {"backbone.patch_embed1.proj.weight": torch.zeros(32, 3, 7, 7), key: torch.zeros(4, 4)}}, path)
    with pytest.raises(CheckpointError, match=rf"det\.pth: a published MMDetection {re.escape(name)} checkpoint .*not this kind yet"):
        load_detector(path)
