"""Dense-prediction benchmark against torchvision's ResNet-50 models (mechanics, not speed)."""
import pytest
import torch

from pvtv2.bench.dense import DETECTIONS_PER_IMAGE, DenseCase, format_dense, plain_paths, run_dense_case


def test_segmentation_bench_runs_both_models_and_reports_the_ratio():
    case = DenseCase(task="segment", kind="fcn_resnet50", backbone="pvt_v2_b0", img_size=(64, 96), repeats=2, warmup=1,
                     profile=True)
    result = run_dense_case(case)
    assert result["peer_name"] == "fcn_resnet50"
    assert result["params"]["peer"] > 30_000_000 > result["params"]["ours"] > 3_000_000
    assert result["ratio"] == pytest.approx(result["peer"]["median_s"] / result["ours"]["median_s"])
    assert "fcn_resnet50" in format_dense(result) and "64x96" in format_dense(result)
    # ours is also timed in plain eager float32, the reference of the fast paths' speed-up
    assert result["speedup"] == pytest.approx(result["eager_fp32"]["median_s"] / result["ours"]["median_s"])
    assert "plain eager fp32" in format_dense(result)
    assert result["profile"]["groups"]["convolutions"] > 0  # where our step's time goes (--profile)


def test_plain_paths_switch_every_cpu_fast_path_off_for_the_block_only():
    from pvtv2.detection import create_detector

    model = create_detector("retinanet", "pvt_v2_b0", num_classes=3)
    model.backbone.body.set_onednn(True)
    linear = [m for m in model.modules() if hasattr(m, "onednn")]
    assert len(linear) > 20  # every linear layer and feed-forward of the backbone inside the detector
    with plain_paths(model):
        assert all(m.onednn is False for m in linear)
        assert model.backbone.channels_last is False and model.prune_candidates is False
    assert all(m.onednn is True for m in linear)
    assert model.backbone.channels_last is None and model.prune_candidates is True
    two_stage = create_detector("maskrcnn", "pvt_v2_b0", num_classes=3)
    with plain_paths(two_stage):
        assert two_stage.roi_heads.box_roi_pool.parallel is False and two_stage.roi_heads.mask_roi_pool.parallel is False
    assert two_stage.roi_heads.mask_roi_pool.parallel is None


@pytest.mark.parametrize("kind", ["retinanet", pytest.param("maskrcnn", marks=pytest.mark.slow)])
def test_detection_bench_keeps_the_same_number_of_boxes_on_both_sides(kind):
    # With random weights a score threshold keeps an arbitrary number of boxes on each side (torchvision's
    # Mask R-CNN pasted 100 masks per image where ours pasted a few, and looked 3x slower on an H200).
    result = run_dense_case(DenseCase(task="detect", kind=kind, backbone="pvt_v2_b0", img_size=(64, 96),
                                      repeats=1, warmup=0))
    assert result["ours"]["detections_per_image"] == result["peer"]["detections_per_image"] == DETECTIONS_PER_IMAGE
    assert f"{DETECTIONS_PER_IMAGE} boxes/img" in format_dense(result)


def test_the_input_is_not_resized_by_either_detector():
    from pvtv2.bench.dense import _models

    ours, peer, _ = _models(DenseCase(task="detect", kind="fcos", backbone="pvt_v2_b0", img_size=(64, 96)))
    for model in (ours, peer):
        images, _ = model.transform([torch.rand(3, 64, 96)])
        assert images.image_sizes == [(64, 96)]


def _result(task, kind, backbone, ours_s, peer_name):
    """A run_dense_case-shaped result with the fields the figure reads."""
    return {"case": {"task": task, "kind": kind, "backbone": backbone, "img_size": (800, 1216), "dtype": "bf16"},
            "machine": {"threads": 2}, "peer_name": peer_name,
            "ours": {"median_s": ours_s, "latency_ms": 1000 * ours_s},
            "eager_fp32": {"median_s": 2 * ours_s, "latency_ms": 2000 * ours_s},
            "peer": {"median_s": 1.5, "latency_ms": 1500.0}}


def test_published_accuracy_of_ours_and_the_peers():
    from pvtv2.bench.dense import published_accuracy

    # whai362/PVT's detection README and torchvision's weights metadata (RetinaNet R50 COCO_V1: 36.4)
    assert published_accuracy(_result("detect", "retinanet", "pvt_v2_b2", 1, "retinanet_resnet50_fpn")) == (44.6, 36.4)
    assert published_accuracy(_result("detect", "maskrcnn", "pvt_v2_b0", 1, "maskrcnn_resnet50_fpn")) == (38.2, 37.9)
    # no published FCOS on PVTv2; torchvision's segmenters are scored on COCO with VOC labels, not ADE20K
    assert published_accuracy(_result("detect", "fcos", "pvt_v2_b0", 1, "fcos_resnet50_fpn")) == (None, 39.2)
    assert published_accuracy(_result("segment", "fcn_resnet50", "pvt_v2_b5", 1, "fcn_resnet50")) == (48.7, None)


def test_speed_accuracy_figure_has_a_panel_per_task(tmp_path):
    from PIL import Image

    from pvtv2.bench.dense import plot_speed_accuracy

    results = [_result("detect", kind, b, s, f"{kind}_resnet50_fpn") for kind in ("retinanet", "maskrcnn")
               for b, s in (("pvt_v2_b0", 0.8), ("pvt_v2_b2", 1.6))]
    path = plot_speed_accuracy(results, tmp_path / "one.png")
    one = Image.open(path).size
    results.append(_result("segment", "fcn_resnet50", "pvt_v2_b0", 0.2, "fcn_resnet50"))
    two = Image.open(plot_speed_accuracy(results, tmp_path / "two.png")).size
    assert two[0] > 1.8 * one[0] and two[1] == one[1]
    with pytest.raises(ValueError, match="no dense-prediction results"):
        plot_speed_accuracy([], tmp_path / "none.png")
