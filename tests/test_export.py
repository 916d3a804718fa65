"""Deployment: ONNX (checked in onnxruntime), TorchScript, torch.compile, batch prediction."""
import json
import os

import numpy as np
import pytest
import torch
from conftest import randomize_

import pvtv2
from pvtv2.export import ExportError, export_checkpoint, export_onnx, export_torchscript, onnx_session


def _max_diff(session, model_out, x):
    got = session.run(None, {"images": x.numpy()})
    outs = [model_out] if isinstance(model_out, torch.Tensor) else list(model_out)
    return max(float(np.abs(g - o.numpy()).max()) for g, o in zip(got, outs))


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sra", "linear"])  # b0's widths: the variants share the code
def test_onnx_export_matches_pytorch_at_several_sizes(tmp_path, attention):
    # One block per stage: the blocks of a stage are the same code (the exporter traces each one).
    model = randomize_(pvtv2.create_model("pvt_v2_b0", attention=attention, depths=(1, 1, 1, 1))).eval()
    path = export_onnx(model, tmp_path / f"{attention}.onnx")
    session = onnx_session(path)
    for i, (h, w) in enumerate([(224, 224), (193, 257), (512, 384)]):
        x = torch.randn(1 + i, 3, h, w)
        with torch.no_grad():
            expected = model(x)
        assert _max_diff(session, expected, x) < 1e-4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_onnx_backbone_outputs_named_pyramid(tmp_path):
    model = randomize_(pvtv2.create_model("pvt_v2_b0", depths=(1, 1, 1, 1))).eval()
    session = onnx_session(export_onnx(model, tmp_path / "bb.onnx", backbone=True, check_sizes=[(224, 224), (193, 257)]))
    assert [o.name for o in session.get_outputs()] == ["stage1", "stage2", "stage3", "stage4"]
    x = torch.randn(2, 3, 193, 257)
    outs = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        feats = model.forward_features(x)
    assert [o.shape for o in outs] == [tuple(f.shape) for f in feats]
    assert max(float(np.abs(o - f.numpy()).max()) for o, f in zip(outs, feats)) < 1e-4


