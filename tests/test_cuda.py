"""CUDA: parity with the CPU and timm, the feed-forward's per-device path decision, mixed-precision
training steps. Marked ``cuda``: skipped where no GPU is present (CI); run by benchmarks/run_gpu.sh."""
import pytest
import timm
import torch
from conftest import randomize_

import pvtv2
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
