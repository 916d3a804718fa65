"""Flags that reach the package's protections: --overwrite for export and data synth,
--max-image-pixels for predict, and detect predict's note when nothing passes its threshold.
In-process through `pvtv2.cli.main`."""
import json

import pytest
import torch
from PIL import Image

import pvtv2
from pvtv2.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_synth_overwrite_flag(capsys, tmp_path):
    out = tmp_path / "shapes"
    args = ["data", "synth", "--out", out, "--classes", 2, "--train-per-class", 1, "--val-per-class", 1, "--size", 32]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert len(list(out.rglob("*.png"))) == 4


def test_export_overwrite_flag(capsys, tmp_path):
    ckpt = tmp_path / "b0"
    pvtv2.create_model("pvt_v2_b0", num_classes=2).save_pretrained(ckpt)
    target = tmp_path / "b0.pt"
    target.write_bytes(b"keep me")
    args = ["export", ckpt, "--format", "torchscript", "--out", target]
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err and target.read_bytes() == b"keep me"
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert torch.jit.load(str(target))(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_predict_max_image_pixels_skips_larger_images(capsys, tmp_path):
    ckpt = tmp_path / "b0"
    pvtv2.create_model("pvt_v2_b0", num_classes=2).save_pretrained(ckpt)
    Image.new("RGB", (40, 40)).save(tmp_path / "small.png")
    Image.new("RGB", (80, 80)).save(tmp_path / "large.png")
    code, out, _ = run(capsys, "predict", tmp_path / "small.png", tmp_path / "large.png", "--checkpoint", ckpt,
                       "--img-size", 32, "--max-image-pixels", 2000)
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and "error" not in records["small.png"] and "error" in records["large.png"]


def test_detect_predict_says_when_nothing_passes_the_threshold(capsys, tmp_path):
    from pvtv2.detection import create_detector, save_detector

    torch.manual_seed(0)
    model = create_detector("retinanet", "pvt_v2_b0", num_classes=2, min_size=64, max_size=96)
    save_detector(model, tmp_path / "det.safetensors", class_names=["a", "b"])
    Image.new("RGB", (64, 64), "white").save(tmp_path / "img.png")
    code, out, err = run(capsys, "detect", "predict", tmp_path / "img.png", "--checkpoint", tmp_path / "det.safetensors",
                         "--out", tmp_path / "pred")
    assert code == 0 and json.loads(out)["detections"] == []  # a fresh head scores about 0.01
    assert "none scored >= --score-thresh 0.5" in err and "0.05" in err


def test_predict_output_file_is_refused_unless_new_or_overwrite(capsys, tmp_path):
    ckpt = tmp_path / "b0"
    pvtv2.create_model("pvt_v2_b0", num_classes=2).save_pretrained(ckpt)
    img = tmp_path / "img.png"
    Image.new("RGB", (40, 40), "white").save(img)
    out = tmp_path / "preds.jsonl"
    out.write_text("earlier\n")
    predict = ["predict", img, "--checkpoint", ckpt, "--img-size", 32, "--output"]

    def refused(*argv):
        code, stdout, err = run(capsys, *argv)
        assert code == 2 and stdout == "" and err.count("\n") == 1, (code, err)
        return err.removeprefix("pvtv2 predict: error: ").strip()

    assert refused(*predict, out) == f"--output {out} exists; choose another output file, or replace it with --overwrite"
    assert refused(*predict, tmp_path) == f"--output {tmp_path} is a folder; give the output file's name"
    assert refused(*predict, img / "p.jsonl") == f"cannot write --output {img / 'p.jsonl'}: {img} is a file, not a folder"
    assert refused(*predict, img, "--overwrite") == f"--output {img} is {img}, which this command reads; choose another output file"
    # A failure after the start (here: no such checkpoint) leaves the earlier file whole and no temporary.
    assert "no-such.safetensors" in refused("predict", img, "--checkpoint", tmp_path / "no-such.safetensors",
                                            "--output", out, "--overwrite")
    assert out.read_text() == "earlier\n" and not list(tmp_path.glob(".*.tmp"))

    assert run(capsys, *predict, out, "--overwrite")[:2] == (0, "")
    (record,) = map(json.loads, out.read_text().splitlines())
    assert record["path"] == str(img) and len(record["top"]) == 2
    assert Image.open(img).size == (40, 40) and not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.parametrize("command", [["detect", "predict"], ["segment", "predict"]])
def test_dense_predict_out_must_be_a_writable_folder(capsys, tmp_path, command):
    (tmp_path / "taken").write_text("a file")
    code, out, err = run(capsys, *command, tmp_path / "img.png", "--checkpoint", tmp_path / "c.safetensors",
                         "--out", tmp_path / "taken")
    assert code == 2 and out == "" and err == (f"pvtv2 {' '.join(command)}: error: --out {tmp_path / 'taken'} is a file, "
                                               f"not a folder; give a folder for the outputs\n")
    assert (tmp_path / "taken").read_text() == "a file"


def test_output_stems_tell_apart_inputs_that_share_a_name(tmp_path):
    from pvtv2.data.images import output_stems

    paths = [tmp_path / "a" / "img.png", tmp_path / "b" / "img.png", tmp_path / "c" / "x.png", tmp_path / "c" / "x.jpg",
             tmp_path / "solo.png", tmp_path / "solo.png", tmp_path / "a_img.png"]
    assert output_stems(paths) == ["a_img", "b_img", "c_x_png", "c_x_jpg", "solo", "solo_2", "a_img_2"]
    assert output_stems([tmp_path / "one.png"]) == ["one"] and output_stems([]) == []


@pytest.mark.parametrize("command", [["detect", "predict"], ["segment", "predict"]])
def test_dense_predict_writes_one_picture_per_input_even_when_names_repeat(capsys, tmp_path, command):
    torch.manual_seed(0)
    if command[0] == "detect":
        from pvtv2.detection import create_detector, save_detector

        save_detector(create_detector("retinanet", "pvt_v2_b0", num_classes=2, min_size=64, max_size=64),
                      tmp_path / "m.safetensors", class_names=["a", "b"])
        suffixes = ["_det.png"]
    else:
        from pvtv2.segmentation import create_segmenter, save_segmenter

        save_segmenter(create_segmenter("pvt_v2_b0", num_classes=2), tmp_path / "m.safetensors",
                       class_names=["bg", "fg"])
        suffixes = ["_mask.png", "_overlay.png"]
    for folder, colour in (("a", "white"), ("b", "red")):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (64, 64), colour).save(tmp_path / folder / "img.png")
    code, out, err = run(capsys, *command, tmp_path / "a", tmp_path / "b", "--checkpoint", tmp_path / "m.safetensors",
                         "--out", tmp_path / "pred", "--workers", 0)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and not any("error" in r for r in records)
    written = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert written == sorted(f"{stem}{s}" for stem in ("a_img", "b_img") for s in suffixes)


