"""Cascade Mask R-CNN: the paper's parameters and GFLOPs, the official head shapes and per-stage
settings, the cascade's training targets and losses by hand, the test-time averaging, torchvision's
detector interface, the save/load round trip, `detect train` end to end (exact resume after a SIGKILL:
tests/test_detection_runs.py; held-out AP50 after fine-tuning: tests/test_detection.py)."""
import json
import math

import pytest
import torch
from torch import nn

from pvtv2.ablation import TOLERANCE
from pvtv2.bench.flops import build_on_meta, count_flops, count_task_flops
from pvtv2.detection import KIND_RECIPES, create_detector, load_detector, save_detector
from pvtv2.detection.cascade_rcnn import CascadeMaskRCNN, CascadeRoIHeads
from pvtv2.detection.model import DETECTORS, MASK_KINDS
from pvtv2.registry import REGISTRY
from torchvision.ops import MultiScaleRoIAlign, box_iou, generalized_box_iou

# Small heads for the functional tests (the official three box heads are 47M parameters); the
# official shapes are checked on the meta device.
SMALL = dict(box_convs=1, box_conv_channels=32, box_fc_channels=64, mask_convs=1, mask_channels=32,
             rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=200, rpn_pre_nms_top_n_test=100,
             rpn_post_nms_top_n_test=100, box_batch_size_per_image=64)


def _masks(boxes, h, w):
    m = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        m[i, y0:y1, x0:x1] = 1
    return m


def _targets():
    b1, b2 = torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 90.0, 80.0]]), torch.tensor([[5.0, 8.0, 50.0, 40.0]])
    return [{"boxes": b1, "labels": torch.tensor([1, 2]), "masks": _masks(b1, 96, 96)},
            {"boxes": b2, "labels": torch.tensor([2]), "masks": _masks(b2, 96, 128)}]


# -- the paper's table ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pvt_v2_b2", "pvt_v2_b2_li"])
def test_parameters_and_gflops_match_the_paper(name):
    """PVTv2 paper Table 4: Cascade Mask R-CNN 83M / 788 GFLOPs (B2), 80M / 725 (B2-Li) at
    1280x800, counted as get_flops.py runs mmdet's CascadeRoIHead.forward_dummy (three box heads
    on 1000 RoIs, three mask heads on 100)."""
    paper_params, paper_gflops = REGISTRY[name].paper_dense["cascade_maskrcnn"]
    r = count_task_flops("detect", name, kind="cascade_maskrcnn")
    assert r["params_m"] == pytest.approx(paper_params, abs=0.5), r["params_m"]
    assert abs(r["gflops"] - paper_gflops) <= TOLERANCE * paper_gflops, r["gflops"]


def test_flops_run_every_stage_head():
    """The linear layers: the backbone's, then per stage the fc (256 x 7 x 7 -> 1024), the
    classifier (81) and the class-specific regression (4 x 80) on 1000 RoIs."""
    r = count_task_flops("detect", "pvt_v2_b0", (256, 256), kind="cascade_maskrcnn")["by_kind"]
    backbone = count_task_flops("classify", "pvt_v2_b0", (256, 256), num_classes=0)["by_kind"]["linear"]
    assert r["linear"] == backbone + 3 * 1000 * (256 * 49 * 1024 + 1024 * 81 + 1024 * 320)
    body = create_detector("cascade_maskrcnn", "pvt_v2_b0", 3, **SMALL).eval()
    assert count_flops(body, (128, 96)) == count_flops(build_on_meta(
        lambda: create_detector("cascade_maskrcnn", "pvt_v2_b0", 3, **SMALL)), (128, 96))


