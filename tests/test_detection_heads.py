"""The parts of the ATSS, GFL and Sparse R-CNN heads, each against small hand-worked cases:
losses (focal, GIoU, QFL, DFL, centerness), the ATSS assigner, the Hungarian matcher (against
brute force), anchors, integral decoding and the multi-class NMS."""
import itertools
import math

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from pvtv2.detection.assigners import atss_assign
from pvtv2.detection.gfl import box_to_distance, distance_to_box, integral
from pvtv2.detection.losses import aligned_box_iou, centerness_target, distribution_focal_loss, quality_focal_loss
from pvtv2.detection.matcher import HungarianMatcher, linear_sum_assignment
from pvtv2.detection.one_stage import grid_anchors, multiclass_nms, valid_anchors


def T(x):
    return torch.tensor(x, dtype=torch.float32)


def sig(x):
    return 1 / (1 + math.exp(-x))


def bce(x, y):
    """Binary cross-entropy of a logit ``x`` against a soft target ``y``, written out."""
    return -(y * math.log(sig(x)) + (1 - y) * math.log(1 - sig(x)))


# -- losses ----------------------------------------------------------------------------------
def test_focal_and_giou_losses_as_the_heads_use_them():
    # alpha weighs the positives: 0.25 * (1 - 0.5)^2 * log 2; a negative at logit 2: 0.75 * s^2 * -log(1 - s).
    got = sigmoid_focal_loss(T([0.0, 2.0]), T([1.0, 0.0]), alpha=0.25, gamma=2.0, reduction="none")
    assert got.tolist() == pytest.approx([0.25 * 0.25 * math.log(2), 0.75 * sig(2) ** 2 * bce(2, 0)], rel=1e-5)
    assert got.tolist() == pytest.approx([0.043322, 1.237558], abs=1e-5)
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 7, enclosing box 9 -> GIoU 1/7 - 2/9.
    giou = generalized_box_iou_loss(T([[0, 0, 2, 2]]), T([[1, 1, 3, 3]]), reduction="none", eps=1e-6)
    assert giou.item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    assert aligned_box_iou(T([[0, 0, 2, 2], [0, 0, 4, 4]]), T([[1, 1, 3, 3], [0, 0, 2, 4]])).tolist() == \
        pytest.approx([1 / 7, 0.5])


def test_quality_focal_loss_is_its_formula():
    logits = T([[0.0, 1.0], [-1.0, 2.0]])
    labels = torch.tensor([1, -1])  # row 0: class 1 with IoU target 0.6; row 1: a negative
    quality = T([0.6, 0.9])  # a negative's quality is never read
    got = quality_focal_loss(logits, labels, quality, beta=2.0)
    # Negatives: BCE(x, 0) * s^beta; the positive's class: BCE(x, y) * |y - s|^beta; summed per row.
    expected = [bce(0, 0) * sig(0) ** 2 + bce(1, 0.6) * abs(0.6 - sig(1)) ** 2,
                bce(-1, 0) * sig(-1) ** 2 + bce(2, 0) * sig(2) ** 2]
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert got.tolist() == pytest.approx([0.185538, 1.672736], abs=1e-5)
    # A positive predicted exactly at its target quality costs nothing for its class.
    exact = quality_focal_loss(T([[math.log(0.6 / 0.4)]]), torch.tensor([0]), T([0.6]))
    assert exact.item() == pytest.approx(0.0, abs=1e-7)
    # Gradients flow to the logits, not through the target.
    x = logits.clone().requires_grad_()
    quality_focal_loss(x, labels, quality).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_distribution_focal_loss_is_its_formula():
    logits = T([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])  # reg_max 2: bins 0, 1, 2
    ce = lambda k: math.log(1 + math.e + math.e ** 2) - k  # cross-entropy of bin k (logit k)
    got = distribution_focal_loss(logits, T([0.3, 1.5]))
    # 0.3 lies between bins 0 and 1: 0.7 * CE(0) + 0.3 * CE(1); 1.5: 0.5 * CE(1) + 0.5 * CE(2).
    assert got.tolist() == pytest.approx([0.7 * ce(0) + 0.3 * ce(1), 0.5 * ce(1) + 0.5 * ce(2)], rel=1e-6)
    assert got.tolist() == pytest.approx([2.107606, 0.907606], abs=1e-5)


def test_centerness_target():
    # The point (2, 3) in [0, 0, 10, 4]: left 2, right 8, top 3, bottom 1 -> sqrt(2/8 * 1/3).
    got = centerness_target(T([[2, 3], [5, 2]]), T([[0, 0, 10, 4], [0, 0, 10, 4]]))
    assert got.tolist() == pytest.approx([math.sqrt(2 / 8 * 1 / 3), 1.0])


