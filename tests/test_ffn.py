"""ConvFFN's memory paths (banded inference, chunked training): same numbers as the plain
path, first and second order, taken only where they pay (decided per device)."""
import pytest
import timm
import torch
from conftest import randomize_
from torch._subclasses.fake_tensor import FakeTensorMode

import pvtv2
from pvtv2.layers import ConvFFN
from pvtv2.layers.ffn import fast_paths_pay

# (dwconv, extra_relu): PVTv2's conv FFN, b2_li's extra ReLU, and the plain MLP of the ablation.
KINDS = [(True, False), (True, True), (False, False)]


def _ffn(dwconv=True, extra_relu=False, dim=16, hidden=64, seed=0):
    torch.manual_seed(seed)
    return randomize_(ConvFFN(dim, hidden, dwconv=dwconv, extra_relu=extra_relu), seed)


def _set(ffn, **settings):
    for key, value in settings.items():
        setattr(ffn, key, value)
    return ffn


def _first_order(ffn, x, weights, **settings):
    _set(ffn, **settings)
    ffn.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(x.requires_grad)
    out = ffn(x, 13, 10)
    (out * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in ffn.named_parameters() if p.grad is not None}
    if x.requires_grad:
        grads["input"] = x.grad.clone()
    return out.detach(), grads


def _assert_same(plain, other, tol):
    assert plain.keys() == other.keys()
    for name, ref in plain.items():
        err = (ref - other[name]).abs().max().item() / max(ref.abs().max().item(), 1e-12)
        assert err < tol, f"{name}: relative error {err:.2e}"


def test_fast_paths_are_decided_per_device():
    assert fast_paths_pay(torch.device("cpu"))
    assert not fast_paths_pay(torch.device("cuda"))
    assert not fast_paths_pay(torch.device("cuda", 1))
    ffn = ConvFFN(64, 512)
    big = (64, 56 * 56, 64)  # b2's stage 1 at batch 64: both paths are taken on the CPU
    with FakeTensorMode(allow_non_fake_inputs=True):  # CUDA tensors without a GPU: only their device matters here
        cuda_x = torch.empty(big, device="cuda", requires_grad=True)
        assert ffn.train().path(cuda_x) == "plain"
        with torch.no_grad():
            assert ffn.eval().path(cuda_x) == "plain"
        ffn.chunked = ffn.banded = True  # explicitly asked for: taken on any device
        assert ffn.train().path(cuda_x) == "chunked"
        with torch.no_grad():
            assert ffn.eval().path(cuda_x) == "banded"
    ffn.chunked = ffn.banded = None
    cpu_x = torch.empty(big, requires_grad=True)
    assert ffn.train().path(cpu_x) == "chunked"
    with torch.no_grad():
        assert ffn.eval().path(cpu_x) == "banded"
    ffn.chunked = ffn.banded = False
    assert ffn.train().path(cpu_x) == "plain"
    with torch.no_grad():
        assert ffn.eval().path(cpu_x) == "plain"


def test_settings_are_per_module_and_set_per_model():
    a, b = pvtv2.create_model("pvt_v2_b0"), pvtv2.create_model("pvt_v2_b0")
    a.set_ffn_paths(chunked=False, chunk_bytes=123)
    ffns = [m for m in a.modules() if isinstance(m, ConvFFN)]
    assert len(ffns) == 8 and all(m.chunked is False and m.chunk_bytes == 123 and m.banded is None for m in ffns)
    assert all(m.chunked is None and m.chunk_bytes == ConvFFN.CHUNK_BYTES for m in b.modules() if isinstance(m, ConvFFN))
    with pytest.raises(ValueError, match="chunk_min_bytes must be >= 0"):
        a.set_ffn_paths(chunk_min_bytes=-1)


@pytest.mark.parametrize("dwconv,extra_relu", KINDS[:2])
def test_banded_inference_matches_the_plain_path(dwconv, extra_relu):
    ffn = _ffn(dwconv, extra_relu).eval()
    x = torch.randn(2, 13 * 10, 16)
    with torch.no_grad():
        plain = _set(ffn, banded=False)(x, 13, 10)
        # Bands of one or two rows: halos at every seam.
        _set(ffn, banded=None, band_bytes=2 * 2 * 10 * 64 * 4, band_min_factor=1)
        assert ffn.path(x) == "banded"
        banded = ffn(x, 13, 10)
    assert (plain - banded).abs().max().item() < 1e-5
    assert ffn.path(x.requires_grad_()) == "plain"  # gradients always take the plain path


