"""Dense-prediction benchmark against torchvision's ResNet-50 models (mechanics, not speed)."""
import pytest
import torch

from pvtv2.bench.dense import DETECTIONS_PER_IMAGE, DenseCase, format_dense, plain_kernels, run_dense_case


def test_segmentation_bench_runs_both_models_and_reports_the_ratio():
    case = DenseCase(task="segment", kind="fcn_resnet50", backbone="pvt_v2_b0", img_size=(64, 96), repeats=2, warmup=1)
    result = run_dense_case(case)
    assert result["peer_name"] == "fcn_resnet50"
    assert result["params"]["peer"] > 30_000_000 > result["params"]["ours"] > 3_000_000
    assert result["ratio"] == pytest.approx(result["peer"]["median_s"] / result["ours"]["median_s"])
    assert "fcn_resnet50" in format_dense(result) and "64x96" in format_dense(result)
    # ours is also timed in plain eager float32, the reference of the fast paths' speed-up
    assert result["speedup"] == pytest.approx(result["eager_fp32"]["median_s"] / result["ours"]["median_s"])
    assert "plain eager fp32" in format_dense(result)


def test_plain_kernels_switch_onednn_off_for_the_block_only():
    from pvtv2.detection import create_detector

    model = create_detector("retinanet", "pvt_v2_b0", num_classes=3)
    model.backbone.body.set_onednn(True)
    settings = [m for m in model.modules() if hasattr(m, "onednn")]
    assert len(settings) > 20  # every linear layer and feed-forward of the backbone inside the detector
    with plain_kernels(model):
        assert all(m.onednn is False for m in settings)
    assert all(m.onednn is True for m in settings)


def test_dense_bench_rejects_unknown_peers():
    with pytest.raises(ValueError, match="fcn_resnet50, deeplabv3_resnet50"):
        run_dense_case(DenseCase(task="segment", kind="unet"))
    with pytest.raises(ValueError, match="no torchvision peer"):
        run_dense_case(DenseCase(task="detect", kind="yolo"))


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
