"""benchmarks/report.py renders the GPU run (benchmarks/run_gpu.sh's cuda_*.json) in its own section."""
import importlib.util
import json
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
MACHINE = {"machine": {"platform": "Linux", "torch": "2.11.0", "threads": 16, "gpu": "NVIDIA H200"}}


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _speed(ips):
    return {"median_s": 128 / ips, "images_per_second": ips, "latency_ms": 128_000 / ips}


def test_cuda_results_get_their_own_section(report, tmp_path):
    assert report.cuda_section(tmp_path) == ""  # no GPU run: no section
    classify = {"case": {"model": "pvt_v2_b2", "mode": "infer", "batch_size": 128, "ours": "bf16", "peer": "bf16"},
                "ours": {**_speed(5529.0), "peak_memory_mb": 812.4}, "timm": {**_speed(5388.0), "peak_memory_mb": 830.0},
                "speedup_vs_timm": 5529.0 / 5388.0, "max_abs_diff": 3.1e-3}
    dense = {"case": {"task": "detect", "kind": "retinanet", "backbone": "pvt_v2_b2", "img_size": [800, 1216],
                      "batch_size": 4, "device": "cuda", "dtype": "tf32"}, "peer_name": "retinanet_resnet50_fpn",
             "ours": {"latency_ms": 51.0, "peak_memory_mb": 1500.0, "detections_per_image": 100.0},
             "peer": {"latency_ms": 40.0, "peak_memory_mb": None, "detections_per_image": 100.0},
             "ratio": 40.0 / 51.0}
    (tmp_path / "cuda_infer_b128_bf16.json").write_text(json.dumps([MACHINE, classify]))
    (tmp_path / "cuda_detect_b4.json").write_text(json.dumps([MACHINE, dense]))
    (tmp_path / "eager_fp32_b8.json").write_text(json.dumps([MACHINE, classify]))  # a CPU file: not in this section
    (tmp_path / "cuda_tests.xml").write_text('<testsuites><testsuite name="pytest" errors="0" failures="1" '
                                             'skipped="3" tests="19" time="80.0"/></testsuites>')
    text = report.cuda_section(tmp_path)
    assert text.startswith("## On a GPU: NVIDIA H200\n") and "torch 2.11.0" in text
    assert "CUDA tests (`pytest -m cuda tests/test_cuda.py`): 15 passed, 1 failed, 3 skipped." in text
    assert ("| pvt_v2_b2 | infer | 128 | bf16 | bf16 | 5529 | 5388 | **1.03x** | 3.1e-03 | 812 / 830 "
            "| `cuda_infer_b128_bf16.json` |") in text
    assert ("| detect | retinanet pvt_v2_b2 | retinanet_resnet50_fpn | 4 | 800x1216 | tf32 | 100 | 51.0 | 40.0 | **0.78x** "
            "| 1500 / n/a | `cuda_detect_b4.json` |") in text
    assert text.count("\n| pvt_v2_b2 |") == 1 and text.endswith("|\n\n")


def test_tests_line_without_a_test_run(report, tmp_path):
    assert report._tests_line(tmp_path) == "CUDA tests: not run"


def test_dense_cpu_section_tables_the_speed_up_and_draws_the_figure(report, tmp_path):
    assert report.dense_cpu_section(tmp_path) == ""  # nothing measured yet: no section

    def result(kind, backbone, ours_ms, plain_ms):
        return {"case": {"task": "detect", "kind": kind, "backbone": backbone, "img_size": [800, 1216], "dtype": "bf16"},
                "machine": {"threads": 2}, "peer_name": f"{kind}_resnet50_fpn",
                "ours": {"median_s": ours_ms / 1000, "latency_ms": ours_ms, "detections_per_image": 100.0},
                "eager_fp32": {"median_s": plain_ms / 1000, "latency_ms": plain_ms},
                "peer": {"median_s": 1.2, "latency_ms": 1200.0, "detections_per_image": 100.0},
                "ratio": 1200.0 / ours_ms, "speedup": plain_ms / ours_ms}

    rows = [result("retinanet", "pvt_v2_b0", 600.0, 1260.0), result("maskrcnn", "pvt_v2_b2", 1500.0, 2250.0)]
    rows[0]["profile"] = {"total_ms": 610.0, "groups": {"convolutions": 0.4, "matrix products": 0.35, "other": 0.25},
                          "ops": [{"op": "aten::mkldnn_convolution", "ms": 244.0, "share": 0.4, "calls": 90}]}
    (tmp_path / "dense_detect_bf16.json").write_text(json.dumps([{"machine": {"threads": 2}}, *rows]))
    text = report.dense_cpu_section(tmp_path)
    assert "| detect | retinanet pvt_v2_b0 | 800x1216 | 100 | 600 | 1260 | **2.10x** | retinanet_resnet50_fpn | 1200 " \
           "| 2.00x | 37.2 (36.4) |" in text
    assert "| maskrcnn pvt_v2_b2 |" in text and "**1.50x**" in text and "45.3 (37.9)" in text
    assert "met by 1 of 2 (speed-ups 1.50x to 2.10x)" in text
    assert ("Where the time of retinanet pvt_v2_b0 in bf16 goes (`--profile`, 610 ms of operator time per call): "
            "convolutions 40%, matrix products 35%, other 25%; top operators: `aten::mkldnn_convolution` 40%.") in text
    assert "--json results/dense_detect_bf16.json" in text and "dense_fcos_bf16" not in text
    assert (tmp_path / "speed_accuracy.png").stat().st_size > 10_000