def test_heads_have_the_official_shapes_and_settings():
    model = build_on_meta(lambda: create_detector("cascade_maskrcnn", "pvt_v2_b2", 80))
    assert type(model) is CascadeMaskRCNN and "cascade_maskrcnn" in MASK_KINDS
    assert model.backbone.first_stage == 1 and model.backbone.strides == [4, 8, 16, 32, 64]
    heads = model.roi_heads
    assert len(heads.box_heads) == len(heads.mask_heads) == 3
    for box, mask in zip(heads.box_heads, heads.mask_heads):
        convs = [m for m in box.convs if isinstance(m, nn.Conv2d)]
        assert len(convs) == 4 and all(c.bias is None and c.out_channels == 256 for c in convs)
        assert sum(isinstance(m, nn.BatchNorm2d) for m in box.convs) == 4
        assert (box.fc.in_features, box.fc.out_features) == (256 * 49, 1024)
        assert box.cls_score.out_features == 81 and box.bbox_pred.out_features == 4 * 80
        assert sum(isinstance(m, nn.Conv2d) for m in mask.convs) == 4 and mask.logits.out_channels == 80
        assert mask.upsample.kernel_size == (2, 2) and mask.upsample.stride == (2, 2)
    assert heads.box_roi_pool.output_size == (7, 7) and heads.mask_roi_pool.output_size == (14, 14)
    assert heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"] and heads.box_roi_pool.sampling_ratio == 0
    assert [m.high_threshold for m in heads.matchers] == [0.5, 0.6, 0.7]
    assert all(m.low_threshold == m.high_threshold and not m.allow_low_quality_matches for m in heads.matchers)
    assert [c.weights for c in heads.box_coders] == [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                                                     (1 / 0.033, 1 / 0.033, 1 / 0.067, 1 / 0.067)]
    assert heads.stage_loss_weights == (1.0, 0.5, 0.25) and heads.giou_weight == 10.0
    assert (heads.sampler.batch_size_per_image, heads.sampler.positive_fraction) == (512, 0.25)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.5, 100)
    rpn = model.rpn
    assert rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert rpn.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    assert (rpn._pre_nms_top_n, rpn._post_nms_top_n) == ({"training": 2000, "testing": 1000},) * 2
    assert (rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold, rpn.nms_thresh) == (0.7, 0.3, 0.7)
    assert rpn.fg_bg_sampler.batch_size_per_image == 256 and rpn.fg_bg_sampler.positive_fraction == 0.5


def test_recipe_holds_the_official_3x_settings():
    r = KIND_RECIPES["cascade_maskrcnn"]
    assert (r.lr, r.weight_decay, r.epochs, r.steps, r.clip_grad, r.batch_size, r.amp) == (
        1e-4, 0.05, 36, (27, 33), 0.0, 16, "fp16")
    assert "norm" in r.no_decay_keys and r.train_min_sizes == tuple(range(480, 801, 32))
    assert r.configs["pvt_v2_b2_li"] == "cascade_mask_rcnn_pvt_v2_b2_li_fpn_3x_mstrain_fp16.py"
    assert set(r.head) | set(r.test) <= set(r.sources) and all(":" in v for v in r.sources.values())


