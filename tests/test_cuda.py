"""CUDA: parity with the CPU and timm, the feed-forward's per-device path decision, mixed-precision
training steps, tiny training runs of the three tasks, resume of a CUDA ``last.pt`` on the CPU and
back, export, the bench. Marked ``cuda``: skipped where no GPU is present (CI); run by
benchmarks/run_gpu.sh (each test well under 30 s on one GPU)."""
import json
import math
from pathlib import Path

import pytest
import timm
import torch
from conftest import randomize_

import pvtv2
from pvtv2.data import make_classification_dataset, make_detection_dataset, make_segmentation_dataset
from pvtv2.layers import ConvFFN

pytestmark = pytest.mark.cuda


def _pair(name, **kwargs):
    cpu = randomize_(pvtv2.create_model(name, **kwargs)).eval()
    gpu = randomize_(pvtv2.create_model(name, **kwargs)).eval()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.cuda()


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li", "pvt_v2_b2"])
@pytest.mark.parametrize("size", [(224, 224), (193, 257)])
def test_cuda_matches_cpu_and_timm(name, size):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32 here
    cpu, gpu = _pair(name)
    peer = timm.create_model(name).eval()
    peer.load_state_dict(pvtv2.checkpoint.pvtv2_to_timm(cpu.state_dict()))
    peer.cuda()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = cpu(x)
        ours, theirs = gpu(x.cuda()).cpu(), peer(x.cuda()).cpu()
    scale = ref.abs().max().item()
    assert (ours - ref).abs().max().item() < 1e-4 * scale
    assert (ours - theirs).abs().max().item() < 1e-4 * scale


def test_fast_feed_forward_paths_stay_off_on_cuda():
    ffn = ConvFFN(64, 512).cuda()
    x = torch.randn(64, 56 * 56, 64, device="cuda", requires_grad=True)  # CPU: chunked in training, banded in inference
    assert ffn.train().path(x) == "plain"
    with torch.no_grad():
        assert ffn.eval().path(x) == "plain"
    assert ffn.path(x.detach().cpu().requires_grad_()) == "chunked"
    ffn.chunked = True  # the explicit activation-memory saver, same gradients
    ffn.chunk_min_bytes, ffn.chunk_bytes = 1, 2**20
    small = torch.randn(4, 8 * 8, 64, device="cuda", requires_grad=True)
    grads = []
    for chunked in (False, True):
        ffn.chunked = chunked
        small.grad = None
        ffn.zero_grad()
        ffn(small, 8, 8).square().sum().backward()
        grads.append([small.grad.clone()] + [p.grad.clone() for p in ffn.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_training_step(dtype):
    torch.manual_seed(0)
    model = pvtv2.create_model("pvt_v2_b0", num_classes=10).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(8, 3, 64, 64, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(x), y).item()
    for _ in range(5):
        with torch.autocast("cuda", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        assert torch.isfinite(loss)
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(x), y).item()
    assert after < before


def test_cuda_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from pvtv2.export import export_onnx

    model = randomize_(pvtv2.create_model("pvt_v2_b0", num_classes=5)).cuda().eval()
    path = export_onnx(model, tmp_path / "b0.onnx")
    assert path.exists() and path.stat().st_size > 1_000_000
    assert next(model.parameters()).is_cuda  # the caller's model is left where it was


# -- tiny training runs, resume across devices ------------------------------------------------
# The test recipes of test_classification / test_segmentation / test_detection, on the GPU.
CLASSIFY = dict(model="pvt_v2_b0", img_size=32, batch_size=8, lr=5e-3, warmup_epochs=1, workers=0,
                progress=False, repeated_aug=False, drop_path=0.1)
SEGMENT = dict(model="pvt_v2_b0", batch_size=4, scale=(64, 64), crop=64, ratio_range=(0.75, 1.33), lr=1e-3,
               warmup_iters=2, drop_path=0.0, workers=0, progress=False)
DETECT = dict(model="pvt_v2_b0", batch_size=4, lr=2e-4, clip_grad=10.0, warmup_iters=2, min_size=96, max_size=96,
              drop_path=0.0, workers=0, progress=False)


def _needs_training_dependencies():
    """Installed by `make` from pyproject.toml; a bare GPU machine may lack them (run_gpu.sh installs nothing)."""
    pytest.importorskip("matplotlib")  # curves.png
    pytest.importorskip("safetensors")  # best.safetensors


def _history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _trained_on_the_gpu(run, cfg_cls, **cfg):
    """Train with ``device="cuda"`` and ``amp="auto"``; returns the run's config.json after checking that the
    GPU did the work (its allocator peaked above the model's weights)."""
    _needs_training_dependencies()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    run(cfg_cls(device="cuda", amp="auto", **cfg))
    assert torch.cuda.max_memory_allocated() > 2**20 * 14  # b0's 3.7M float32 weights alone are 14 MiB
    config = json.loads((Path(cfg["output"]) / "config.json").read_text())
    assert config["device"] == "cuda" and config["amp_resolved"] in ("bf16", "fp16")  # auto: mixed precision on CUDA
    return config


def test_classification_trains_on_cuda(tmp_path):
    from pvtv2.classification import TrainConfig, train

    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=8, val_per_class=4, size=40,
                                       seed=1, progress=False)
    _trained_on_the_gpu(train, TrainConfig, data=str(data), output=str(tmp_path / "run"), epochs=2, **CLASSIFY)
    history = _history(tmp_path / "run")
    assert [r["epoch"] for r in history] == [0, 1]
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["val_top1"] <= 100 for r in history)
    model = pvtv2.create_model(pretrained=tmp_path / "run" / "best.safetensors")
    assert model.num_classes == 3 and not next(model.parameters()).is_cuda