@pytest.mark.parametrize("command", [["detect", "eval"], ["segment", "eval"]])
def test_eval_json_output_is_checked_before_the_work_and_written_atomically(capsys, tmp_path, command):
    from pvtv2.cli import _write_json

    (tmp_path / "folder").mkdir()
    code, out, err = run(capsys, *command, "--data", tmp_path / "nowhere", "--checkpoint", tmp_path / "none.safetensors",
                         "--json", tmp_path / "folder")
    assert code == 2 and err == f"pvtv2 {' '.join(command)}: error: --json {tmp_path / 'folder'} is a folder; " \
                                "give the output file's name\n"
    summary = tmp_path / "summary.json"
    summary.write_text("earlier")
    _write_json(str(summary), {"AP": 0.5}, "--json")  # an existing summary is replaced, whole
    assert json.loads(summary.read_text()) == {"AP": 0.5} and sorted(p.name for p in tmp_path.iterdir()) == [
        "folder", "summary.json"]


@pytest.mark.parametrize("command", [["predict"], ["eval", "--data"], ["detect", "predict"], ["segment", "predict"]])
def test_amp_fp16_on_the_cpu_is_refused_before_anything_is_read(capsys, tmp_path, command):
    # The inputs and the checkpoint do not exist: the precision is checked first, with the way out.
    extra = ["--out", tmp_path / "o"] if command[0] in ("detect", "segment") else []
    code, out, err = run(capsys, *command, tmp_path / "img.png", "--checkpoint", tmp_path / "none.safetensors",
                         "--device", "cpu", "--amp", "fp16", *extra)
    assert code == 2 and out == ""
    assert "--amp fp16 needs a CUDA device; on the CPU use --amp bf16 (or none)" in err
    assert not (tmp_path / "o").exists()  # refused before the output folder is made


def test_amp_auto_with_an_onnx_classifier_means_its_own_precision(capsys, tmp_path):
    from pvtv2.classification.predict import predict

    # `auto` is fine for an .onnx file (it runs as exported), an explicit precision is refused, naming the flag
    with pytest.raises(ValueError, match=r"--amp bf16: an \.onnx file runs in the precision it was exported in"):
        list(predict([tmp_path], tmp_path / "m.onnx", amp="bf16"))
    with pytest.raises(Exception) as auto:
        list(predict([tmp_path], tmp_path / "m.onnx", amp="auto", device="cuda"))
    assert "--amp" not in str(auto.value)  # past the precision check: the missing file is what fails
