"""The PVTv2 family: shapes, parameter counts, peers' numerics, ablation switches, input checks."""
import math

import pytest
import timm
import torch
from conftest import ALL_MODELS, randomize_
from torch import nn

import pvtv2
from pvtv2.layers import ConvFFN, LinearSRA, OverlapPatchEmbed, SpatialReductionAttention
from pvtv2.registry import REGISTRY

def test_list_models():
    assert pvtv2.list_models() == [name for name in ALL_MODELS if REGISTRY[name].family == "pvt_v2"]


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="pvt_v2_b0.*pvt_v2_b5"):
        pvtv2.create_model("pvt_v2_b9")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = pvtv2.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == REGISTRY[name].num_params


# The variants share every line of code: b0 (SRA) and b2_li (linear SRA) cover both attention
# kinds; the others differ only in widths and depths, which test_parameter_count checks.
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])  # PVTv1's classifier: tests/test_pvt_v1.py
def test_shapes_and_backward(name):
    model = pvtv2.create_model(name, num_classes=11)
    dims = model.embed_dims
    for h, w in [(224, 224), (193, 257), (32, 32)]:
        x = torch.randn(2, 3, h, w, requires_grad=(h, w) == (193, 257))
        feats = model.forward_features(x)
        assert [tuple(f.shape) for f in feats] == [
            (2, dims[i], math.ceil(h / s), math.ceil(w / s)) for i, s in enumerate((4, 8, 16, 32))
        ]
        logits = model.forward_head(feats)
        assert logits.shape == (2, 11)
        if x.requires_grad:
            logits.square().mean().backward()
            grads = [p.grad for p in model.parameters()]
            assert all(g is not None for g in grads), "some parameter got no gradient"
            assert all(torch.isfinite(g).all() for g in grads)
            assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# b0, b2 and b2_li: both attention kinds and a deep, wide variant; timm has no PVTv1 (tests/test_pvt_v1.py
# checks it against transformers).
@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2", "pvt_v2_b2_li"])
def test_matches_timm(name):
    """Same weights, same logits as timm's pvt_v2_* (float32)."""
    ours = randomize_(pvtv2.create_model(name)).eval()
    peer = timm.create_model(name).eval()
    peer.load_state_dict(pvtv2.checkpoint.pvtv2_to_timm(ours.state_dict()))
    with torch.no_grad():
        for size in [(224, 224), (193, 257)]:
            x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
            a, b = ours(x), peer(x)
            assert b.abs().max() > 0.5  # the comparison means something
            assert (a - b).abs().max().item() < 1e-4, size


def test_num_classes_zero_gives_pooled_features():
    model = pvtv2.create_model("pvt_v2_b0", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 256)
        torch.testing.assert_close(out, model.forward_features(x)[-1].mean(dim=(2, 3)))
    assert isinstance(model.head, nn.Identity)


def test_no_batch_leakage():
    model = randomize_(pvtv2.create_model("pvt_v2_b0")).eval()
    batch = torch.randn(8, 3, 96, 128)
    with torch.no_grad():
        full = model(batch)
        single = torch.cat([model(batch[i : i + 1]) for i in range(8)])
    assert (full - single).abs().max().item() < 1e-5
    # And the batch members really differ, so equality is not trivial.
    assert (full[0] - full[1]).abs().max() > 1e-2


def test_fused_and_reference_attention_agree():
    model = randomize_(pvtv2.create_model("pvt_v2_b1")).eval()
    x = torch.randn(2, 3, 160, 192)
    with torch.no_grad():
        fused = model(x)
        model.set_fused_attention(False)
        reference = model(x)
    assert (fused - reference).abs().max().item() < 1e-4


