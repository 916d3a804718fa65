"""`pvtv2 bench` on a chosen device and `--task detect|segment`: what can be checked without a GPU
(the measurements on CUDA themselves are in test_cuda.py)."""
import ast
import json
from pathlib import Path

import pytest

import pvtv2
from pvtv2.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda:99"], "--device cuda:99: "),  # no CUDA here, or not 100 GPUs: refused before measuring
    (["--task", "segment", "--device", "cuda:99"], "--device cuda:99: "),
    (["--task", "detect", "--kind", "retinanet", "yolo"], "no torchvision peer for detector kind 'yolo'"),
    (["--task", "segment", "--kind", "unet"], "segmentation peer must be one of fcn_resnet50, deeplabv3_resnet50"),
    (["--task", "detect", "--mode", "train", "--compile"], "--mode train, --compile: only with --task classify"),
    (["--kind", "retinanet"], "--kind: only with --task detect or segment"),
    (["--img-size", "64", "96"], "--img-size 64 96: the classification bench runs square images"),
    (["--task", "segment", "--img-size", "16"], "--img-size 16: must be at least 32"),
    (["--compare", "onnxruntime", "--mode", "infer", "train"], "--compare onnxruntime: CPU inference only"),
    (["--compare", "onnxruntime", "--dtype", "bf16"], "the exported model runs in float32"),
    (["--task", "detect", "--compare", "onnxruntime"], "--compare onnxruntime: only with --task classify"),
    (["--task", "segment", "--ceiling"], "--ceiling: only with --task classify"),
    (["--dtype", "bf16-weights", "--mode", "train"], "--dtype bf16-weights: inference only"),
    (["--task", "detect", "--dtype", "bf16-weights"], "--dtype bf16-weights: only with --task classify"),
])
def test_bench_flags_are_one_line_errors(capsys, argv, message):
    code, out, err = run(capsys, "bench", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_dense_bench_from_the_command_line(capsys, tmp_path):
    path = tmp_path / "seg.json"
    code, out, err = run(capsys, "bench", "--task", "segment", "--img-size", 64, "--batch-size", 2, "--repeats", 1,
                         "--warmup", 0, "--json", path)
    assert code == 0, err
    machine, result = json.loads(path.read_text())
    assert "platform" in machine["machine"] and result["peer_name"] == "fcn_resnet50"  # the default peer
    assert result["case"]["img_size"] == [64, 64] and result["case"]["batch_size"] == 2  # one side: square
    assert result["ours"]["images_per_second"] == pytest.approx(2 / result["ours"]["median_s"])
    assert result["ours"]["peak_memory_mb"] is None  # measured on CUDA only
    assert out.splitlines() == [f"segment fcn_resnet50 pvt_v2_b0 2x 64x64 fp32 on cpu: ours "
                                f"{result['ours']['latency_ms']:.0f} ms, fcn_resnet50 "
                                f"{result['peer']['latency_ms']:.0f} ms, {result['ratio']:.2f}x; {result['speedup']:.2f}x "
                                f"ours in plain eager fp32 ({result['eager_fp32']['latency_ms']:.0f} ms)", f"wrote {path}"]


def test_dense_bench_defaults_to_the_test_scales():
    from pvtv2.bench.dense import TEST_SIZES, DenseCase, check_case

    assert TEST_SIZES == {"detect": (800, 1216), "segment": (512, 512)}
    assert DenseCase().img_size is None and DenseCase().batch_size == 1
    check_case(DenseCase(task="detect", kind="maskrcnn"))  # every kind with a peer passes
    with pytest.raises(ValueError, match="task must be 'detect' or 'segment'"):
        check_case(DenseCase(task="classify"))


def _module_level_imports(tree):
    """Import statements run when the module is imported (not those inside functions or classes)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]


def test_no_module_imports_pycocotools_when_imported():
    """The GPU machine has no pycocotools: the models, the CLI and the benches import without it;
    only reading COCO data, writing masks and evaluating import it, where they use it."""
    offenders = []
    for path in sorted(Path(pvtv2.__file__).parent.rglob("*.py")):
        for node in _module_level_imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] == "pycocotools" for n in names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


@pytest.mark.slow  # two fresh measuring processes (torch + timm start-up each)
def test_bench_reports_the_memory_gradient_checkpointing_saves():
    """The CLI's path (run_case, each peak measured in a fresh process by cpu_step_memory): b0's
    checkpointed training step peaks clearly below the plain one, and the saving is reported."""
    from pvtv2.bench.speed import CHECKPOINTED, Case, format_result, run_case

    r = run_case(Case(model="pvt_v2_b0", batch_size=8, img_size=64, mode="train", repeats=1, warmup=0,
                      grad_checkpointing=True), compare=False)
    plain, checkpointed = r["ours"]["peak_memory_mb"], r[CHECKPOINTED]["peak_memory_mb"]
    assert 0 < checkpointed < 0.8 * plain  # about 19 MiB against 38 MiB here
    assert r["memory_saved_mb"] == pytest.approx(plain - checkpointed)
    assert r["memory_saved_pct"] == pytest.approx(100 * (plain - checkpointed) / plain)
    assert r[CHECKPOINTED]["images_per_second"] > 0
    assert format_result(r).endswith(f", saves {plain - checkpointed:.0f} MiB ({r['memory_saved_pct']:.0f}%)")
    with pytest.raises(ValueError, match="grad_checkpointing: only in train mode"):
        run_case(Case(grad_checkpointing=True))


@pytest.mark.parametrize("mode", [["infer"], ["infer", "train"]])
def test_bench_grad_checkpointing_only_in_train_mode(capsys, mode):
    code, out, err = run(capsys, "bench", "--mode", *mode, "--grad-checkpointing")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"--grad-checkpointing: only with --mode train (it saves training memory), not --mode {' '.join(mode)}" in err


@pytest.mark.slow  # exports the model to ONNX (about 5 s)
def test_onnxruntime_peer_and_the_matmul_ceiling(capsys, tmp_path):
    path = tmp_path / "ort.json"
    code, out, err = run(capsys, "bench", "--model", "pvt_v2_b0", "--compare", "onnxruntime", "--ceiling", "--batch-size", 2,
                         "--img-size", 64, "--repeats", 1, "--warmup", 0, "--json", path)
    assert code == 0, err
    machine, r = json.loads(path.read_text())
    assert r["peer_name"] == "onnxruntime" and r["max_abs_diff"] < 1e-4  # our own export computes our numbers
    assert r["speedup_vs_onnxruntime"] == pytest.approx(r["ours"]["images_per_second"] / r["onnxruntime"]["images_per_second"])
    roof = r["ceiling_gflops"]
    assert roof["ceiling"] == max(roof["torch_mm"], roof.get("onednn", 0)) > 0
    from pvtv2.bench.flops import build_on_meta, count_flops

    gmacs = count_flops(build_on_meta(lambda: pvtv2.create_model("pvt_v2_b0")), 64)["flops"] / 1e9
    for side in ("ours", "onnxruntime"):
        assert r[side]["fraction_of_ceiling"] == pytest.approx(2 * gmacs * r[side]["images_per_second"] / roof["ceiling"])
    assert "matrix-product ceiling (fp32" in out and "of the" in out and "ours/onnxruntime" in out
