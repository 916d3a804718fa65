"""The FLOPs counter: mmcv's rules by hand, the detectors' dummy forward, the papers' dense-task
tables (Semantic FPN, RetinaNet, Mask R-CNN), the ablation, the complexity figure and the CLI.

Everything but the by-hand and real-forward checks counts on the meta device (shapes only), so
even b5 costs about a second."""
import json

import pytest
import torch
from torch import nn

import pvtv2
from pvtv2.ablation import ROWS, TOLERANCE, run_ablation
from pvtv2.bench.flops import RULES, build_on_meta, count_flops, count_task_flops, flops_rows
from pvtv2.registry import REGISTRY


def within(ours, paper, tol=TOLERANCE):
    return abs(ours - paper) <= tol * paper


# -- mmcv's rules, by hand ----------------------------------------------------------------
class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)              # 8x8 out
        self.gn = nn.GroupNorm(2, 8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)                              # -> 4x4
        self.up = nn.Upsample(scale_factor=2)                    # -> 8x8 again
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8, affine=False)
        self.deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)     # -> 16x16
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.pool(self.relu(self.gn(self.conv(x))))
        x = self.bn(self.dw(self.up(x)))
        x = self.relu(self.deconv(x))                             # the same ReLU module, called twice
        return self.fc(x.permute(0, 2, 3, 1))


def test_mmcv_rules_by_hand():
    r = count_flops(Toy(), 8)["by_kind"]
    # conv (8x8 outputs, + bias), depth-wise (no bias), deconv: per 8x8 *input* position, + bias on 16x16
    assert r["conv"] == (64 * 8 * 27 + 64 * 8) + 64 * 8 * 9 + (64 * 2 * 2 * 8 * 4 + 4 * 16 * 16)
    assert r["norm"] == 64 * 8 * 2 + 64 * 8  # affine GroupNorm: 2 per element; BatchNorm without affine: 1
    assert r["act_pool"] == 64 * 8 + 64 * 8 + 64 * 8 + 256 * 4  # ReLU outputs, pool inputs, upsample outputs, ReLU again
    assert r["linear"] == 256 * 4 * 5  # tokens x in x out, no bias


def test_rules_extend_and_subclasses_count_like_their_base():
    class Gate(nn.Module):  # a layer the table does not know: 0 until it gets a rule
        def forward(self, x):
            return x * x.sigmoid()

    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(MyConv(3, 4, 1, bias=False), Gate())
    assert count_flops(model, 4)["by_kind"] == {"conv": 16 * 4 * 3}
    rules = {**RULES, Gate: ("act_pool", lambda m, inputs, out: 2 * out.numel())}
    assert count_flops(model, 4, rules=rules)["by_kind"] == {"conv": 16 * 4 * 3, "act_pool": 2 * 64}


def test_meta_device_counts_what_a_real_forward_counts():
    from pvtv2.detection import create_detector

    for kind in ("retinanet", "fasterrcnn"):
        real = count_flops(create_detector(kind, "pvt_v2_b0", 3).eval(), (128, 96))
        assert real == count_flops(build_on_meta(lambda: create_detector(kind, "pvt_v2_b0", 3)), (128, 96)), kind
    real = count_flops(pvtv2.create_model("pvt_tiny"), 64)
    assert {k: real[k] for k in ("params", "flops", "by_kind")} == {
        k: v for k, v in count_task_flops("classify", "pvt_tiny", (64, 64)).items() if k in ("params", "flops", "by_kind")}


def test_two_stage_heads_run_on_1000_proposals_and_100_masks():
    """mmdet's forward_dummy: the box head on 1000 proposals, the mask head on the first 100."""
    def linear_and_conv(kind):
        r = count_task_flops("detect", "pvt_v2_b0", (256, 256), kind=kind, num_classes=80)["by_kind"]
        return r["linear"], r["conv"]

    lin_f, conv_f = linear_and_conv("fasterrcnn")
    lin_m, conv_m = linear_and_conv("maskrcnn")
    assert lin_m == lin_f  # the same box head; the mask head has no linear layer
    box_head = 1000 * (256 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * 81 + 1024 * 81 * 4)
    backbone = count_task_flops("classify", "pvt_v2_b0", (256, 256), num_classes=0)["by_kind"]["linear"]
    assert lin_f == backbone + box_head
    mask_convs = 100 * (4 * 14 * 14 * 256 * (256 * 9 + 1) + 14 * 14 * 256 * 256 * 4 + 256 * 28 * 28
                        + 28 * 28 * 81 * (256 + 1))
    assert conv_m - conv_f == mask_convs


# -- the papers' tables -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REGISTRY))
def test_semantic_fpn_table(name):
    """PVTv2 paper Table 5 (ADE20K, 512x512), PVTv1 rows included: parameters and GFLOPs within 1%."""
    paper_params, paper_gflops = REGISTRY[name].paper_dense["semantic_fpn"]
    r = count_task_flops("segment", name)
    assert within(r["params_m"], paper_params) and within(r["gflops"], paper_gflops), (r["params_m"], r["gflops"])


