"""Dense-prediction benchmark against torchvision's ResNet-50 models (mechanics, not speed)."""
import pytest
import torch

from pvtv2.bench.dense import DenseCase, format_dense, run_dense_case


def test_segmentation_bench_runs_both_models_and_reports_the_ratio():
    case = DenseCase(task="segment", kind="fcn_resnet50", backbone="pvt_v2_b0", img_size=(64, 96), repeats=2, warmup=1)
    result = run_dense_case(case)
    assert result["peer_name"] == "fcn_resnet50"
    assert result["params"]["peer"] > 30_000_000 > result["params"]["ours"] > 3_000_000
    assert result["ratio"] == pytest.approx(result["peer"]["median_s"] / result["ours"]["median_s"])
    assert "fcn_resnet50" in format_dense(result) and "64x96" in format_dense(result)


def test_dense_bench_rejects_unknown_peers():
    with pytest.raises(ValueError, match="fcn_resnet50, deeplabv3_resnet50"):
        run_dense_case(DenseCase(task="segment", kind="unet"))
    with pytest.raises(ValueError, match="no torchvision peer"):
        run_dense_case(DenseCase(task="detect", kind="yolo"))
