"""Anchors and box decoding in float32 under bf16/fp16 autocast (pvtv2.detection.fp32_boxes)."""
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder, BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from pvtv2.detection import create_detector
from pvtv2.detection.fp32_boxes import Float32AnchorGenerator, Float32BoxCoder, Float32BoxLinearCoder

SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = ((0.5, 1.0, 2.0),) * 5


def _maps(dtype):
    """An 800x1344 batch (1333x800 padded to 32) and its P3-P7 maps."""
    images = ImageList(torch.zeros(1, 3, 800, 1344), [(800, 1333)])
    return images, [torch.zeros(1, 8, 800 // s, 1344 // s, dtype=dtype) for s in (8, 16, 32, 64, 128)]


def test_anchors_stay_float32_on_low_precision_maps():
    images, maps32 = _maps(torch.float32)
    reference = AnchorGenerator(SIZES, RATIOS)(images, maps32)[0]
    _, maps16 = _maps(torch.bfloat16)
    ours = Float32AnchorGenerator(SIZES, RATIOS)(images, maps16)[0]
    assert ours.dtype == torch.float32 and torch.equal(ours, reference)
    theirs = AnchorGenerator(SIZES, RATIOS)(images, maps16)[0]
    assert (theirs.float() - reference).abs().max() > 0.5  # what torchvision alone gives


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decoding_under_bf16_autocast_equals_float32(weights):
    images, maps = _maps(torch.float32)
    anchors = AnchorGenerator(SIZES, RATIOS)(images, maps)[0]
    deltas = (torch.randn(len(anchors), 4, generator=torch.Generator().manual_seed(0)) * 0.2).bfloat16()
    reference = BoxCoder(weights).decode_single(deltas.float(), anchors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = Float32BoxCoder(weights).decode_single(deltas, anchors)
        theirs = BoxCoder(weights).decode_single(deltas, anchors)
    assert ours.dtype == torch.float32
    assert (ours - reference).abs().max() < 1e-4
    assert (theirs.float() - reference).abs().max() > 0.5  # boxes near 1333 px rounded to bf16


def test_linear_decoding_under_bf16_autocast_equals_float32():
    anchors = torch.tensor([[1300.0, 770.0, 1308.0, 778.0], [8.0, 8.0, 16.0, 16.0]])
    deltas = torch.tensor([[1.5, 2.25, 0.75, 3.0], [0.5, 0.25, 1.0, 2.0]]).bfloat16()
    reference = BoxLinearCoder(True).decode(deltas.float(), anchors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = Float32BoxLinearCoder(True).decode(deltas, anchors)
        theirs = BoxLinearCoder(True).decode(deltas, anchors)
    assert ours.dtype == torch.float32 and (ours - reference).abs().max() < 1e-4
    assert (theirs.float() - reference).abs().max() > 0.5


@pytest.mark.parametrize("kind, keep_all", [("retinanet", {"score_thresh": 0.0}), ("fasterrcnn", {"box_score_thresh": 0.0}),
                                            ("fcos", {"score_thresh": 0.0})])
def test_torchvision_detectors_return_float32_boxes_under_autocast(kind, keep_all):
    torch.manual_seed(0)
    model = create_detector(kind, "pvt_v2_b0", 2, min_size=64, max_size=64, **keep_all).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model([torch.rand(3, 64, 80)])[0]
    # torchvision alone decodes, clips and rescales them in bf16 (its anchors follow the maps' dtype)
    assert out["boxes"].dtype == torch.float32 and len(out["boxes"]) > 0


@pytest.mark.parametrize("n, k", [(10_944_000, 1000), (100_000, 1000), (70_000, 1000), (300, 1000)])
def test_top_k_takes_the_same_elements_as_topk(n, k):
    from pvtv2.detection.retinanet import top_k

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    x[n // 3] = 50.0  # one outlier, in the middle of a block
    values, idx = top_k(x, k)
    ref_values, ref_idx = x.topk(min(k, n))
    assert torch.equal(values, ref_values) and torch.equal(idx, ref_idx) and idx[0] == n // 3
    many_equal = torch.zeros(4_096_000)  # every element ties: any k of them, all zeros
    values, idx = top_k(many_equal, 5)
    assert values.tolist() == [0.0] * 5 and len(set(idx.tolist())) == 5


def test_top_k_on_nothing_and_on_nan():
    from pvtv2.detection.retinanet import top_k

    g = torch.Generator().manual_seed(0)
    for x in (torch.empty(0), torch.randn(2_100_000, generator=g)):
        assert top_k(x, 0)[0].numel() == 0
    with_nan = torch.randn(2_100_000, generator=g)
    with_nan[::20_000] = float("nan")  # NaN in 105 blocks: topk's own ranking (NaN first), not a crash
    values, idx = top_k(with_nan, 1000)
    assert torch.equal(idx, with_nan.topk(1000).indices) and values[:105].isnan().all() and not values[105:].isnan().any()


@pytest.mark.parametrize("thresh", [0.0, 0.5])
def test_retinanet_keeps_torchvision_s_detections(thresh):
    from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet

    model = create_detector("retinanet", "pvt_v2_b0", 3, min_size=640, max_size=640).eval()
    model.score_thresh = thresh
    g = torch.Generator().manual_seed(0)
    # The head's outputs for a 640x640 image (P3-P7: 80..5 cells a side, 9 anchors, 20 classes: 1.15M scores on
    # P3, where top_k prunes by blocks) and its anchors; half the scores pass 0.5.
    cells = [80 * 80, 40 * 40, 20 * 20, 10 * 10, 5 * 5]
    head = {"cls_logits": [torch.randn(1, 9 * c, 20, generator=g) for c in cells],
            "bbox_regression": [0.2 * torch.randn(1, 9 * c, 4, generator=g) for c in cells]}
    anchors = [[torch.rand(9 * c, 2, generator=g).mul(600).repeat(1, 2) + torch.tensor([0, 0, 30, 30])
                for c in cells]]
    from pvtv2.detection.retinanet import BLOCK, prune_pays
    assert head["cls_logits"][0].numel() // BLOCK >= 4 * model.topk_candidates  # the pruning path
    assert prune_pays(head["cls_logits"][0]) and not prune_pays(head["cls_logits"][0].to("meta"))
    ours = model.postprocess_detections(head, anchors, [(640, 640)])[0]
    theirs = TorchvisionRetinaNet.postprocess_detections(model, head, anchors, [(640, 640)])[0]
    assert len(ours["boxes"]) == model.detections_per_img == 100
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(ours[key], theirs[key]), key


def test_parallel_roi_align_pools_what_torchvision_pools():
    from collections import OrderedDict

    from torchvision.ops import MultiScaleRoIAlign

    from pvtv2.detection.roi_align import MIN_ROIS, ParallelRoIAlign, parallel_pays

    g = torch.Generator().manual_seed(0)
    maps = OrderedDict((str(i), torch.randn(2, 8, 64 >> i, 96 >> i, generator=g)) for i in range(4))
    boxes = []
    for n in (150, 37):  # two images, unequal counts: the shares must go back image by image
        xy = torch.rand(n, 2, generator=g) * torch.tensor([300.0, 200.0])
        boxes.append(torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 120], 1))
    shapes = [(256, 384), (256, 384)]
    theirs = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    ours = ParallelRoIAlign(["0", "1", "2", "3"], 7, 2)
    threads = torch.get_num_threads()  # the suite's workers run one thread each: the split needs several
    torch.set_num_threads(3)
    try:
        assert parallel_pays(maps["0"], 187) and not parallel_pays(maps["0"], MIN_ROIS - 1)
        with torch.no_grad():
            assert torch.equal(ours(maps, boxes, shapes), theirs(maps, boxes, shapes))
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as autocast runs torchvision's: float32 inside
                low = {k: v.bfloat16() for k, v in maps.items()}
                got, expected = ours(low, boxes, shapes), theirs(low, boxes, shapes)
            assert got.dtype == expected.dtype == torch.bfloat16 and torch.equal(got, expected)
        assert not parallel_pays(maps["0"].detach().requires_grad_(), 187)  # gradients: torchvision's single call
        assert not parallel_pays(maps["0"], 187, training=True)  # and in training mode (a validation loss)
        ours.parallel = False  # the module's switch: torchvision's single call
        with torch.no_grad():
            assert torch.equal(ours(maps, boxes, shapes), theirs(maps, boxes, shapes))
    finally:
        torch.set_num_threads(threads)
    assert not parallel_pays(maps["0"], 187) or threads > 1
