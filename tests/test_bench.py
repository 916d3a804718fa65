"""Measurement code: FLOPs against the paper, optimised paths against the reference path.
(Timings themselves are reported by `pvtv2 bench`, never asserted.)"""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ALL_MODELS, randomize_

import pvtv2
from pvtv2.bench import PAPER_GFLOPS, count_flops
from pvtv2.bench.flops import build_on_meta
from pvtv2.registry import REGISTRY
from pvtv2.bench.scaling import attention_matrix_mb, estimate_gmacs, fit_exponent, measure_point
from pvtv2.bench.speed import cpu_step_memory, Case, Setting, format_result, run_case, top1_agreement


@pytest.mark.parametrize("name", ALL_MODELS)
def test_flops_reproduce_the_paper_table(name):
    # Counted on the meta device (shapes only); test_flops checks it counts what a real forward does.
    model = build_on_meta(lambda: pvtv2.create_model(name))
    r = count_flops(model, 224)
    assert round(r["flops"] / 1e9, 1) == PAPER_GFLOPS[name]
    assert r["params"] == sum(p.numel() for p in model.parameters()) == REGISTRY[name].num_params


def test_linear_flops_counted_by_hand():
    """b0 at 224: tokens x in x out multiply-adds for every linear layer (no bias, as mmcv)."""
    model = pvtv2.create_model("pvt_v2_b0")
    counted = count_flops(model, 224)["by_kind"]["linear"]
    # Every other linear layer's count, computed independently from the shapes:
    tokens = [56 * 56, 28 * 28, 14 * 14, 7 * 7]
    kv_tokens = [7 * 7, 7 * 7, 7 * 7, 7 * 7]  # 56/8, 28/4, 14/2, 7/1
    expected = 0
    for n, m, c, hidden, depth in zip(tokens, kv_tokens, (32, 64, 160, 256), (256, 512, 640, 1024), (2, 2, 2, 2)):
        expected += depth * (n * c * c + m * c * 2 * c + n * c * c + n * c * hidden + n * hidden * c)  # q, kv, proj, fc1, fc2
    expected += 256 * 1000  # head
    assert counted == expected