def test_chunked_bf16_attention_is_attention_and_taken_only_where_it_pays():
    from pvtv2.layers.attention import chunk_rows, chunked_attention, chunked_bf16_pays

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, size, 16, generator=g, dtype=torch.float64) for size in (4000, 300, 300))
    assert 4000 // chunk_rows(q, k) >= 2  # two full chunks and a partial one, at least
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(chunked_attention(q, k, v, 16 ** -0.5), expected, atol=1e-12)
    assert chunked_bf16_pays(q.bfloat16(), k.bfloat16(), training=False)
    assert not chunked_bf16_pays(q.bfloat16(), k.bfloat16(), training=True)  # training keeps the fused kernel
    assert not chunked_bf16_pays(q.float(), k.float(), training=False)  # float32: the fused kernel is faster
    assert not chunked_bf16_pays(q.bfloat16().to("meta"), k.bfloat16().to("meta"), training=False)  # not a CPU
    wanted = q.bfloat16().requires_grad_()
    assert not chunked_bf16_pays(wanted, k.bfloat16(), training=False)  # gradients wanted (Grad-CAM...): fused
    with torch.no_grad():
        assert chunked_bf16_pays(wanted, k.bfloat16(), training=False)
    # In a block at a detection input's stage-1 size (9216 queries, 576 keys): bf16 against float32.
    attn = SpatialReductionAttention(32, 1, sr_ratio=4).eval()
    x = torch.randn(1, 96 * 96, 32)
    with torch.inference_mode():
        ref = attn(x, 96, 96)
        low = attn.bfloat16()(x.bfloat16(), 96, 96)
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()
    # An eval-mode bf16 model with gradients on (saliency maps) takes the fused kernel and back-propagates.
    model = pvtv2.create_model("pvt_v2_b0").eval().bfloat16()
    image = torch.randn(1, 3, 64, 64, dtype=torch.bfloat16, requires_grad=True)
    model(image).max().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_drop_path_grows_linearly():
    model = pvtv2.create_model("pvt_v2_b2", drop_path_rate=0.3)
    rates = [blk.drop_path.drop_prob if hasattr(blk.drop_path, "drop_prob") else 0.0
             for _, blocks, _ in model.stages() for blk in blocks]
    assert len(rates) == 16
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 16))


def test_official_initialisation():
    torch.manual_seed(0)
    model = pvtv2.create_model("pvt_v2_b2")
    fc1 = model.block1[0].mlp.fc1
    assert abs(fc1.weight.std().item() - 0.02) < 0.002 and fc1.bias.abs().max() == 0
    # timm's trunc_normal_ truncates at +-2 absolute (not std units), so at std 0.02 it is
    # effectively a plain normal, as in the official code.
    sr = model.block1[0].attn.sr  # 8x8 conv, 64 -> 64: std sqrt(2 / (8*8*64))
    assert abs(sr.weight.std().item() - math.sqrt(2 / (64 * 64))) < 0.1 * math.sqrt(2 / (64 * 64))
    dw = model.block1[0].mlp.dwconv.dwconv  # depth-wise: fan_out = 3*3*C/C = 9
    assert abs(dw.weight.std().item() - math.sqrt(2 / 9)) < 0.05
    assert torch.equal(model.norm1.weight, torch.ones(64))


def test_layer_norm_eps_follow_official():
    model = pvtv2.create_model("pvt_v2_b0")
    assert model.patch_embed1.norm.eps == 1e-5 and model.block1[0].attn.norm.eps == 1e-5
    assert model.block1[0].norm1.eps == 1e-6 and model.norm4.eps == 1e-6


# -- ablation switches ------------------------------------------------------------------
def test_default_is_official_pvtv2():
    model = pvtv2.create_model("pvt_v2_b2")
    assert model.patch_embed1.proj.kernel_size == (7, 7) and model.patch_embed1.proj.padding == (3, 3)
    assert model.patch_embed2.proj.kernel_size == (3, 3) and model.patch_embed2.proj.stride == (2, 2)
    assert model.patch_embed2.proj.padding == (1, 1)
    attn = [blocks[0].attn for _, blocks, _ in model.stages()]
    assert [a.sr_ratio for a in attn] == [8, 4, 2, 1]
    assert attn[0].sr.kernel_size == (8, 8) and not hasattr(attn[3], "sr")
    assert model.block1[0].mlp.dwconv is not None and isinstance(model.block1[0].mlp.relu, nn.Identity)