def test_torchscript_reloads_and_matches_at_two_sizes(tmp_path):
    model = randomize_(pvtv2.create_model("pvt_v2_b2_li")).eval()
    path = export_torchscript(model, tmp_path / "m.pt")
    loaded = torch.jit.load(str(path))
    for h, w in [(224, 224), (160, 288)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            assert (loaded(x) - model(x)).abs().max().item() < 1e-4


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    """The whole model is captured as one graph with dynamic sizes (fullgraph: a graph break is an
    error) and the captured graph computes what eager does. Variants differ only in widths and
    depths; the linear-SRA variant's pooling goes through the same capture in its ONNX export above
    (``torch.export`` with dynamic sizes, checked at three sizes). ``aot_eager`` runs dynamo's capture and
    AOT autograd's tracing without inductor's minutes of C++ code generation on a cold cache;
    inductor itself compiles the feed-forward in test_ffn and the whole model in ``pvtv2 bench
    --compile`` (checked against eager there)."""
    # One block per stage: dynamo traces each block afresh, and the blocks of a stage are the same code.
    model = randomize_(pvtv2.create_model("pvt_v2_b0", depths=(1, 1, 1, 1))).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    with torch.no_grad():
        for h, w in [(224, 224), (193, 257)]:
            x = torch.randn(2, 3, h, w)
            assert (compiled(x) - model(x)).abs().max().item() < 1e-4


def test_export_errors_leave_nothing_behind(tmp_path, cli):
    model = pvtv2.create_model("pvt_v2_b0")
    with pytest.raises(ExportError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root can write anywhere
            with pytest.raises(ExportError, match="not writable"):
                export_torchscript(model, ro / "m.pt")
    finally:
        ro.chmod(0o700)
    # What no user (root included) can write: a path under a regular file.
    (ro / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_torchscript(model, ro / "file" / "m.pt")
    (ro / "file").unlink()
    # A checkpoint that does not match the requested variant.
    pvtv2.create_model("pvt_v2_b0").save_pretrained(tmp_path / "b0")
    res = cli("export", tmp_path / "b0", "--model", "pvt_v2_b1", "--format", "onnx", "--out", tmp_path / "x.onnx")
    assert res.returncode == 2 and "asked for pvt_v2_b1" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0", "ro"] and not list(ro.iterdir())


def test_too_loose_check_is_reported(tmp_path):
    model = randomize_(pvtv2.create_model("pvt_v2_b0")).eval()
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_torchscript(model, tmp_path / "m.pt", atol=-1.0)  # nothing can meet a negative tolerance
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_predict_folder_with_onnx_matches_pytorch(tmp_path, cli):
    from pvtv2.data import make_classification_dataset

    data = make_classification_dataset(tmp_path / "d", classes=3, train_per_class=1, val_per_class=7, size=40,
                                       progress=False)
    model = randomize_(pvtv2.create_model("pvt_v2_b0", num_classes=3)).eval()
    from pvtv2.checkpoint import save_file

    save_file(model, tmp_path / "m.safetensors", class_names=["circle", "square", "triangle"],
              extra={"input_size": 64, "crop_pct": 1.0})
    from pvtv2.classification import predict

    export_checkpoint(tmp_path / "m.safetensors", tmp_path / "m.onnx", format="onnx")  # `pvtv2 export`: test_pvt_v1
    ra = list(predict([data / "val"], tmp_path / "m.safetensors", batch_size=4, show_progress=False))
    # `pvtv2 predict` tells an .onnx checkpoint by its suffix and runs it in onnxruntime
    b = cli("predict", data / "val", "--checkpoint", tmp_path / "m.onnx", "--batch-size", 5)
    assert b.returncode == 0, b.stderr
    rb = [json.loads(l) for l in b.stdout.splitlines()]
    assert len(ra) == len(rb) == 21
    for x, y in zip(ra, rb):
        assert x["path"] == y["path"] and [t["class"] for t in x["top"]] == [t["class"] for t in y["top"]]
        assert abs(x["top"][0]["prob"] - y["top"][0]["prob"]) < 1e-4


def test_export_refuses_outputs_it_must_not_write(tmp_path):
    """Existing files (unless overwrite), the source checkpoint (always), a suffix of the other
    format, an unsupported opset: all refused before any export work, nothing written. Files
    written follow the umask (not mkstemp's 0600)."""
    model = pvtv2.create_model("pvt_v2_b0")
    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match="m.pt exists; choose another output, or replace it with --overwrite"):
        export_torchscript(model, out, check_sizes=[(64, 64)])
    assert out.read_bytes() == b"an earlier export"
    umask = os.umask(0o027)
    try:
        export_torchscript(model, out, check_sizes=[(64, 64)], overwrite=True)
    finally:
        os.umask(umask)
    assert torch.jit.load(str(out)) is not None and out.stat().st_mode & 0o777 == 0o640
    with pytest.raises(ExportError, match=r"torchscript exports are written to a file ending in .pt or .torchscript, not .onnx"):
        export_torchscript(model, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"onnx exports are written to a file ending in .onnx, not .pt"):
        export_onnx(model, tmp_path / "n.pt")
    for opset in (3, 17, 26):
        with pytest.raises(ExportError, match=f"opset {opset} is not supported: choose 18 to 25"):
            export_onnx(model, tmp_path / "n.onnx", opset=opset)
    torch.save(model.state_dict(), tmp_path / "official.pt")
    source = (tmp_path / "official.pt").read_bytes()
    with pytest.raises(ExportError, match="is the source checkpoint"):
        export_checkpoint(tmp_path / "official.pt", tmp_path / "official.pt", format="torchscript", model="pvt_v2_b0",
                          overwrite=True)
    assert (tmp_path / "official.pt").read_bytes() == source
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "official.pt"]


@pytest.mark.slow
def test_static_onnx_export_takes_one_image(tmp_path):
    """``dynamic=False`` traced a batch of 2 and then checked a batch of 1: it never worked."""
    model = randomize_(pvtv2.create_model("pvt_v2_b0")).eval()
    session = onnx_session(export_onnx(model, tmp_path / "s.onnx", dynamic=False, check_sizes=[(64, 96)]))
    assert session.get_inputs()[0].shape == [1, 3, 64, 96]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert _max_diff(session, model(x), x) < 1e-4


def test_exports_trace_a_float32_cpu_copy_of_other_models():
    from pvtv2.export import _cpu_copy

    model = pvtv2.create_model("pvt_v2_b0", num_classes=3)
    assert _cpu_copy(model) is model
    half = pvtv2.create_model("pvt_v2_b0", num_classes=3).to(torch.bfloat16)
    copy = _cpu_copy(half)
    assert copy is not half and next(copy.parameters()).dtype == torch.float32
    assert next(half.parameters()).dtype == torch.bfloat16  # the caller's model is left as it was
    assert torch.equal(copy.head.weight, half.head.weight.float())