# -- the cascade's targets and losses, by hand ----------------------------------------------------
class FixedBoxHead(nn.Module):
    """Logits ``logits`` and zero deltas for every RoI: the stage's boxes pass through unchanged."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))
        self.k = len(logits) - 1

    def forward(self, x):
        return self.logits.expand(len(x), -1), x.new_zeros(len(x), self.k, 4) * self.logits.sum()


class FixedMaskHead(nn.Module):
    def __init__(self, value, k):
        super().__init__()
        self.value, self.k = nn.Parameter(torch.tensor(value)), k

    def forward(self, x):
        return self.value.expand(len(x), self.k, 28, 28)


def _heads(logits, mask_values, **kw):
    settings = dict(stage_iou_thresholds=(0.5, 0.6, 0.7), stage_box_stds=((0.1, 0.1, 0.2, 0.2),) * 3,
                    stage_loss_weights=(1.0, 0.5, 0.25), batch_size_per_image=512, positive_fraction=0.25,
                    giou_weight=10.0, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    names = ["0", "1", "2", "3"]
    return CascadeRoIHeads(MultiScaleRoIAlign(names, 7, 0), [FixedBoxHead(x) for x in logits],
                           MultiScaleRoIAlign(names, 14, 0), [FixedMaskHead(v, len(logits[0]) - 1) for v in mask_values],
                           **{**settings, **kw})


FEATURES = {str(i): torch.zeros(1, 4, 64 // 2 ** (i + 2), 64 // 2 ** (i + 2)) for i in range(4)}


def test_stages_sample_at_their_iou_and_drop_the_added_ground_truth():
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    # IoUs with the ground truth: 0.55, 0.65, 0.75, 0.3 (widths 22, 26, 30, 12 of 40)
    proposals = torch.tensor([[0.0, 0.0, 40.0, w] for w in (22.0, 26.0, 30.0, 12.0)])
    assert box_iou(gt, proposals)[0].tolist() == pytest.approx([0.55, 0.65, 0.75, 0.3])
    target = {"boxes": gt, "labels": torch.tensor([2])}
    heads = _heads([[0.0, 0.0, 0.0]] * 3, [0.0] * 3)
    for stage, positives in enumerate([4, 3, 2]):  # the ground truth itself is a positive
        boxes, labels, matched, is_gt = heads._sample(stage, [proposals], [target])
        assert len(boxes[0]) == 5 and int((labels[0] == 2).sum()) == positives and int((labels[0] == 0).sum()) == 5 - positives
        assert is_gt[0].sum() == 1 and torch.equal(boxes[0][is_gt[0]], gt) and (matched[0] == 0).all()
    # at most 512 RoIs, a quarter of them positive
    many = torch.cat([proposals[:3].repeat(100, 1), torch.tensor([[50.0, 50, 60, 60]]).repeat(1000, 1)])
    _, labels, _, _ = heads._sample(0, [many], [target])
    assert len(labels[0]) == 512 and int((labels[0] > 0).sum()) == 128


def test_losses_by_hand():
    """With zero deltas the decoded boxes are the RoIs: loss_box_s = w_s * 10 * sum(1 - GIoU) over
    the positives / the sampled RoIs; with equal logits loss_cls_s = w_s * log(K + 1); a constant
    mask logit 0 gives BCE log 2. The next stage gets the sampled boxes without the ground truth."""
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    proposals = torch.tensor([[0.0, 0.0, 40.0, w] for w in (22.0, 26.0, 30.0, 12.0)])
    target = {"boxes": gt, "labels": torch.tensor([1]), "masks": _masks(gt, 64, 64)}
    heads = _heads([[0.3, 0.3, 0.3]] * 3, [0.0] * 3).train()
    losses = heads(FEATURES, [proposals], [(64, 64)], [target])[1]
    giou = generalized_box_iou(proposals, gt)[:, 0]
    for s, (w, pos) in enumerate(zip((1.0, 0.5, 0.25), [giou[:3], giou[1:3], giou[2:3]])):
        # stage s: the 4 proposals (then their unchanged copies) + the ground truth = 5 RoIs
        assert losses[f"loss_box_{s}"].item() == pytest.approx(w * 10 * (1 - pos).sum().item() / 5, rel=1e-5)
        assert losses[f"loss_cls_{s}"].item() == pytest.approx(w * math.log(3), rel=1e-5)
        assert losses[f"loss_mask_{s}"].item() == pytest.approx(w * math.log(2), rel=1e-5)
    assert set(losses) == {f"loss_{k}_{s}" for k in ("cls", "box", "mask") for s in range(3)}


def test_test_time_averages_the_stages_scores_and_masks():
    """Scores: the softmax of the mean of the three stages' logits (not the mean of their
    softmaxes); masks: the mean of the three mask heads' probabilities."""
    logits = [[0.0, 2.0, -1.0], [0.0, 0.5, 1.0], [0.0, -1.0, 3.0]]
    heads = _heads(logits, [1.0, -2.0, 0.5]).eval()
    proposals = torch.tensor([[4.0, 4.0, 30.0, 30.0]])
    det = heads(FEATURES, [proposals], [(64, 64)])[0][0]
    expected = torch.softmax(torch.tensor(logits).mean(0), 0)[1:]
    assert det["labels"].tolist() == [2, 1] and det["scores"].tolist() == pytest.approx(
        expected.flip(0).tolist(), rel=1e-5)
    assert torch.equal(det["boxes"], proposals.repeat(2, 1))  # no NMS across classes
    mean_prob = sum(torch.sigmoid(torch.tensor(v)) for v in (1.0, -2.0, 0.5)) / 3
    assert det["masks"].shape == (2, 1, 28, 28) and torch.allclose(det["masks"], mean_prob.expand(2, 1, 28, 28))


# -- torchvision's detector interface -------------------------------------------------------------
def test_train_step_and_eval_outputs():
    torch.manual_seed(0)
    model = create_detector("cascade_maskrcnn", "pvt_v2_b0", 2, min_size=64, max_size=96, box_score_thresh=0.0, **SMALL)
    images = [torch.rand(3, 96, 96), torch.rand(3, 96, 128)]
    losses = model.train()(images, _targets())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"} | {
        f"loss_{k}_{s}" for k in ("cls", "box", "mask") for s in range(3)}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    assert model.backbone.body.patch_embed1.proj.weight.grad.abs().sum() > 0
    for s in range(3):  # every stage's box and mask head learns
        assert model.roi_heads.box_heads[s].bbox_pred.weight.grad.abs().sum() > 0
        assert model.roi_heads.mask_heads[s].logits.weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = model.eval()(images)
    for det, (h, w) in zip(out, [(96, 96), (96, 128)]):
        assert set(det) == {"boxes", "labels", "scores", "masks"} and len(det["boxes"]) > 0
        assert det["masks"].shape == (len(det["boxes"]), 1, h, w)
        assert 0 <= det["masks"].min() and det["masks"].max() <= 1
        assert det["labels"].min() >= 1 and det["labels"].max() <= 2 and (det["scores"][:-1] >= det["scores"][1:]).all()
        b = det["boxes"]
        assert b.min() >= 0 and b[:, 2].max() <= w + 1e-3 and b[:, 3].max() <= h + 1e-3