# -- the ATSS assigner -------------------------------------------------------------------------
ZERO_IOU = [[20, 0, 30, 10], [0, 20, 10, 30], [-20, 0, -10, 10], [0, -20, 10, -10]]


def test_atss_threshold_is_mean_plus_std_of_the_candidates():
    # Box [0,0,10,10]; six candidates (topk 6, one level) with IoUs 0.9, 0.8, 0, 0, 0, 0:
    # mean 1.7/6 = 0.2833, unbiased std sqrt(0.9683/5) = 0.4401, threshold 0.7234 -> the first two.
    anchors = T([[0, 0, 10, 9], [0, 0, 10, 8]] + ZERO_IOU)
    assert atss_assign(anchors, [6], T([[0, 0, 10, 10]]), topk=6).tolist() == [0, 0, -1, -1, -1, -1]
    # No boxes: all background; no anchors: nothing to assign.
    assert atss_assign(anchors, [6], T([]).reshape(0, 4)).tolist() == [-1] * 6
    assert atss_assign(T([]).reshape(0, 4), [0], T([[0, 0, 10, 10]])).tolist() == []


def test_atss_positive_centre_must_lie_inside_the_box():
    # Box [0,0,40,4]. c0 = [14,-2,26,10]: IoU 48/256 = 0.1875, centre (20, 4) on the bottom edge;
    # c1 = [16,-3,24,5]: IoU 32/192 = 0.1667, centre (20, 1) inside; four at IoU 0.
    # mean 0.0590, std sqrt(0.04203/5) = 0.0917, threshold 0.1507: both pass, only c1 is inside.
    anchors = T([[14, -2, 26, 10], [16, -3, 24, 5], [50, 0, 60, 10], [-20, 0, -10, 10], [0, 20, 10, 30],
                 [30, -30, 40, -20]])
    assert atss_assign(anchors, [6], T([[0, 0, 40, 4]]), topk=6).tolist() == [-1, 0, -1, -1, -1, -1]


def test_atss_anchor_positive_for_two_boxes_takes_the_one_it_overlaps_most():
    # a0 = [0,0,10,9], a1 = [0,0,10,8], a2 = [0,0,10,10] and four at IoU 0; boxes G1 = [0,0,10,10],
    # G2 = [0,0,10,9]. G1: IoUs .9, .8, 1 -> threshold 0.8702: a0, a2. G2: IoUs 1, .8889, .9 ->
    # threshold 0.8966: a0, a2. a0 overlaps G2 more (1 > .9), a2 overlaps G1 more (1 > .9).
    anchors = T([[0, 0, 10, 9], [0, 0, 10, 8], [0, 0, 10, 10]] + ZERO_IOU)
    got = atss_assign(anchors, [7], T([[0, 0, 10, 10], [0, 0, 10, 9]]), topk=7)
    assert got.tolist() == [1, -1, 0, -1, -1, -1, -1]


def test_atss_candidates_are_the_topk_nearest_per_level():
    # Three levels of two anchors; box [0,0,10,10]. Level 0: a0 = the box (IoU 1, distance 0),
    # a1 = [0,0,10,9] (IoU .9, distance .5). topk 1: candidates a0, [2,2,8,8] (.36), [30,0,40,10] (0)
    # -> threshold 0.9598: a0 only. topk 2 adds a1 and two IoU-0 anchors -> threshold 0.8432: a0, a1.
    anchors = T([[0, 0, 10, 10], [0, 0, 10, 9], [2, 2, 8, 8], [20, 20, 30, 30], [30, 0, 40, 10], [-40, 0, -30, 10]])
    box = T([[0, 0, 10, 10]])
    assert atss_assign(anchors, [2, 2, 2], box, topk=1).tolist() == [0, -1, -1, -1, -1, -1]
    assert atss_assign(anchors, [2, 2, 2], box, topk=2).tolist() == [0, 0, -1, -1, -1, -1]
    with pytest.raises(ValueError, match="sums to 5 but there are 6 anchors"):
        atss_assign(anchors, [2, 2, 1], box)


