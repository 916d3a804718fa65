"""Detection glue: PVTv2 + FPN backbones inside torchvision's RetinaNet / Faster R-CNN / Mask R-CNN."""
import pytest
import torch

import pvtv2
from pvtv2.detection import KINDS, create_backbone, create_detector


def _targets(n: int, size: int, with_masks: bool):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        xy = torch.randint(0, size // 2, (2, 2), generator=g).float()
        boxes = torch.cat([xy, xy + torch.randint(12, size // 2, (2, 2), generator=g).float()], 1)
        t = {"boxes": boxes, "labels": torch.tensor([1, 2])}
        if with_masks:
            masks = torch.zeros(2, size, size, dtype=torch.uint8)
            for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                masks[k, y0:y1, x0:x1] = 1
            t["masks"] = masks
        out.append(t)
    return out


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_backbone_pyramid_feeds_fpn(name):
    for kind, keys, strides in [("retinanet", ["0", "1", "2", "p6", "p7"], [8, 16, 32, 64, 128]),
                                ("maskrcnn", ["0", "1", "2", "3", "pool"], [4, 8, 16, 32, 64])]:
        bb = create_backbone(name, kind).eval()
        dims = list(bb.body.embed_dims)
        assert [blk[0].in_channels for blk in bb.fpn.inner_blocks] == (dims[1:] if kind == "retinanet" else dims)
        with torch.no_grad():
            feats = bb(torch.randn(1, 3, 256, 320))
        assert list(feats) == keys and bb.strides == strides
        for f, s in zip(feats.values(), strides):
            assert f.shape == (1, 256, -(-256 // s), -(-320 // s))
        if kind == "retinanet":  # P6 comes from C5 (the input), not from P5: mmdet's 'on_input'
            assert bb.fpn.extra_blocks.p6.in_channels == dims[-1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_detectors_train_and_eval_steps(kind, name):
    torch.manual_seed(0)
    model = create_detector(kind, name, num_classes=2, min_size=128, max_size=160)
    images = [torch.rand(3, 128, 128), torch.rand(3, 112, 144)]
    targets = _targets(2, 112, kind == "maskrcnn")
    model.train()
    losses = model(images, targets)
    expected = {"retinanet": {"classification", "bbox_regression"},
                "fasterrcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}}
    expected["maskrcnn"] = expected["fasterrcnn"] | {"loss_mask"}
    assert set(losses) == expected[kind]
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.body.patch_embed1.proj.weight.grad.abs().sum() > 0  # gradients reach the backbone
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and {"boxes", "labels", "scores"} <= set(out[0])
    if kind == "maskrcnn":
        assert out[1]["masks"].shape[-2:] == (112, 144)


def test_pretrained_backbone_and_errors(tmp_path):
    clf = pvtv2.create_model("pvt_v2_b0", num_classes=5)
    pvtv2.save_pretrained(clf, tmp_path / "b0")
    det = create_detector("fasterrcnn", "pvt_v2_b0", 3, pretrained_backbone=tmp_path / "b0")
    for key, value in det.backbone.body.state_dict().items():
        assert torch.equal(value, clf.state_dict()[key]), key
    assert det.roi_heads.box_predictor.cls_score.out_features == 4  # 3 categories + background
    with pytest.raises(ValueError, match="unknown detector kind 'yolo'"):
        create_detector("yolo", "pvt_v2_b0", 3)
    with pytest.raises(ValueError, match="at least 1"):
        create_detector("retinanet", "pvt_v2_b0", 0)
