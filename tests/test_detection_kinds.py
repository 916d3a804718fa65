"""The FCOS, ATSS, GFL and Sparse R-CNN kinds as whole detectors: the paper's parameter counts,
the official necks, torchvision's detector interface in training and evaluation, the
save/load round trip, and the recipe table they read their test settings from."""
import json

import pytest
import torch
from torch import nn

from pvtv2 import create_model
from pvtv2.data import make_detection_dataset
from pvtv2.detection import (KIND_RECIPES, KINDS, DetTrainConfig, create_backbone,
                             create_detector, load_detector, save_detector, train)
from pvtv2.detection.model import DETECTORS, _with_fpn

NEW_KINDS = ["fcos", "atss", "gfl", "sparse_rcnn"]
# Small heads for the functional tests (the official Sparse R-CNN head alone is 79M parameters,
# and the ATSS/GFL towers cost more than a b0 backbone at these sizes); the official shapes
# are checked on their own above.
SMALL = {"sparse_rcnn": dict(num_proposals=16, num_stages=2, feedforward_channels=128, dynamic_channels=16),
         "atss": dict(feat_channels=64, stacked_convs=2), "gfl": dict(feat_channels=64, stacked_convs=2)}
# Random weights score below the official 0.05 (the classifier starts at 0.01): show every box.
ALL_BOXES = {"fcos": dict(score_thresh=0.0), "atss": dict(score_thresh=0.0), "gfl": dict(score_thresh=0.0)}
EXPECTED_LOSSES = {"fcos": {"classification", "bbox_regression", "bbox_ctrness"},
                   "atss": {"loss_cls", "loss_bbox", "loss_centerness"},
                   "gfl": {"loss_cls", "loss_bbox", "loss_dfl"},
                   "sparse_rcnn": {"loss_cls", "loss_bbox", "loss_iou"}}


def _targets():
    return [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([1, 2])},
            {"boxes": torch.tensor([[5.0, 8.0, 50.0, 40.0]]), "labels": torch.tensor([2])}]


# -- the paper's table --------------------------------------------------------------------
# Parameters with 80 COCO classes (PVTv2 paper, Table 3): ATSS 33M / 30M, GFL 33M / 30M,
# Sparse R-CNN 107M / 104M for B2 / B2-Li.
PAPER_PARAMS = {("atss", "pvt_v2_b2"): 33, ("atss", "pvt_v2_b2_li"): 30, ("gfl", "pvt_v2_b2"): 33,
                ("gfl", "pvt_v2_b2_li"): 30, ("sparse_rcnn", "pvt_v2_b2"): 107, ("sparse_rcnn", "pvt_v2_b2_li"): 104}


@pytest.fixture(scope="module")
def bodies():
    return {name: create_model(name, num_classes=0) for name in ("pvt_v2_b2", "pvt_v2_b2_li")}