# -- the Hungarian matcher ---------------------------------------------------------------------
def test_matcher_cost_is_the_official_sum():
    # One class at logit 0 (p = .5): focal cost 2 * (.25 * .25 * log2 - .75 * .25 * log2);
    # L1 of [0,0,10,10] vs [5,0,15,10] over a 20x20 image: 5 * (.25 + .25);
    # GIoU: IoU 50/150, the enclosing box is the union -> -2 * 1/3.
    m = HungarianMatcher()
    cost = m.cost(T([[0.0]]), T([[0, 0, 10, 10]]), torch.tensor([0]), T([[5, 0, 15, 10]]), T([20, 20, 20, 20]))
    expected = 2 * (0.25 * 0.25 - 0.75 * 0.25) * math.log(2) + 5 * 0.5 - 2 / 3
    assert cost.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_matcher_finds_the_brute_force_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    num_pred, num_gt, num_cls = 6, 3 + seed % 2, 3
    xy = torch.rand(num_pred + num_gt, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 5 + torch.rand(num_pred + num_gt, 2, generator=g) * 30], 1)
    pred, gt = boxes[:num_pred], boxes[num_pred:]
    logits = torch.randn(num_pred, num_cls, generator=g)
    labels = torch.randint(0, num_cls, (num_gt,), generator=g)
    whwh = T([100, 90, 100, 90])
    matcher = HungarianMatcher()
    cost = matcher.cost(logits, pred, labels, gt, whwh)
    rows, cols = matcher(logits, pred, labels, gt, whwh)
    assert sorted(cols.tolist()) == list(range(num_gt)) and len(set(rows.tolist())) == num_gt
    best = min(sum(cost[p, j].item() for j, p in enumerate(perm))
               for perm in itertools.permutations(range(num_pred), num_gt))
    assert cost[rows, cols].sum().item() == pytest.approx(best, abs=1e-5)


def test_linear_sum_assignment_on_a_known_matrix_and_no_boxes():
    rows, cols = linear_sum_assignment(T([[4, 1, 3], [2, 0, 5], [3, 2, 2]]))
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0, 2: 2}  # 1 + 2 + 2 = 5, the minimum
    rows, cols = HungarianMatcher()(torch.zeros(4, 2), torch.rand(4, 4), torch.zeros(0, dtype=torch.long),
                                    torch.zeros(0, 4), T([1, 1, 1, 1]))
    assert rows.numel() == cols.numel() == 0


# -- anchors, decoding, NMS --------------------------------------------------------------------
def test_grid_anchors_and_valid_points():
    a8, a32 = grid_anchors([(2, 3), (2, 3)], [8, 32], octave_scale=8)
    # Centres on (x * stride, y * stride), side 8 * stride, row-major.
    assert a8[:4].tolist() == [[-32, -32, 32, 32], [-24, -32, 40, 32], [-16, -32, 48, 32], [-32, -24, 32, 40]]
    assert a32[4].tolist() == [32 - 128, 32 - 128, 32 + 128, 32 + 128]
    # A 30x40 image in a batch padded to 64x96: itself padded to 32x64, so at stride 32 only
    # ceil(32/32) = 1 row and ceil(64/32) = 2 columns of the 2x3 grid lie on it.
    valid = valid_anchors([(8, 12), (2, 3)], [8, 32], (30, 40))
    assert valid[96:].tolist() == [True, True, False, False, False, False]
    assert valid[:96].reshape(8, 12)[:4, :8].all() and not valid[:96].reshape(8, 12)[4:, :].any()


def test_integral_decoding_round_trip():
    reg_max = 16
    logits = torch.full((2, 4 * (reg_max + 1)), -1e4)
    for side, d in enumerate([3, 0, 16, 7]):  # a near one-hot distribution: the expectation is the bin
        logits[0, side * (reg_max + 1) + d] = 0
    logits[1] = 0  # uniform: the expectation is the middle, 8
    dist = integral(logits, reg_max)
    assert dist.tolist() == [pytest.approx([3, 0, 16, 7]), pytest.approx([8, 8, 8, 8])]
    pts = T([[10, 10], [4, 4]])
    boxes = distance_to_box(pts, dist)
    assert boxes[0].tolist() == pytest.approx([7, 10, 26, 17])
    assert box_to_distance(pts, boxes, reg_max).tolist()[0] == pytest.approx([3, 0, 15.9, 7])  # clamped below 16


def test_multiclass_nms_thresholds_before_the_score_factor():
    boxes = T([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = T([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.5, 0.04]])
    out = multiclass_nms(boxes, scores, score_thresh=0.05, nms_thresh=0.6, max_detections=10)
    # Box 1 overlaps box 0 of its class (IoU .82): suppressed; box 2 is another class: kept.
    assert out["labels"].tolist() == [1, 2, 1] and out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.5])
    factors = T([1.0, 1.0, 1.0, 0.1])
    out = multiclass_nms(boxes, scores, score_thresh=0.05, nms_thresh=0.6, max_detections=2, score_factors=factors)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7])  # max_detections
    out = multiclass_nms(boxes, scores, score_thresh=0.05, nms_thresh=0.6, max_detections=10, score_factors=factors)
    assert out["scores"][-1].item() == pytest.approx(0.05)  # 0.5 passed the threshold, then x 0.1
