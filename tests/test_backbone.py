"""PVTv2 as a backbone in other people's code: out_indices, frozen stages, gradient
checkpointing, timm's features_only / forward_intermediates conventions (checked against timm)."""
import pytest
import timm
import torch
from conftest import randomize_
from timm.models._features import FeatureListNet

import pvtv2


def _with_timm_peer(name="pvt_v2_b0", **kwargs):
    ours = randomize_(pvtv2.create_model(name, **kwargs)).eval()
    peer = timm.create_model(name).eval()
    full = {k: v for k, v in ours.state_dict().items() if not k.startswith("head")}
    missing, _ = peer.load_state_dict(pvtv2.checkpoint.pvtv2_to_timm(full), strict=False)
    assert set(missing) <= {"head.weight", "head.bias"}
    return ours, peer


def test_features_only_matches_timm():
    ours, peer = _with_timm_peer(features_only=True, out_indices=(1, 2, 3))
    peer_features = FeatureListNet(peer, out_indices=(1, 2, 3), flatten_sequential=True).eval()
    assert ours.feature_info.channels() == peer_features.feature_info.channels() == [64, 160, 256]
    assert ours.feature_info.reduction() == peer_features.feature_info.reduction() == [8, 16, 32]
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        got, want = ours(x), peer_features(x)
    assert len(got) == len(want) == 3
    for a, b in zip(got, want):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("indices", [None, 2, [0, -1]])
def test_forward_intermediates_matches_timm(indices):
    ours, peer = _with_timm_peer()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        final, inter = ours.forward_intermediates(x, indices)
        peer_final, peer_inter = peer.forward_intermediates(x, indices)
        only = ours.forward_intermediates(x, indices, intermediates_only=True)
    assert (final - peer_final).abs().max().item() < 1e-4
    assert len(inter) == len(peer_inter) == len(only)
    for a, b, c in zip(inter, peer_inter, only):
        assert (a - b).abs().max().item() < 1e-4 and torch.equal(a, c)


def test_out_indices_select_stages_and_are_checked():
    model = pvtv2.create_model("pvt_v2_b0", out_indices=(1, -1)).eval()
    assert model.config.out_indices == (1, 3)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_features(x)
        assert [m.shape[1] for m in maps] == [64, 256]
        assert model(x).shape == (1, 1000)  # the classifier still reads the last stage
    for bad in [(3, 1), (), (0, 4)]:
        with pytest.raises(ValueError, match="out_indices"):
            pvtv2.create_model("pvt_v2_b0", out_indices=bad)
    with pytest.raises(ValueError, match="frozen_stages"):
        pvtv2.create_model("pvt_v2_b0", frozen_stages=5)


def test_frozen_stages_get_no_gradient_and_stay_in_eval_mode():
    model = randomize_(pvtv2.create_model("pvt_v2_b0", frozen_stages=2, drop_path_rate=0.5, num_classes=3))
    model.train()
    for i in (1, 2):
        for part in ("patch_embed", "block", "norm"):
            module = getattr(model, f"{part}{i}")
            assert not module.training and not any(p.requires_grad for p in module.parameters())
    assert model.block3.training and all(p.requires_grad for p in model.block3.parameters())
    x = torch.randn(2, 3, 64, 64)
    model(x).square().sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("patch_embed1", "block2", "norm2")))
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(("block3", "head")))
    # Stochastic depth is off in frozen stages, even in training mode: stage 2's map is repeatable.
    with torch.no_grad():
        assert torch.equal(model.forward_features(x)[1], model.forward_features(x)[1])


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomize_(pvtv2.create_model("pvt_v2_b0", num_classes=4)).train()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    grads, saved = [], []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad(set_to_none=True)
        x.grad = None
        elements = []

        def pack(t):
            elements.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        saved.append(sum(elements))
        out.square().sum().backward()
        grads.append({"input": x.grad.clone(), **{n: p.grad.clone() for n, p in model.named_parameters()}})
    assert saved[1] < saved[0] / 3  # the blocks' activations are not kept for backward
    plain, checkpointed = grads
    for name, ref in plain.items():
        assert (ref - checkpointed[name]).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item()), name


def test_torch_hub_entry_points(tmp_path):
    import importlib.util
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    spec = importlib.util.spec_from_file_location("hubconf", Path(repo) / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert set(pvtv2.list_models()) | {"detector", "segmenter"} <= entries
    reference = randomize_(pvtv2.create_model("pvt_v2_b0", num_classes=3)).eval()
    reference.save_pretrained(tmp_path / "b0")
    loaded = torch.hub.load(repo, "pvt_v2_b0", source="local", pretrained=str(tmp_path / "b0")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), reference(x))
    assert type(torch.hub.load(repo, "pvt_v2_b1", source="local")).__name__ == "PyramidVisionTransformerV2"
    seg = torch.hub.load(repo, "segmenter", source="local", backbone="pvt_v2_b0", num_classes=4).eval()
    with torch.no_grad():
        assert seg(x).shape == (1, 4, 64, 64)