def test_segmentation_trains_on_cuda(tmp_path):
    from pvtv2.segmentation import SegTrainConfig, train

    data = make_segmentation_dataset(tmp_path / "d", classes=3, train_images=16, val_images=4, size=48, seed=1,
                                     progress=False)
    _trained_on_the_gpu(train, SegTrainConfig, data=str(data), output=str(tmp_path / "run"), iters=6, eval_interval=3,
                        checkpoint_interval=3, **SEGMENT)
    history = _history(tmp_path / "run")
    assert [r["iter"] for r in history] == [3, 6]
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["mIoU"] <= 100 for r in history)
    assert torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["iter"] == 6


@pytest.mark.parametrize("kind", ["retinanet", "maskrcnn"])
def test_detection_trains_on_cuda(tmp_path, kind):
    pytest.importorskip("pycocotools")  # COCO annotations and evaluation
    from pvtv2.detection import DetTrainConfig, train

    data = make_detection_dataset(tmp_path / "d", classes=3, train_images=12, val_images=6, size=96, seed=0,
                                  progress=False)
    _trained_on_the_gpu(train, DetTrainConfig, kind=kind, data=str(data), output=str(tmp_path / "run"), epochs=1,
                        **DETECT)
    (record,) = _history(tmp_path / "run")
    assert math.isfinite(record["train_loss"]) and -1 <= record["bbox_AP"] <= 1
    if kind == "maskrcnn":
        assert -1 <= record["segm_AP"] <= 1


