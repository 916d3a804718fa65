"""oneDNN kernels for float32 CPU inference (pvtv2.layers.onednn): taken where they pay, never where
they could change behaviour, and the same numbers as PyTorch's own kernels."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import pvtv2
from pvtv2.layers import onednn
from pvtv2.layers.onednn import Linear, depthwise_conv_gelu, onednn_pays

pytestmark = pytest.mark.skipif(not onednn.AVAILABLE, reason="this PyTorch build has no oneDNN")


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_model_gives_the_same_outputs_with_and_without_onednn():
    torch.manual_seed(0)
    model = pvtv2.create_model("pvt_v2_b0").eval()
    model.set_ffn_paths(band_bytes=2**17)  # the banded feed-forward too (small bands)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        model.set_onednn(False)
        plain = model(x)
        assert not any(k.startswith("mkldnn::") for k in _ops(lambda: model(x)))
        model.set_onednn(True)  # True: also on a non-x86 CPU
        fast = model(x)
        ops = _ops(lambda: model(x))
    assert {"mkldnn::_linear_pointwise", "mkldnn::_convolution_pointwise"} <= ops
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=2e-5)


def test_the_kernels_are_taken_only_in_eager_cpu_inference():
    x, w = torch.randn(4, 8), torch.randn(16, 8)
    with torch.no_grad():
        assert onednn_pays(x, w, True)
        assert not onednn_pays(x, w, False)  # switched off
        assert onednn_pays(x.bfloat16(), w.bfloat16(), True)  # a model cast to bf16 (weights held in bf16)
        assert not onednn_pays(x.bfloat16(), w, True) and not onednn_pays(x.half(), w.half(), True)  # else PyTorch's
        assert not onednn_pays(x.to("meta"), w.to("meta"), True)  # not a CPU tensor
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not onednn_pays(x, w, True)  # autocast casts F.linear's inputs; oneDNN's op would run fp32
    assert onednn_pays(x, w, True)  # grad mode, but nothing to differentiate
    assert onednn_pays(x, w, None) == onednn._X86  # the default: x86 CPUs
    assert not onednn_pays(x, w.requires_grad_(), True)  # training: autograd needs PyTorch's ops


def test_training_tracing_and_hooks_see_the_plain_ops():
    torch.manual_seed(0)
    layer = Linear(8, 16)
    layer.onednn = True
    x = torch.randn(4, 8)
    assert "mkldnn::_linear_pointwise" not in _ops(lambda: layer(x).sum().backward())
    assert layer.weight.grad is not None
    with torch.no_grad():
        traced = torch.jit.trace(layer, x)
    assert "mkldnn" not in str(traced.graph) and "linear" in str(traced.graph)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    m = torch.randn(1, 4, 6, 6)
    seen = []
    conv.register_forward_hook(lambda *args: seen.append(1))
    with torch.no_grad():
        out = depthwise_conv_gelu(m, conv, True)  # a hooked conv runs as a module (FLOPs counters)
    assert seen == [1]
    torch.testing.assert_close(out, torch.nn.functional.gelu(conv(m)))


def test_set_onednn_rejects_other_values():
    model = pvtv2.create_model("pvt_v2_b0")
    with pytest.raises(ValueError, match="None, True or False"):
        model.set_onednn("yes")
    model.set_onednn(False)
    assert {m.onednn for m in model.modules() if hasattr(m, "onednn")} == {False}


def test_a_model_cast_to_bfloat16_takes_the_fused_kernels_in_bfloat16():
    torch.manual_seed(0)
    model = pvtv2.create_model("pvt_v2_b0").eval().to(torch.bfloat16)
    x = torch.randn(2, 3, 64, 64).to(torch.bfloat16)
    with torch.no_grad():
        model.set_onednn(False)
        plain = model(x).float()
        model.set_onednn(True)
        ops = _ops(lambda: model(x))
        fast = model(x)
    assert fast.dtype == torch.bfloat16 and {"mkldnn::_linear_pointwise", "mkldnn::_convolution_pointwise"} <= ops
    assert (fast.float() - plain).abs().max() < 0.05 * plain.abs().max()  # bf16 rounding, in other places


def test_detector_necks_take_channels_last_maps_on_the_cpu_with_the_same_numbers():
    from pvtv2.detection import create_detector

    assert onednn.channels_last_pays(torch.zeros(1)) and not onednn.channels_last_pays(torch.zeros(1, device="meta"))
    assert not onednn.channels_last_pays(torch.zeros(1), False)
    neck = create_detector("retinanet", "pvt_v2_b0", 3).backbone.eval()  # PVTv2 stages + FPN + P6/P7
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        fast = neck(x)
        neck.channels_last = False
        plain = neck(x)
    assert list(fast) == list(plain) == ["0", "1", "2", "p6", "p7"]
    for name in fast:
        assert fast[name].is_contiguous(memory_format=torch.channels_last)
        assert not plain[name].is_contiguous(memory_format=torch.channels_last) or plain[name].shape[-1] == 1
        assert (fast[name] - plain[name]).abs().max() < 1e-4


def test_detectors_reading_maps_through_roi_align_keep_the_default_layout():
    from pvtv2.detection.model import KINDS, ROI_KINDS, _with_fpn

    body = pvtv2.create_model("pvt_v2_b0", features_only=True)
    for kind in KINDS:  # the neck every detector kind is built (and loaded) with
        assert _with_fpn(body, kind).channels_last is (False if kind in ROI_KINDS else None), kind