def test_images_without_boxes_and_bad_targets():
    torch.manual_seed(0)
    model = create_detector("cascade_maskrcnn", "pvt_v2_b0", 2, min_size=64, max_size=64, **SMALL).train()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
              "masks": torch.zeros(0, 64, 64, dtype=torch.uint8)}]
    losses = model([torch.rand(3, 64, 64)], empty)  # only negatives: still finite, still a graph
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box_0"] == 0
    sum(losses.values()).backward()
    box = torch.tensor([[1.0, 1, 30, 30]])
    with pytest.raises(ValueError, match=r"labels must be in 1..2 \(0 is the background\), got \[0\]"):
        model([torch.rand(3, 64, 64)], [{"boxes": box, "labels": torch.tensor([0]), "masks": _masks(box, 64, 64)}])
    with pytest.raises(ValueError, match="every target needs 'masks'"):
        model([torch.rand(3, 64, 64)], [{"boxes": box, "labels": torch.tensor([1])}])
    with pytest.raises(ValueError, match="needs targets"):
        model([torch.rand(3, 64, 64)])
    with pytest.raises(ValueError, match="counts the background: at least 2"):
        DETECTORS["cascade_maskrcnn"](model.backbone, num_classes=1)


def test_sync_batchnorm_conversion_keeps_the_weights():
    """The official heads use SyncBN: converting for DDP changes the module type, not the
    state dict (files saved from a DDP run load into a plain model)."""
    model = create_detector("cascade_maskrcnn", "pvt_v2_b0", 2, **SMALL)
    before = model.state_dict()
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced.roi_heads.box_heads[0].convs[1], torch.nn.SyncBatchNorm)
    after = synced.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_detector("cascade_maskrcnn", "pvt_v2_b0", 3, min_size=64, max_size=96, box_score_thresh=0.0,
                            **SMALL).eval()
    images = [torch.rand(3, 80, 72)]
    with torch.no_grad():
        before = model(images)[0]
    path = save_detector(model, tmp_path / "det.safetensors", class_names=["a", "b", "c"], extra={"cat_ids": [4, 5, 6]})
    loaded, info = load_detector(path, box_score_thresh=0.0, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=100)
    assert type(loaded) is CascadeMaskRCNN and info["kind"] == "cascade_maskrcnn" and info["cat_ids"] == [4, 5, 6]
    assert loaded.arch == model.arch == {"box_convs": 1, "box_conv_channels": 32, "box_fc_channels": 64,
                                         "mask_convs": 1, "mask_channels": 32}
    with torch.no_grad():
        after = loaded(images)[0]
    assert len(before["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(before[key], after[key]), key


# -- `detect train`, killed and resumed (slow) ----------------------------------------------------
@pytest.mark.slow
def test_detect_train_eval_predict_with_the_official_heads(tmp_path):
    """`pvtv2 detect train --kind cascade_maskrcnn` end to end with the official-size heads: masks
    loaded for training, box and mask AP scored each epoch, a best.safetensors that
    load_detector rebuilds as the cascade, and predict's records with masks. One step of two
    images: the official heads cost about 1e11 multiply-adds per image (512 RoIs x 3 stages)."""
    from pvtv2.data import make_detection_dataset
    from pvtv2.detection import DetTrainConfig, predict, train

    shapes = make_detection_dataset(tmp_path / "data", classes=3, train_images=2, val_images=1, size=64, seed=0,
                                    progress=False)
    out = tmp_path / "run"
    train(DetTrainConfig(data=str(shapes), output=str(out), kind="cascade_maskrcnn", model="pvt_v2_b0",
                         schedule="1x", epochs=1, batch_size=2, min_size=64, max_size=64, warmup_iters=2,
                         drop_path=0.0, workers=0, device="cpu", progress=False))
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"} <= set(record)
    assert math.isfinite(record["train_loss"]) and "loss_mask_2" in record
    # The cascade's box heads' BatchNorm statistics train and are saved with the weights (exact resume
    # itself: tests/test_detection_runs.py, whose engine saves the RNG states the samplers draw from).
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    bn = {k: v for k, v in state.items() if k.endswith("running_mean")}
    assert bn and all(v.abs().sum() > 0 for v in bn.values())
    model, info = load_detector(out / "best.safetensors")
    assert isinstance(model, CascadeMaskRCNN) and info["class_names"] == ["circle", "square", "triangle"]
    image = sorted((shapes / "val2017").iterdir())[0]
    records = list(predict([image], out / "best.safetensors", tmp_path / "pred", score_thresh=0.0, progress_bar=False))
    assert len(records) == 1 and (tmp_path / "pred" / f"{image.stem}_det.png").exists()
    assert all("mask" in d for d in records[0]["detections"])