@pytest.mark.parametrize("kind", ["retinanet", "maskrcnn"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_detector_table(name, kind):
    """Table 3's parameters (1x COCO detectors) and, where the paper gives them (the ablation's
    RetinaNet rows), GFLOPs at 1280x800."""
    paper_params, paper_gflops = REGISTRY[name].paper_dense[kind]
    r = count_task_flops("detect", name, kind=kind)
    assert r["img_size"] == [1280, 800] and within(r["params_m"], paper_params), r["params_m"]
    if paper_gflops is not None:
        assert within(r["gflops"], paper_gflops), r["gflops"]


def test_every_detector_kind_is_counted():
    """Each kind has its forward_dummy entry; kinds built on ConvGN (conv + GroupNorm + functional
    ReLU) count the ReLU as mmcv's ConvModule does, so ATSS's two 4-conv towers count exactly the
    activations of RetinaNet's (same levels, same widths)."""
    from pvtv2.detection.model import KINDS

    counts = {kind: count_task_flops("detect", "pvt_v2_b2", kind=kind) for kind in KINDS}
    assert counts["atss"]["by_kind"]["act_pool"] == counts["retinanet"]["by_kind"]["act_pool"] == 8 * 256 * (
        160 * 100 + 80 * 50 + 40 * 25 + 20 * 13 + 10 * 7)  # P3-P7 of 1280x800
    # The PVTv2 paper's Table 4 (GFLOPs at 1280x800), B2 / B2-Li: ATSS 258 / 194, GFL 261 / 197,
    # Sparse R-CNN 215 / 151.
    for kind, (b2, b2_li) in {"atss": (258, 194), "gfl": (261, 197), "sparse_rcnn": (215, 151)}.items():
        assert within(counts[kind]["gflops"], b2), kind
        assert within(count_task_flops("detect", "pvt_v2_b2_li", kind=kind)["gflops"], b2_li), kind


@pytest.fixture(scope="module")
def ablation():
    return run_ablation()


def test_ablation_matches_the_paper(ablation):
    assert [r["row"] for r in ablation] == [row.label for row in ROWS]
    for r, row in zip(ablation, ROWS):
        for column, ok in r["within_tolerance"].items():
            assert ok == (column not in row.known_mismatch), (row.label, column, r["relative_difference"])
    # The rows that are published variants count exactly as those variants.
    for r in ablation:
        if r["same_as"]:
            assert r["classifier"]["params"] == REGISTRY[r["same_as"]].num_params
            assert round(r["classifier"]["gflops"], 1) == REGISTRY[r["same_as"]].paper_gflops


def test_ablation_row_two_explained(ablation):
    """The one mismatch: with its position embeddings, row 2's RetinaNet has 35.31M parameters, the
    paper 34.9M; without them it has the paper's count, and its GFLOPs do not depend on them."""
    row = ablation[1]
    assert row["relative_difference"]["retinanet_params"] == pytest.approx(0.0118, abs=0.001)
    without = count_task_flops("detect", "pvt_small", kind="retinanet", patch_embed="overlap", pos_embed=False)
    assert within(without["params_m"], 34.9, 0.001) and without["flops"] == round(row["retinanet"]["gflops"] * 1e9)


# -- the complexity figure and the CLI ------------------------------------------------------
def test_complexity_figure(tmp_path, cli):
    res = cli("flops", "--scaling", "--sizes", "224", "448", "896", "--out", str(tmp_path), check=True)
    study = json.loads((tmp_path / "complexity.json").read_text())
    assert (tmp_path / "complexity.png").read_bytes()[:4] == b"\x89PNG" and "ViT-Small/16" in res.stdout
    models = study["models"]
    assert list(models) == ["PVTv1-Small", "PVTv2-B2", "PVTv2-B2-Li", "ResNet-50", "ViT-Small/16"]
    assert [round(models[m]["gflops"][0], 1) for m in models] == [3.8, 4.0, 3.9, 4.1, 4.6]  # at 224, as published
    exp = {m: v["exponent"] for m, v in models.items()}
    # Linear SRA grows like a convolutional network; full and spatial-reduction attention faster.
    assert exp["PVTv2-B2-Li"] == pytest.approx(1.0, abs=0.03) and exp["ResNet-50"] == pytest.approx(1.0, abs=0.03)
    assert exp["ViT-Small/16"] > exp["PVTv1-Small"] > 1.2


def test_flops_command_tasks(cli):
    res = cli("flops", "--task", "segment", "--model", "pvt_v2_b0", "--json", check=True)
    row = json.loads(res.stdout)[0]
    assert row["img_size"] == [512, 512] and (row["paper_params_m"], row["paper_gflops"]) == (7.6, 25.0)
    assert round(row["gflops"], 1) == 25.0
    res = cli("flops", "--task", "detect", "--kind", "retinanet", "--model", "pvt_small",
              "--img-size", "640", "512", check=True)
    assert "retinanet at 640x512" in res.stdout and "pvt_small" in res.stdout
    res = cli("flops", "--task", "detect", "--kind", "yolo", "--model", "pvt_small")
    assert res.returncode == 2 and "--kind yolo: unknown detector kind; choose one of retinanet" in res.stderr
    res = cli("flops", "--model", "pvt_v9", "--img-size", "224", "20")
    assert res.returncode == 2 and "unknown model" in res.stderr and len(res.stderr.splitlines()) == 1
    # Away from the paper's size there is no paper number to compare with.
    row = flops_rows(["pvt_tiny"], task="segment", img_size=(256, 256))[0]
    assert row["paper_gflops"] is None and row["paper_params_m"] == REGISTRY["pvt_tiny"].paper_dense["semantic_fpn"][0]


def test_ablation_command(cli):
    res = cli("ablation", check=True)
    lines = res.stdout.splitlines()
    assert any(line.startswith("PVTv1-Small (= pvt_small)") and "285.8" in line for line in lines)
    assert any("+ linear SRA (= pvt_v2_b2_li)" in line and "227.4" in line for line in lines)
    assert "[1] position embeddings kept" in res.stdout