def test_attention_flops_follow_the_official_formula():
    # get_flops.py: sra_flops = 2 * h * w * (h // r) * (w // r) * dim per block
    r = count_flops(pvtv2.create_model("pvt_v2_b2"), 224)["by_kind"]["attention"]
    expected = sum(2 * (224 // s) ** 2 * ((224 // s) // ratio) ** 2 * dim * depth
                   for s, ratio, dim, depth in zip((4, 8, 16, 32), (8, 4, 2, 1), (64, 128, 320, 512), (3, 4, 6, 3)))
    assert r == expected
    li = count_flops(pvtv2.create_model("pvt_v2_b2_li"), 224)["by_kind"]["attention"]
    assert li == sum(2 * (224 // s) ** 2 * 49 * dim * depth for s, dim, depth in zip((4, 8, 16, 32), (64, 128, 320, 512), (3, 4, 6, 3)))


def test_flops_cli_json(cli):
    res = cli("flops", "--model", "pvt_v2_b2_li", "--json", check=True)
    row = json.loads(res.stdout)[0]
    paper = REGISTRY["pvt_v2_b2_li"].paper_gflops
    assert row["model"] == "pvt_v2_b2_li" and row["paper_gflops"] == paper and round(row["gflops"], 1) == paper


def test_scaling_estimates_and_fit():
    assert estimate_gmacs("sra", 224) == pytest.approx(count_flops(pvtv2.create_model("pvt_v2_b2", num_classes=0))["flops"] / 1e9)
    # Full attention grows quadratically in the pixels, linear SRA linearly.
    assert estimate_gmacs("full", 896) / estimate_gmacs("full", 448) > 12
    assert estimate_gmacs("linear", 896) / estimate_gmacs("linear", 448) == pytest.approx(4.0, rel=0.03)
    pts = [{"size": s, "pixels": s * s, "seconds": 3e-9 * (s * s) ** 1.5} for s in (224, 448, 896)]
    assert fit_exponent(pts, "seconds") == pytest.approx(1.5)
    p = measure_point("linear", 64, repeats=1)
    assert p["pixels"] == 4096 and p["seconds"] > 0


def test_bench_case_checks_outputs_against_timm():
    r = run_case(Case(model="pvt_v2_b0", batch_size=2, img_size=64, repeats=2, warmup=1))
    assert r["max_abs_diff"] < 1e-4
    assert r["ours"]["images_per_second"] > 0 and r["timm"]["images_per_second"] > 0
    assert r["speedup_vs_timm"] == pytest.approx(r["ours"]["images_per_second"] / r["timm"]["images_per_second"])
    t = run_case(Case(model="pvt_v2_b0", batch_size=2, img_size=64, mode="train", repeats=1, warmup=1), compare=False)
    assert "timm" not in t and t["ours"]["median_s"] > 0
    assert r["ours"]["peak_memory_mb"] > 0 and r["timm"]["peak_memory_mb"] > 0
    assert all(isinstance(x["page_faults_per_step"], int) and x["page_faults_per_step"] >= 0 for x in (r["ours"], r["timm"]))
    assert "faults" in format_result(r)


def test_profile_groups_the_operator_time():
    from pvtv2.bench.speed import OP_GROUPS, format_profile, profile_step

    model = pvtv2.create_model("pvt_v2_b0").eval()
    x = torch.randn(1, 3, 64, 64)

    def step():
        with torch.inference_mode():
            return model(x)
    p = profile_step(step)
    assert set(p["groups"]) == {name for name, _ in OP_GROUPS} | {"other"}
    assert sum(p["groups"].values()) == pytest.approx(1.0)
    # b0's 8 blocks: 40 linear layers, 8 depth-wise and 4 patch-embedding and 6 reduction convolutions per call
    assert p["groups"]["matrix products"] > 0.05 and p["groups"]["convolutions"] > 0.05
    shares = [op["share"] for op in p["ops"]]
    assert shares == sorted(shares, reverse=True) and len(shares) <= 12 and p["total_ms"] > 0
    assert format_profile(p).startswith(f"profile ({p['total_ms']:.0f} ms of operator time per call): ")


def test_page_fault_counter_sees_fresh_memory():
    from pvtv2.bench.speed import _page_faults

    before = _page_faults()
    torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)  # above glibc's mmap threshold: fresh pages
    assert _page_faults() > before


def test_cpu_peak_memory_grows_with_the_work():
    small = cpu_step_memory(Case(model="pvt_v2_b0", batch_size=1, img_size=128), "ours")
    big = cpu_step_memory(Case(model="pvt_v2_b0", batch_size=16, img_size=128), "ours")
    train = cpu_step_memory(Case(model="pvt_v2_b0", batch_size=16, img_size=128, mode="train"), "ours")
    # Activations scale with the batch; training keeps them for the backward pass.
    assert 0 < small < big / 2 and big < train / 2, (small, big, train)


def test_channels_last_path_matches_reference():
    model = randomize_(pvtv2.create_model("pvt_v2_b1")).eval()
    x = torch.randn(2, 3, 160, 128)
    with torch.no_grad():
        reference = model(x)
        fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert (fast - reference).abs().max() < 1e-4


def test_bf16_path_agrees_on_real_images():
    assert top1_agreement("pvt_v2_b0", Setting("bf16"), img_size=96) >= 0.99


def test_unfused_attention_memory_shows_the_score_matrix():
    # By hand at 224: SRA's largest matrix is stage 1's 3136 queries x 49 keys (1 head); full
    # attention's is stage 1's 3136 x 3136.
    assert attention_matrix_mb("sra", 224) == pytest.approx(3136 * 49 * 4 / 2**20)
    assert attention_matrix_mb("full", 224) == pytest.approx(3136 * 3136 * 4 / 2**20)
    assert attention_matrix_mb("linear", 448) == pytest.approx(12544 * 49 * 4 / 2**20)
    def point(impl):  # in a fresh process, as the study runs it: peak memory is per process
        res = subprocess.run([sys.executable, "-m", "pvtv2.bench.scaling", "full", "224", "1", "cpu", impl],
                             capture_output=True, text=True, check=True)
        return json.loads(res.stdout.splitlines()[-1])

    fused, reference = point("fused"), point("reference")
    assert reference["impl"] == "reference"
    assert reference["peak_memory_mb"] - fused["peak_memory_mb"] > 0.5 * attention_matrix_mb("full", 224)


def test_bench_command_orchestration(tmp_path):
    """`pvtv2 bench` delegates to pvtv2.bench.run: results logged as they come, JSON written."""
    from pvtv2.bench.run import compare_speed

    lines = []
    results = compare_speed(["pvt_v2_b0"], ["infer"], batch_size=1, img_size=32, repeats=1, warmup=0, compare="none",
                            json_path=tmp_path / "r.json", log=lines.append)
    assert len(results) == 1 and lines[0].startswith("pvt_v2_b0") and lines[-1] == f"wrote {tmp_path / 'r.json'}"
    written = json.loads((tmp_path / "r.json").read_text())
    assert "machine" in written[0] and written[1]["case"]["model"] == "pvt_v2_b0"


def test_scaling_study_prints_its_plan_and_estimate_first(tmp_path):
    from pvtv2.bench.scaling import POINT_OVERHEAD_S, estimate_seconds, run_study

    assert estimate_seconds([], 3) == 0.0
    assert estimate_seconds([1.0, 1.0], 1) > 2 * POINT_OVERHEAD_S > estimate_seconds([1.0], 1)
    lines = []
    summary = run_study(tmp_path, sizes=(64, 4096), kinds=("linear",), budget_gmacs=5, repeats=1, log=lines.append)
    plan = next(i for i, line in enumerate(lines) if line.startswith("planned"))
    assert "planned 1 point(s) up to 64 px: about" in lines[plan] and "min on cpu" in lines[plan]
    assert any("4096px  skipped" in line for line in lines[:plan])  # the budget's refusals come with the plan
    assert [p["size"] for p in summary["points"]] == [64] and (tmp_path / "scaling.json").exists()