@pytest.mark.parametrize("kind,name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(kind, name, bodies):
    # The backbone is real; neck and head are built on the meta device (no memory, no init cost):
    # the count is the same and 100M parameters are not allocated for it.
    with torch.device("meta"):
        model = DETECTORS[kind](_with_fpn(bodies[name], kind), num_classes=81)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(PAPER_PARAMS[kind, name], abs=0.5), count


def _on_meta(kind: str, num_classes: int = 81) -> nn.Module:
    """A detector on a real b0 backbone, its neck and head on the meta device (shapes only)."""
    body = create_model("pvt_v2_b0", num_classes=0)
    with torch.device("meta"):
        return DETECTORS[kind](_with_fpn(body, kind), num_classes=num_classes)


def test_heads_have_the_official_shapes():
    atss = create_detector("atss", "pvt_v2_b0", 80)
    head = atss.head
    assert len(head.cls_convs) == len(head.reg_convs) == 4 and isinstance(head.cls_convs[0].gn, nn.GroupNorm)
    assert head.cls_convs[0].gn.num_groups == 32 and head.cls_convs[0].conv.bias is None
    assert head.atss_cls.out_channels == 80 and head.atss_reg.out_channels == 4 and len(head.scales) == 5
    assert head.atss_cls.bias[0].item() == pytest.approx(-4.59512, abs=1e-4)  # -log(99): prior 0.01
    gfl = create_detector("gfl", "pvt_v2_b0", 80)
    assert gfl.head.gfl_reg.out_channels == 4 * 17 and gfl.head.gfl_cls.out_channels == 80
    sparse = _on_meta("sparse_rcnn")
    assert len(sparse.stages) == 6 and sparse.init_proposal_bboxes.weight.shape == (300, 4)
    stage = sparse.stages[0]
    assert stage.instance_interactive_conv.dynamic_layer.out_features == 2 * 256 * 64
    assert stage.instance_interactive_conv.fc_layer.in_features == 256 * 49 and stage.fc_cls.out_features == 80
    assert stage.attention.num_heads == 8 and stage.ffn[0].out_features == 2048 and len(stage.reg_fcs) == 9


def test_necks_follow_the_official_configs():
    x = torch.randn(1, 3, 64, 96)
    body = create_model("pvt_v2_b0", num_classes=0).eval()
    for kind, keys, strides in [("atss", ["0", "1", "2", "p6", "p7"], [8, 16, 32, 64, 128]),
                                ("fcos", ["0", "1", "2", "p6", "p7"], [8, 16, 32, 64, 128]),
                                ("sparse_rcnn", ["0", "1", "2", "3"], [4, 8, 16, 32])]:
        neck = _with_fpn(body, kind).eval()
        with torch.no_grad():
            feats = neck(x)
        assert list(feats) == keys and neck.strides == strides
        for f, s in zip(feats.values(), strides):
            assert f.shape == (1, 256, -(-64 // s), -(-96 // s))
        if kind in ("atss", "fcos"):
            extra = neck.fpn.extra_blocks
            assert extra.p6.in_channels == 256  # from P5's output: 'on_output'
            with torch.no_grad():  # ATSS/GFL: no ReLU between P6 and P7 (mmdet's default); FCOS: a ReLU
                p7 = extra.p7(torch.relu(feats["p6"]) if kind == "fcos" else feats["p6"])
            assert torch.allclose(p7, feats["p7"], atol=1e-5)
    assert create_backbone("pvt_v2_b0", "gfl").strides == [8, 16, 32, 64, 128]
    with pytest.raises(ValueError, match="unknown detector kind 'yolo'"):
        create_backbone("pvt_v2_b0", "yolo")


# -- torchvision's detector interface --------------------------------------------------------
@pytest.mark.parametrize("kind", NEW_KINDS)
def test_train_step_and_eval_in_image_coordinates(kind):
    torch.manual_seed(0)
    model = create_detector(kind, "pvt_v2_b0", 2, min_size=64, max_size=96, **SMALL.get(kind, {}),
                            **ALL_BOXES.get(kind, {}))
    images = [torch.rand(3, 96, 96), torch.rand(3, 96, 128)]  # resized to 64x64 and 64x85 inside
    model.train()
    losses = model(images, _targets())
    assert set(losses) == EXPECTED_LOSSES[kind]
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    assert model.backbone.body.patch_embed1.proj.weight.grad.abs().sum() > 0  # gradients reach the backbone
    if kind == "sparse_rcnn":  # the learned proposal boxes learn through the first stage's decoding
        assert model.init_proposal_bboxes.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, (h, w) in zip(out, [(96, 96), (96, 128)]):
        assert {"boxes", "labels", "scores"} <= set(det) and len(det["boxes"]) > 0
        # torchvision's FCOS keeps a never-trained background channel 0 (as its RetinaNet): at
        # threshold 0 it shows; our sigmoid heads have no such channel.
        assert det["labels"].min() >= (0 if kind == "fcos" else 1) and det["labels"].max() <= 2
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        b = det["boxes"]
        assert b.min() >= 0 and b[:, 2].max() <= w + 1e-3 and b[:, 3].max() <= h + 1e-3
        if kind != "fcos":  # (torchvision's, with small random boxes)
            # Clipped to the resized image, then scaled back: the border boxes reach the
            # original size, not the 64-pixel one the network saw.
            assert b[:, 2].max() == pytest.approx(w, abs=1e-3) and b[:, 3].max() == pytest.approx(h, abs=1e-3)


@pytest.mark.parametrize("kind", ["atss", "gfl", "sparse_rcnn"])
def test_images_without_boxes_and_bad_labels(kind):
    torch.manual_seed(0)
    model = create_detector(kind, "pvt_v2_b0", 2, min_size=64, max_size=64, **SMALL.get(kind, {})).train()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = model([torch.rand(3, 64, 64)], empty)  # only negatives: still finite, still a graph
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with pytest.raises(ValueError, match=r"labels must be in 1..2 \(0 is the background\), got \[0, 1\]"):
        model([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 30, 30], [5, 5, 20, 20]]),
                                         "labels": torch.tensor([0, 1])}])
    with pytest.raises(ValueError, match="needs targets"):
        model([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="counts the background: at least 2"):
        DETECTORS[kind](_with_fpn(model.backbone.body, kind), num_classes=1)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_save_load_round_trip_gives_identical_outputs(kind, tmp_path):
    torch.manual_seed(0)
    model = create_detector(kind, "pvt_v2_b0", 3, min_size=64, max_size=96, **SMALL.get(kind, {}),
                            **ALL_BOXES.get(kind, {})).eval()
    images = [torch.rand(3, 80, 72)]
    with torch.no_grad():
        before = model(images)[0]
    path = save_detector(model, tmp_path / "det.safetensors", class_names=["a", "b", "c"], extra={"cat_ids": [4, 5, 6]})
    loaded, info = load_detector(path, **ALL_BOXES.get(kind, {}))
    assert type(loaded) is type(model) and info["kind"] == kind and info["cat_ids"] == [4, 5, 6]
    assert getattr(loaded, "arch", {}) == getattr(model, "arch", {})  # Sparse R-CNN's 16 proposals, 2 stages
    with torch.no_grad():
        after = loaded(images)[0]
    assert len(before["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(before[key], after[key]), key


# -- the recipe table -------------------------------------------------------------------------
def test_recipes_hold_the_official_settings_and_the_models_read_them():
    assert set(NEW_KINDS) <= set(KINDS) and set(KIND_RECIPES) == set(NEW_KINDS) | {"cascade_maskrcnn"}
    for kind in ("atss", "gfl"):
        r = KIND_RECIPES[kind]
        assert (r.lr, r.weight_decay, r.epochs, r.steps, r.clip_grad, r.batch_size) == (1e-4, 0.05, 36, (27, 33), 0.0, 16)
        assert "norm" in r.no_decay_keys and r.train_min_sizes == tuple(range(480, 801, 32)) and r.amp == "fp16"
        assert r.test == {"score_thresh": 0.05, "nms_thresh": 0.6, "detections_per_img": 100, "topk_candidates": 1000}
        assert r.configs["pvt_v2_b2_li"] == f"{kind}_pvt_v2_b2_li_fpn_3x_mstrain_fp16.py"
        assert all(":" in v for v in r.sources.values())
    sparse = KIND_RECIPES["sparse_rcnn"]
    assert sparse.for_backbone("pvt_v2_b2")["lr"] == pytest.approx(2.5e-5 / 1.4)
    assert sparse.for_backbone("pvt_v2_b2")["batch_size"] == 8
    assert sparse.for_backbone("pvt_v2_b2_li")["lr"] == 2.5e-5 and sparse.clip_grad == 1.0
    # `detect train --kind sparse_rcnn` without --lr takes its backbone's official rate
    assert DetTrainConfig(kind="sparse_rcnn", model="pvt_v2_b2").resolved().lr == pytest.approx(2.5e-5 / 1.4)
    assert DetTrainConfig(kind="sparse_rcnn", model="pvt_v2_b2_li").resolved().lr == 2.5e-5
    assert DetTrainConfig(kind="atss", model="pvt_v2_b0").resolved().lr == 1e-4
    for kind in ("atss", "gfl"):
        head = _on_meta(kind).head
        assert {k: getattr(head, k) for k in KIND_RECIPES[kind].test} == KIND_RECIPES[kind].test
    assert _on_meta("sparse_rcnn").detections_per_img == 300


# -- short training runs (slow) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes96(tmp_path_factory):
    return make_detection_dataset(tmp_path_factory.mktemp("det96"), classes=3, train_images=100, val_images=30,
                                  size=96, seed=0, progress=False)


# The RetinaNet test's tiny-problem recipe (the official ones are for COCO on 8 GPUs); single-scale
# (the 3x multi-scale crop is tested in test_detection_augment.py).
TINY = dict(model="pvt_v2_b0", schedule="1x", batch_size=4, lr=2e-4, clip_grad=10.0, warmup_iters=30, min_size=96,
            max_size=96, drop_path=0.0, workers=0, device="cpu", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind,epochs", [("fcos", 3), ("atss", 3), ("gfl", 4)])  # QFL starts slower
def test_short_training_reaches_ap50(kind, epochs, shapes96, tmp_path):
    train(DetTrainConfig(data=str(shapes96), output=str(tmp_path), kind=kind, epochs=epochs, steps=(epochs - 1,), **TINY))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {k if k.startswith("loss") else f"loss_{k}" for k in EXPECTED_LOSSES[kind]} <= set(lines[0])
    assert max(r["bbox_AP50"] for r in lines) > 0.5, lines
    model, info = load_detector(tmp_path / "best.safetensors")
    assert info["kind"] == kind and type(model) is DETECTORS[kind]