def test_linear_variant_modules():
    model = pvtv2.create_model("pvt_v2_b2_li")
    for _, blocks, _ in model.stages():
        attn = blocks[0].attn
        assert isinstance(attn, LinearSRA)
        assert attn.pool.output_size == 7 and attn.sr.kernel_size == (1, 1) and isinstance(attn.act, nn.GELU)
        assert isinstance(blocks[0].mlp.relu, nn.ReLU)


def test_ablation_switches_build_intended_modules():
    v1 = pvtv2.create_model("pvt_v2_b0", patch_embed="plain", conv_ffn=False, attention="full")
    assert v1.patch_embed1.proj.kernel_size == (4, 4) and v1.patch_embed1.proj.padding == (0, 0)
    assert v1.patch_embed3.proj.kernel_size == (2, 2)
    for _, blocks, _ in v1.stages():
        assert blocks[0].mlp.dwconv is None
        assert type(blocks[0].attn) is SpatialReductionAttention and blocks[0].attn.sr_ratio == 1
    # Plain patches round sizes up too, like the overlapping ones.
    feats = v1.forward_features(torch.randn(1, 3, 193, 257))
    assert [f.shape[-2:] for f in feats] == [(49, 65), (25, 33), (13, 17), (7, 9)]
    linear = pvtv2.create_model("pvt_v2_b0", attention="linear")
    assert isinstance(linear.block3[1].attn, LinearSRA)
    # Each switch removes exactly the parameters of the design it turns off.
    base = sum(p.numel() for p in pvtv2.create_model("pvt_v2_b0").parameters())
    no_dw = sum(p.numel() for p in pvtv2.create_model("pvt_v2_b0", conv_ffn=False).parameters())
    dw = sum(m.dwconv.dwconv.weight.numel() + m.dwconv.dwconv.bias.numel()
             for m in pvtv2.create_model("pvt_v2_b0").modules() if isinstance(m, ConvFFN))
    assert base - no_dw == dw


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="attention must be one of"):
        pvtv2.create_model("pvt_v2_b0", attention="window")
    with pytest.raises(ValueError, match="patch_embed must be one of"):
        pvtv2.create_model("pvt_v2_b0", patch_embed="hex")
    with pytest.raises(ValueError, match="4 entries"):
        pvtv2.create_model("pvt_v2_b0", depths=(2, 2, 2))


def test_patch_embed_is_overlapping_with_ceil_sizes():
    pe = OverlapPatchEmbed(3, 8, stride=4)
    tokens, H, W = pe(torch.randn(1, 3, 33, 35))
    assert (H, W) == (9, 9) and tokens.shape == (1, 81, 8)


# -- bad inputs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, message",
    [
        (torch.randn(1, 3, 31, 64), r"at least 32x32.*31x64"),
        (torch.randn(1, 1, 64, 64), r"expected 3 input channels"),
        (torch.randn(3, 64, 64), r"4-D tensor.*unsqueeze"),
        (torch.randn(1, 1, 3, 64, 64), r"4-D tensor"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), r"floating-point.*uint8"),
        (torch.randint(0, 255, (1, 3, 64, 64)), r"floating-point.*int64"),
    ],
)
def test_bad_inputs_raise_value_error(x, message):
    model = pvtv2.create_model("pvt_v2_b0")
    with pytest.raises(ValueError, match=message):
        model(x)


def test_non_tensor_input():
    with pytest.raises(ValueError, match="torch.Tensor"):
        pvtv2.create_model("pvt_v2_b0")([[1.0]])


@pytest.mark.parametrize("size", [(56, 56), (49, 65), (8, 8), (3, 5), (100, 37)])
def test_pool_matrix_equals_adaptive_avg_pool(size):
    """The export path of linear SRA pools with matrices; it must equal AdaptiveAvgPool2d."""
    from pvtv2.layers.attention import adaptive_avg_pool_matrix

    x = torch.randn(2, *size, 16)
    expected = nn.functional.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 7).permute(0, 2, 3, 1)
    ph, pw = adaptive_avg_pool_matrix(size[0], 7, x), adaptive_avg_pool_matrix(size[1], 7, x)
    assert (torch.einsum("ih,bhwc,jw->bijc", ph, x, pw) - expected).abs().max() < 1e-5
