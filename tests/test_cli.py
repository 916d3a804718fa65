"""The `pvtv2` command: it parses and delegates; the package's own errors are one line (exit 2),
any other exception keeps its traceback. Run in-process through `pvtv2.cli.main` (the
subprocess runs are in the task tests)."""
import json

import pytest

import pvtv2.cli
from pvtv2.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["train", "--epochs", "-3"], "--epochs -3: must be at least 1"),
    (["train", "--drop-path", "1.5"], r"--drop-path 1.5: must be in [0, 1)"),
    (["train", "--drop-path", "-0.1"], r"--drop-path -0.1: must be in [0, 1)"),
    (["train", "--device", "tpu"], "--device tpu: expected cpu, cuda, cuda:N, mps or auto"),
    (["train", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["train", "--batch-size", "-4"], "--batch-size -4: must be at least 1"),
    (["train", "--img-size", "16"], "--img-size 16: must be at least 32"),
    (["train", "--img-size", "0"], "--img-size 0: must be at least 32"),
    (["train", "--model", "pvt_v3"], "--model pvt_v3: unknown model; known models: pvt_v2_b0"),
    (["train", "--resume", "--overwrite"], "--resume continues the run in the output folder and --overwrite deletes it"),
    (["segment", "train", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["segment", "train", "--crop", "16"], "--crop 16: must be at least 32"),
    (["detect", "train", "--batch-size", "-2"], "--batch-size -2: must be at least 1"),
    (["detect", "train", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["predict", "x.png", "--checkpoint", "c", "--topk", "0"], "--topk 0: must be at least 1"),
    (["predict", "x.png", "--checkpoint", "c", "--device", "tpu"], "--device tpu: expected"),
    (["eval", "--data", "d", "--checkpoint", "c", "--img-size", "8"], "--img-size 8: must be at least 32"),
    (["detect", "predict", "x.png", "--checkpoint", "c", "--out", "o", "--score-thresh", "2"],
     r"--score-thresh 2.0: must be in [0, 1]"),
])
def test_flags_out_of_range_are_one_line_errors(capsys, tmp_path, argv, message):
    if "train" in argv:
        argv = argv[:argv.index("train") + 1] + ["--data", str(tmp_path / "d"), "--output", str(tmp_path / "o")] \
            + argv[argv.index("train") + 1:]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_a_bug_keeps_its_traceback(monkeypatch):
    def buggy(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(pvtv2.cli, "cmd_models", buggy)
    with pytest.raises(ValueError, match="a bug"):
        main(["models"])


@pytest.mark.parametrize("argv, flag", [
    (["train", "--data", "{tmp}/nodata", "--output", "{file}/run"], "--output"),
    (["predict", "{tmp}/x.png", "--checkpoint", "{tmp}/c.safetensors", "--output", "{file}/p.jsonl"], "--output"),
    (["detect", "predict", "{tmp}/x.png", "--checkpoint", "{tmp}/c.safetensors", "--out", "{file}/pics"], "--out"),
    (["segment", "predict", "{tmp}/x.png", "--checkpoint", "{tmp}/c.safetensors", "--out", "{file}/masks"], "--out"),
    (["data", "synth", "--out", "{file}/data"], "--out"),
    (["data", "synth", "--out", "{file}"], "--out"),
])
def test_unwritable_outputs_are_one_line_errors(capsys, tmp_path, argv, flag):
    # Root ignores permission bits: a path below a regular file can be written by nobody.
    (tmp_path / "file").write_text("a regular file")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path, file=tmp_path / "file") for a in argv])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "error:" in err and f"{flag} {tmp_path / 'file'}" in err, err


def test_synth_defaults_are_the_generators(capsys, tmp_path):
    import inspect

    from pvtv2.data import make_segmentation_dataset

    code, out, err = run(capsys, "data", "synth", "--task", "segment", "--out", str(tmp_path / "s"),
                         "--train-images", "2", "--val-images", "1")
    assert code == 0, err
    meta = json.loads((tmp_path / "s" / "synth.json").read_text())
    direct = json.loads((make_segmentation_dataset(tmp_path / "d", train_images=2, val_images=1, progress=False)
                         / "synth.json").read_text())
    assert meta == direct  # the flags left out are the generator's own defaults
    assert len(meta["classes"]) == inspect.signature(make_segmentation_dataset).parameters["classes"].default
    code, out, err = run(capsys, "data", "synth", "--task", "segment", "--out", str(tmp_path / "t"),
                         "--train-per-class", "3")
    assert code == 2 and "--train-per-class does not apply to --task segment" in err
    code, out, err = run(capsys, "data", "synth", "--out", str(tmp_path / "u"), "--size", "0")  # not "0 or 48"
    assert code == 2 and "size must be at least 32" in err and not list((tmp_path / "u").rglob("*.png"))