def test_cuda_last_pt_resumes_on_the_cpu_and_back(tmp_path):
    """A run started on a GPU continues on a CPU-only machine (the state is read to the CPU and moved
    to the model's device), and back on the GPU."""
    from pvtv2.classification import TrainConfig, train

    _needs_training_dependencies()
    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=8, val_per_class=4, size=40,
                                       seed=1, progress=False)
    out = tmp_path / "run"
    recipe = dict(CLASSIFY, data=str(data), output=str(out), amp="none")  # the same precision on both devices
    train(TrainConfig(epochs=1, device="cuda", **recipe))
    on_gpu, first = torch.load(out / "last.pt", map_location="cpu", weights_only=True), _history(out)[0]
    train(TrainConfig(epochs=2, device="cpu", resume="auto", **recipe))
    on_cpu = torch.load(out / "last.pt", weights_only=True)  # no map_location: a CPU run writes CPU tensors
    assert (on_gpu["epoch"], on_cpu["epoch"]) == (0, 1)
    assert not any(t.is_cuda for t in on_cpu["model"].values())
    assert any(not torch.equal(on_gpu["model"][k], on_cpu["model"][k]) for k in on_gpu["model"])  # it trained on
    train(TrainConfig(epochs=3, device="cuda", resume="auto", **recipe))
    history = _history(out)
    assert [r["epoch"] for r in history] == [0, 1, 2] and history[0] == first
    assert all(math.isfinite(r["train_loss"]) for r in history)


# -- the bench --------------------------------------------------------------------------------
def _weights_mib(name="pvt_v2_b0"):
    return sum(p.numel() for p in pvtv2.create_model(name).parameters()) * 4 / 2**20


def test_bench_on_cuda_reports_what_one_step_adds(tmp_path):
    from pvtv2.bench.run import compare_speed

    lines = []
    infer, training = compare_speed(["pvt_v2_b0"], ["infer", "train"], batch_size=8, img_size=64, device="cuda",
                                    repeats=3, warmup=1, json_path=tmp_path / "r.json", log=lines.append)
    weights = _weights_mib()
    for r in (infer, training):
        assert r["max_abs_diff"] < 1e-3 and r["ours"]["images_per_second"] > 0 and r["timm"]["images_per_second"] > 0
    # Both models' weights (2x) stay resident through inference, and in training their gradients and
    # AdamW moments too (8x): a process peak would include them, what one step adds does not.
    assert 0 < infer["ours"]["peak_memory_mb"] < 2 * weights and 0 < infer["timm"]["peak_memory_mb"] < 2 * weights
    assert infer["ours"]["peak_memory_mb"] < training["ours"]["peak_memory_mb"] < 8 * weights
    assert training["timm"]["peak_memory_mb"] < 8 * weights
    written = json.loads((tmp_path / "r.json").read_text())
    assert written[0]["machine"]["gpu"] == torch.cuda.get_device_name(0) and lines[-1] == f"wrote {tmp_path / 'r.json'}"


@pytest.mark.parametrize("task, kind, size", [("detect", "retinanet", (256, 320)), ("segment", "fcn_resnet50", (128, 128))])
def test_dense_bench_on_cuda(task, kind, size):
    from pvtv2.bench.run import compare_dense

    (r,) = compare_dense(task, [kind], ["pvt_v2_b0"], img_size=size, batch_size=2, device="cuda", dtype="bf16",
                         repeats=2, warmup=1, log=lambda line: None)
    assert r["case"]["device"] == "cuda" and r["case"]["img_size"] == size and r["case"]["batch_size"] == 2
    assert r["ours"]["peak_memory_mb"] > 0 and r["peer"]["peak_memory_mb"] > 0
    assert r["ratio"] == pytest.approx(r["peer"]["median_s"] / r["ours"]["median_s"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_bench_on_the_second_gpu_leaves_the_first_alone():
    from pvtv2.bench.speed import Case, run_case

    torch.cuda.synchronize(0)
    torch.cuda.reset_peak_memory_stats(0)
    before = torch.cuda.memory_allocated(0)
    r = run_case(Case(model="pvt_v2_b0", batch_size=8, img_size=64, device="cuda:1", repeats=2, warmup=1))
    assert torch.cuda.max_memory_allocated(0) == before  # timed, measured and run on GPU 1 only
    assert r["ours"]["peak_memory_mb"] > 0 and torch.cuda.current_device() == 0