def test_export_sees_the_plain_path():
    """torch.export (what ONNX export runs) must not bake the bands of the export size into the graph."""

    class Tokens(torch.nn.Module):
        def __init__(self, ffn):
            super().__init__()
            self.ffn = ffn

        def forward(self, x):
            return self.ffn(x, 13, 10)

    ffn = _set(_ffn().eval(), banded=None, band_bytes=2 * 2 * 10 * 64 * 4, band_min_factor=1)
    x = torch.randn(2, 13 * 10, 16)
    with torch.no_grad():
        assert ffn.path(x) == "banded"  # in eager mode: 3 bands of rows
        program = torch.export.export(Tokens(ffn), (x,), strict=False)
        assert (program.module()(x) - ffn(x, 13, 10)).abs().max().item() < 1e-5
    convs = [str(n.target) for n in program.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert convs == ["aten.conv2d.default"]  # one depth-wise conv over the whole map


@pytest.mark.parametrize("dwconv,extra_relu", KINDS)
def test_chunked_training_matches_the_plain_path(dwconv, extra_relu):
    ffn = _ffn(dwconv, extra_relu).train()
    x = torch.randn(3, 13 * 10, 16, requires_grad=True)
    weights = torch.randn(3, 13 * 10, 16)
    out, plain = _first_order(ffn, x, weights, chunked=False)
    hidden_per_sample = 13 * 10 * 64 * 4
    for chunk_bytes in (1, 2 * hidden_per_sample):  # one sample per chunk; then uneven chunks of 2 + 1
        _set(ffn, chunked=None, chunk_min_bytes=1, chunk_bytes=chunk_bytes)
        assert ffn.path(x) == "chunked"
        got, chunked = _first_order(ffn, x, weights)
        assert (out - got).abs().max().item() < 1e-5
        _assert_same(plain, chunked, 1e-5)
    # Frozen weights get no gradient; the others, and the input's, are unchanged.
    for p in ffn.parameters():
        if p.dim() == 1:
            p.requires_grad_(False)
    _, plain = _first_order(ffn, x, weights, chunked=False)
    _, chunked = _first_order(ffn, x, weights, chunked=None)
    assert "input" in chunked and not any(n.endswith("bias") for n in chunked)
    _assert_same(plain, chunked, 1e-5)


def test_chunked_path_recomputes_under_the_forward_autocast():
    ffn = _ffn().train()
    x = torch.randn(4, 13 * 10, 16, requires_grad=True)
    results = []
    for chunked in (False, None):  # one chunk: the very same kernels as the plain path
        _set(ffn, chunked=chunked, chunk_min_bytes=1, chunk_bytes=2**40)
        x.grad = None
        ffn.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ffn(x, 13, 10)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        results.append([x.grad.clone()] + [p.grad.clone() for p in ffn.parameters()])
    for plain, chunked in zip(*results):
        assert torch.equal(plain, chunked)  # a float32 recomputation would differ


def test_chunked_path_steps_aside_for_torch_func():
    from torch.func import functional_call, grad

    ffn = _set(_ffn(dim=8, hidden=32).train(), chunk_min_bytes=1)
    x = torch.randn(3, 13 * 10, 8)
    params = dict(ffn.named_parameters())
    got = grad(lambda p: functional_call(ffn, p, (x, 13, 10)).square().sum())(params)
    ffn(x, 13, 10).square().sum().backward()  # the chunked path
    for name, p in params.items():
        assert torch.allclose(got[name], p.grad, rtol=1e-4, atol=1e-6), name


def test_torch_compile_trains_the_feed_forward():
    """Under the compiler the feed-forward takes its plain path (one graph, no chunking loop) and
    gives the gradients of the eager chunked path. (Dynamic-shape training compiles hit an inductor
    stride-order error on this torch, with or without our fast paths, so shapes are static here.)"""
    ffn = _set(_ffn(dim=8, hidden=32).train(), chunk_min_bytes=1)  # eager chunks everything
    torch._dynamo.reset()
    compiled = torch.compile(ffn, fullgraph=True, dynamic=False)
    x = torch.randn(3, 5 * 6, 8)
    assert ffn.path(x) == "chunked"
    grads = []
    for fn in (ffn, compiled):
        ffn.zero_grad()
        out = fn(x, 5, 6)
        out.square().sum().backward()
        grads.append([out.detach()] + [p.grad.clone() for p in ffn.parameters()])
    for eager, comp in zip(*grads):
        assert torch.allclose(eager, comp, rtol=1e-4, atol=1e-5)


def _gradient_penalty(model, x, forward):
    """Second-order gradients of the parameters through an input-gradient penalty, with a
    first-order term kept in the loss (``penalty + 0 * x.sum()``), as in WGAN-GP / R1."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    (gx,) = torch.autograd.grad(forward(x).square().sum(), x, create_graph=True)
    (gx.square().sum() + 0 * x.sum()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dwconv,extra_relu", KINDS[:2])
def test_chunked_path_double_backward_matches_the_plain_path(dwconv, extra_relu):
    ffn = _ffn(dwconv, extra_relu).train()
    x = torch.randn(3, 13 * 10, 16)
    plain = _gradient_penalty(_set(ffn, chunked=False), x, lambda t: ffn(t, 13, 10))
    chunked = _gradient_penalty(_set(ffn, chunked=None, chunk_min_bytes=1, chunk_bytes=1), x, lambda t: ffn(t, 13, 10))
    assert len(plain) == len(list(ffn.parameters()))
    _assert_same(plain, chunked, 1e-5)


def test_gradient_penalty_through_the_model_matches_timm():
    """The issue's case at test size: pvt_v2_b0 in training mode with the chunked path taken
    in every block, against the plain path and timm's model with the same weights."""
    ours = randomize_(pvtv2.create_model("pvt_v2_b0", num_classes=5)).train()
    ours.set_fused_attention(False)  # PyTorch's fused CPU attention has no second derivative
    peer = timm.create_model("pvt_v2_b0", num_classes=5).train()
    peer.load_state_dict(pvtv2.checkpoint.pvtv2_to_timm(ours.state_dict()))
    for m in peer.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    x = torch.randn(2, 3, 64, 64)
    ours.set_ffn_paths(chunked=None, chunk_min_bytes=1, chunk_bytes=1)
    assert ours.block1[0].mlp.path(torch.randn(2, 256, 32, requires_grad=True)) == "chunked"
    chunked = _gradient_penalty(ours, x, ours)
    ours.set_ffn_paths(chunked=False)
    plain = _gradient_penalty(ours, x, ours)
    timm_grads = _gradient_penalty(peer, x, peer)
    _assert_same(plain, chunked, 1e-4)
    mapped = pvtv2.checkpoint.timm_to_pvtv2(timm_grads)
    _assert_same(plain, {k: mapped[k] for k in plain}, 1e-4)
