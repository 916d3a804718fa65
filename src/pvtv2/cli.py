"""The ``pvtv2`` command: parses arguments and delegates to the Python API."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path


def _add_dataclass_flags(parser: argparse.ArgumentParser, config_cls, *, required=(), skip=()) -> None:
    """One ``--flag`` per dataclass field (but ``skip``), with the field's default and help."""
    for f in fields(config_cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)  # annotations are strings here (postponed evaluation)
        if kind in ("bool", "bool | None"):  # None: a default that the recipe fills
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
            continue
        kwargs = dict(default=f.default, help=f.metadata["help"],
                      type=float if "float" in kind else int if "int" in kind else str)
        for key in ("nargs", "choices"):
            if key in f.metadata:
                kwargs[key] = f.metadata[key]
        if f.name in required:
            kwargs.update(required=True, default=None)
        parser.add_argument(flag, **kwargs)


def _train_command(sub, name: str, help: str, config_cls, func) -> None:
    """A training command: one flag per recipe field (``--data`` required; the recipe checks the
    ranges itself), and ``--resume [PATH]`` (bare: OUTPUT/last.pt)."""
    parser = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    resume = next(f for f in fields(config_cls) if f.name == "resume")
    _add_dataclass_flags(parser, config_cls, required=("data",), skip=("resume",))
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help=resume.metadata["help"] + "; a bare --resume means OUTPUT/last.pt")
    parser.set_defaults(func=func)


def _config_from_args(config_cls, args):
    """The recipe dataclass filled from the flags that :func:`_train_command` added."""
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})


class _Checked(argparse.Action):
    """Stores an option's value after ``check(flag, value)``, which returns it or raises a
    :class:`~pvtv2.errors.ConfigError`, so that ``main`` reports it as one line."""

    def __init__(self, *args, check, **kwargs):
        super().__init__(*args, **kwargs)
        self.check = check

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.check(option_string, values))


def _at_least(low):
    from .engine import check_range

    return lambda flag, value: check_range(flag, value, min=low)


def _between(low, high):
    from .engine import check_range

    return lambda flag, value: check_range(flag, value, min=low, max=high)


def _device(flag, value):
    from .engine import check_device_name

    return check_device_name(value)


def _variant(flag, value):
    from .errors import ConfigError
    from .model import list_models

    known = list_models(family="all")  # PVTv2 and PVTv1
    if value not in known:
        raise ConfigError(f"{flag} {value}: unknown model; known models: {', '.join(known)}")
    return value


def _variant_or_all(flag, value):
    return value if value == "all" else _variant(flag, value)


def _detector_kind(flag, value):
    from .detection.model import KINDS
    from .errors import ConfigError

    if value not in KINDS:
        raise ConfigError(f"{flag} {value}: unknown detector kind; choose one of {', '.join(KINDS)}")
    return value


def _sides(count: tuple[int, int] | None = None):
    """Checks a list of image sides (pixels, at least 32 each; ``count``: how many are allowed)."""
    from .engine import check_range
    from .errors import ConfigError

    def check(flag, values):
        if count and not count[0] <= len(values) <= count[1]:
            raise ConfigError(f"{flag}: give {' or '.join(map(str, range(count[0], count[1] + 1)))} numbers, "
                              f"got {len(values)}")
        return [check_range(flag, v, min=32) for v in values]

    return check


def _check_json_output(path: str | None, flag: str = "--json") -> None:
    """Before the work: ``path`` (a summary file, replaced if it exists) can be written, or a
    one-line error (a folder, a path below a file, a folder that is not writable)."""
    from .fileio import prepare_output_file

    if path:
        prepare_output_file(path, flag, overwrite=True)


def _write_json(path: str, obj, flag: str) -> None:
    """``obj`` as indented JSON, written atomically (a failure keeps the earlier file whole);
    a path that cannot be written is a one-line error."""
    from .errors import ConfigError
    from .fileio import atomic_write

    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write this file ({e.strerror}); choose another {flag}") from None


def _stream_records(records, done) -> int:
    """Print prediction records as JSON lines; then ``done(records that succeeded)`` on
    standard error."""
    ok = []
    for record in records:
        print(json.dumps(record), flush=True)
        if "error" not in record:
            ok.append(record)
    print(done(ok), file=sys.stderr)
    return 0


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _done(message: str) -> None:
    """The closing line of a training command, from rank 0 only under torchrun."""
    from .engine import is_main_process

    if is_main_process():
        print(message)


def cmd_train(args) -> int:
    from .classification import TrainConfig, train

    result = train(_config_from_args(TrainConfig, args))
    _done(f"done: best val top-1 {result['best_top1']:.2f}%; results in {result['output']}")
    return 0


def cmd_eval(args) -> int:
    from .classification import evaluate_checkpoint

    _print_json(evaluate_checkpoint(args.data, args.checkpoint, model=args.model, img_size=args.img_size,
                                    batch_size=args.batch_size, workers=args.workers, device=args.device,
                                    tf32=args.tf32, amp=args.amp))
    return 0


def cmd_predict(args) -> int:
    from .classification.predict import predict

    records = predict(args.inputs, args.checkpoint, model=args.model, topk=args.topk, img_size=args.img_size,
                      batch_size=args.batch_size, workers=args.workers, device=args.device,
                      max_image_pixels=args.max_image_pixels, tf32=args.tf32, amp=args.amp)
    if not args.output:
        for record in records:
            sys.stdout.write(json.dumps(record) + "\n")
        return 0
    from .fileio import atomic_write, prepare_output_file

    out = prepare_output_file(args.output, "--output", overwrite=args.overwrite, reads=[args.checkpoint, *args.inputs])

    def write(tmp):  # a failure part-way leaves any earlier file as it was
        with open(tmp, "w") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")

    atomic_write(out, write)
    return 0


#: ``pvtv2 data synth --task``: the generator and the flags that apply to it. Defaults are the
#: generators' own (a flag left out is not passed on).
SYNTH_TASKS = {
    "classify": ("make_classification_dataset", ("classes", "train_per_class", "val_per_class", "size", "seed")),
    "segment": ("make_segmentation_dataset", ("classes", "train_images", "val_images", "size", "seed")),
    "detect": ("make_detection_dataset", ("classes", "train_images", "val_images", "size", "seed")),
}
SYNTH_LAYOUTS = {"classify": "classification dataset (ImageFolder layout)",
                 "segment": "segmentation dataset (ADE20K layout)",
                 "detect": "detection dataset (COCO layout)"}


def _synth_defaults(name: str) -> str:
    """The defaults of an option of the generators, for ``--help``: ``classify 6, segment 4, ...``
    (a generator whose default is ``None`` chooses for itself: its docstring says how)."""
    import inspect

    from . import data

    defaults = {task: inspect.signature(getattr(data, fn)).parameters[name].default
                for task, (fn, names) in SYNTH_TASKS.items() if name in names}
    if all(v is None for v in defaults.values()):
        return "each task's own, see pvtv2.data"
    return ", ".join(f"{task} {v}" for task, v in defaults.items())


def cmd_synth(args) -> int:
    from . import data
    from .errors import ConfigError
    from .fileio import prepare_output_folder

    fn, names = SYNTH_TASKS[args.task]
    others = sorted({n for _, ns in SYNTH_TASKS.values() for n in ns} - set(names))
    wrong = [n for n in others if getattr(args, n) is not None]
    if wrong:
        raise ConfigError(f"--{wrong[0].replace('_', '-')} does not apply to --task {args.task}")
    prepare_output_folder(args.out, "--out")
    kwargs = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    path = getattr(data, fn)(args.out, overwrite=args.overwrite, **kwargs)
    print(f"wrote a {SYNTH_LAYOUTS[args.task]} to {path}")
    return 0


def cmd_detect_train(args) -> int:
    from .detection import DetTrainConfig, train

    result = train(_config_from_args(DetTrainConfig, args))
    _done(f"done: best box AP {result['best_ap']:.3f}; results in {result['output']}")
    return 0


def cmd_detect_eval(args) -> int:
    from .detection import evaluate_checkpoint

    _check_json_output(args.json)
    _check_json_output(args.results, "--results")
    result = evaluate_checkpoint(args.data, args.checkpoint, split=args.split, images=args.images, ann=args.ann,
                                 device=args.device, batch_size=args.batch_size, results_file=args.results,
                                 workers=args.workers, tf32=args.tf32, amp=args.amp)
    for iou_type in ("bbox", "segm"):
        if iou_type in result:
            print(f"{iou_type}:\n{result[iou_type]['summary']}")
    _print_json({k: ({"stats": v["stats"]} if isinstance(v, dict) else v) for k, v in result.items()})
    if args.json:
        _write_json(args.json, result, "--json")
    return 0


def cmd_detect_predict(args) -> int:
    from .detection import predict

    _check_predict_output(args)
    records = predict(args.inputs, args.checkpoint, args.out, score_thresh=args.score_thresh, device=args.device,
                      max_image_pixels=args.max_image_pixels, workers=args.workers, tf32=args.tf32, amp=args.amp)
    return _stream_records(records, lambda ok: _detections_done(ok, args))


def _check_predict_output(args) -> None:
    """``detect``/``segment predict``: ``--out`` checked by that name before anything is read, and not
    made: ``predict`` refuses ``--amp``, then inputs without images, then loads the checkpoint, before
    it makes the folder, so a refused command leaves no empty output folder behind."""
    from .fileio import check_output_folder

    check_output_folder(args.out, "--out")


def _detections_done(ok: list[dict], args) -> str:
    found = sum(len(r.get("detections", [])) for r in ok)
    message = f"wrote detections of {len(ok)} image(s) to {args.out}: {found} detection(s)"
    if ok and not found:
        # A short run often scores below 0.5 everywhere while `detect eval` (which keeps scores
        # >= 0.05, as COCO evaluation does) still finds its objects.
        message += (f"; none scored >= --score-thresh {args.score_thresh} (detect eval counts scores >= 0.05: "
                    "try a lower --score-thresh)")
    return message


def cmd_segment_train(args) -> int:
    from .segmentation import SegTrainConfig, train

    result = train(_config_from_args(SegTrainConfig, args))
    _done(f"done: best mIoU {result['best_miou']:.2f}%; results in {result['output']}")
    return 0


def cmd_segment_eval(args) -> int:
    from .segmentation.evaluate import evaluate_checkpoint, format_table

    _check_json_output(args.json)
    result = evaluate_checkpoint(args.data, args.checkpoint, split=args.split, mode=args.mode,
                                 scale=tuple(args.scale) if args.scale else None, crop=args.crop,
                                 reduce_zero_label=args.reduce_zero_label, device=args.device, workers=args.workers,
                                 tf32=args.tf32, amp=args.amp)
    print(format_table(result))
    _print_json(result)
    if args.json:
        _write_json(args.json, result, "--json")
    return 0


def cmd_segment_predict(args) -> int:
    from .segmentation import predict

    _check_predict_output(args)
    records = predict(args.inputs, args.checkpoint, args.out, mode=args.mode,
                      scale=tuple(args.scale) if args.scale else None, crop=args.crop, device=args.device,
                      max_image_pixels=args.max_image_pixels, workers=args.workers, tf32=args.tf32, amp=args.amp)
    return _stream_records(records, lambda ok: f"wrote masks and overlays of {len(ok)} image(s) to {args.out}")


def cmd_convert(args) -> int:
    from .checkpoint import canonical_format, convert

    dst = convert(args.src, args.dst, to=args.to, name=args.model, overwrite=args.overwrite)
    print(f"wrote {canonical_format(args.to)} checkpoint to {dst}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo, run_detect_demo, run_segment_demo

    if args.task == "segment":
        run_segment_demo(Path(args.out))
    elif args.task == "detect":
        run_detect_demo(Path(args.out))
    else:
        run_demo(Path(args.out), epochs=args.epochs)
    return 0


def cmd_export(args) -> int:
    from .export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, format=args.format, model=args.model, backbone=args.backbone,
                             dynamic=args.dynamic, opset=args.opset, overwrite=args.overwrite)
    print(f"wrote {args.format} {'backbone' if args.backbone else 'classifier'} to {path} (checked against PyTorch)")
    return 0


def cmd_flops(args) -> int:
    from . import list_models
    from .bench.flops import flops_rows, format_rows
    from .errors import ConfigError

    if args.scaling:
        from .bench.complexity import format_table, write_study

        study = write_study(args.out, **({"sizes": tuple(args.sizes)} if args.sizes else {}))
        print(format_table(study))
        print(f"wrote {args.out}/complexity.json and {args.out}/complexity.png")
        return 0
    size = None
    if args.img_size is not None:
        h = args.img_size[0]
        size = (h, args.img_size[1] if len(args.img_size) == 2 else args.width or h)
    elif args.width is not None:
        raise ConfigError("--width needs --img-size H (or give --img-size H W)")
    names = list_models(family="all") if args.model == "all" else [args.model]
    rows = flops_rows(names, task=args.task, kind=args.kind, img_size=size, num_classes=args.num_classes)
    if args.json:
        _print_json(rows)
    else:
        print(format_rows(rows))
    return 0


def cmd_ablation(args) -> int:
    from .ablation import format_table, run_ablation

    results = run_ablation()
    if args.json:
        _print_json(results)
    else:
        print(format_table(results))
    return 0


def cmd_bench(args) -> int:
    from .bench.run import compare_dense, compare_speed, scaling_study
    from .errors import ConfigError

    if args.scaling:
        scaling_study(args.out, budget_gmacs=args.budget_gmacs, device=args.device, repeats=args.repeats,
                      reference=args.reference, threads=args.threads)
    elif args.task != "classify":
        only_classify = [flag for flag, used in (("--mode train", "train" in args.mode), ("--compile", args.compile),
                                                 ("--grad-checkpointing", args.grad_checkpointing),
                                                 ("--channels-last", args.channels_last), ("--agreement", args.agreement),
                                                 ("--peer-eager-fp32", args.peer_eager_fp32),
                                                 ("--compare none", args.compare == "none"),
                                                 ("--compare onnxruntime", args.compare == "onnxruntime"),
                                                 ("--ceiling", args.ceiling),
                                                 ("--dtype bf16-weights", args.dtype == "bf16-weights")) if used]
        if only_classify:
            raise ConfigError(f"{', '.join(only_classify)}: only with --task classify (the dense bench runs inference "
                              f"against torchvision)")
        kinds = args.kind or [{"detect": "retinanet", "segment": "fcn_resnet50"}[args.task]]
        size = args.img_size and (args.img_size * 2)[:2]  # one side: square
        compare_dense(args.task, kinds, args.model, img_size=size, batch_size=args.batch_size or 1, device=args.device,
                      dtype=args.dtype, repeats=args.repeats, warmup=args.warmup, profile=args.profile,
                      threads=args.threads, json_path=args.json)
    else:
        if args.kind:
            raise ConfigError("--kind: only with --task detect or segment")
        if args.img_size and len(set(args.img_size)) > 1:
            raise ConfigError(f"--img-size {' '.join(map(str, args.img_size))}: the classification bench runs "
                              f"square images; give one side")
        if args.grad_checkpointing and set(args.mode) != {"train"}:
            raise ConfigError(f"--grad-checkpointing: only with --mode train (it saves training memory), "
                              f"not --mode {' '.join(args.mode)}")
        img_size = args.img_size[0] if args.img_size else 224
        compare_speed(args.model, args.mode, batch_size=args.batch_size or 8, img_size=img_size, device=args.device,
                      dtype=args.dtype, channels_last=args.channels_last, compile=args.compile,
                      compare=args.compare, peer_eager_fp32=args.peer_eager_fp32, agreement=args.agreement,
                      grad_checkpointing=args.grad_checkpointing, ceiling=args.ceiling, profile=args.profile,
                      repeats=args.repeats, warmup=args.warmup, threads=args.threads, json_path=args.json)
    return 0


def cmd_models(args) -> int:
    from . import list_models
    from .registry import get_variant

    for name in list_models(family=args.family):
        v = get_variant(name)
        print(f"{name:14s} {v.family:7s} {v.num_params:>12,d} parameters  widths {list(v.embed_dims)}  "
              f"depths {list(v.depths)}")
    return 0


def _eval_amp_flag(parser: argparse.ArgumentParser) -> None:
    """``--amp`` of the inference commands (eval and predict)."""
    parser.add_argument("--amp", default="none", choices=["none", "auto", "bf16", "fp16"],
                        help="autocast for inference: bf16 (CPUs with AVX512-BF16, GPUs), fp16 (CUDA), auto (bf16 or "
                             "fp16 on a GPU, none on the CPU); default none: float32, on x86 CPUs through oneDNN")


def _tf32_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                        help="CUDA: fp32 matrix products and convolutions on TF32 tensor cores (--no-tf32: full fp32)")


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import FORMAT_ALIASES, FORMATS
    from .classification.recipe import TrainConfig
    from .detection.recipe import DetTrainConfig
    from .segmentation.recipe import SegTrainConfig

    checked = dict(action=_Checked)
    size = dict(type=int, check=_at_least(32), **checked)
    count = dict(type=int, check=_at_least(1), **checked)
    workers = dict(type=int, check=_at_least(0), **checked)
    device = dict(check=_device, **checked)
    variant = dict(check=_variant, **checked)

    parser = argparse.ArgumentParser(prog="pvtv2", description="Pyramid Vision Transformer v2: models, training, tools")
    sub = parser.add_subparsers(dest="command", required=True)

    _train_command(sub, "train", "train an image classifier (official PVTv2 ImageNet recipe by default)",
                   TrainConfig, cmd_train)

    p = sub.add_parser("eval", help="evaluate a classifier checkpoint on an ImageFolder; prints JSON")
    p.add_argument("--data", required=True, help="folder with val/<class>/* (or the class folders themselves)")
    p.add_argument("--checkpoint", required=True, help="checkpoint (our best.safetensors, or any supported format)")
    p.add_argument("--model", default=None, help="variant name; optional when the checkpoint carries its config", **variant)
    p.add_argument("--img-size", default=None, help="eval size (default: the checkpoint's training size or 224)", **size)
    p.add_argument("--batch-size", default=64, **count)
    p.add_argument("--workers", default=2, help="image-loading processes", **workers)
    p.add_argument("--device", default="auto", **device)
    _tf32_flag(p)
    _eval_amp_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for images or folders, as JSON lines")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", default=None, help="variant name; optional when the checkpoint carries its config", **variant)
    p.add_argument("--topk", default=5, **count)
    p.add_argument("--img-size", default=None, **size)
    p.add_argument("--batch-size", default=32, **count)
    p.add_argument("--workers", default=2, help="image-loading processes", **workers)
    p.add_argument("--device", default="cpu", **device)
    _tf32_flag(p)
    _eval_amp_flag(p)
    p.add_argument("--output", default=None, help="write JSON lines here instead of standard output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="skip images above this many pixels (decompression-bomb guard; default PIL's limit)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("data", help="embedded datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="generate a labelled dataset of shapes and textures (ImageFolder layout)")
    s.add_argument("--out", required=True)
    s.add_argument("--task", default="classify", choices=list(SYNTH_TASKS),
                   help="classify: ImageFolder of shapes; segment: ADE20K-style images + per-pixel labels; "
                        "detect: COCO-format boxes + instance masks")
    s.add_argument("--classes", type=int, default=None,
                   help=f"number of classes (segment: background + shapes); default: {_synth_defaults('classes')}")
    s.add_argument("--train-per-class", type=int, default=None,
                   help=f"classify: training images per class (default {_synth_defaults('train_per_class')})")
    s.add_argument("--val-per-class", type=int, default=None,
                   help=f"classify: validation images per class (default {_synth_defaults('val_per_class')})")
    s.add_argument("--train-images", type=int, default=None,
                   help=f"segment, detect: training images (default {_synth_defaults('train_images')})")
    s.add_argument("--val-images", type=int, default=None,
                   help=f"segment, detect: validation images (default {_synth_defaults('val_images')})")
    s.add_argument("--size", type=int, default=None, help=f"image side in pixels (default {_synth_defaults('size')})")
    s.add_argument("--seed", type=int, default=None, help=f"random seed (default {_synth_defaults('seed')})")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a synthetic dataset already in --out (a folder synth did not write is never cleared)")
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("detect", help="object detection / instance segmentation: train, eval, predict")
    dsub2 = p.add_subparsers(dest="detect_command", required=True)
    _train_command(dsub2, "train", "train a detector (the kind's official recipe by default: 1x for RetinaNet / Faster / "
                   "Mask R-CNN, 3x for ATSS / GFL / Sparse R-CNN; --schedule 1x|3x picks one)",
                   DetTrainConfig, cmd_detect_train)
    s = dsub2.add_parser("eval", help="COCO box AP (and mask AP) of a checkpoint: the 12-number summary + JSON")
    s.add_argument("--data", required=True, help="COCO-layout root")
    s.add_argument("--checkpoint", required=True,
                   help="a detection run's best.safetensors, or a published whai362/PVT RetinaNet or Mask R-CNN .pth")
    s.add_argument("--split", default="val", choices=["train", "val"])
    s.add_argument("--images", default=None, help="image folder (default DATA/{split}2017)")
    s.add_argument("--ann", default=None, help="instances JSON (default DATA/annotations/instances_{split}2017.json)")
    s.add_argument("--batch-size", default=2, **count)
    s.add_argument("--device", default="auto", **device)
    s.add_argument("--workers", default=2, help="image-loading processes", **workers)
    _tf32_flag(s)
    _eval_amp_flag(s)
    s.add_argument("--results", default=None, help="also write the detections (COCO result format) to this file")
    s.add_argument("--json", default=None, help="also write the evaluation as JSON to this file")
    s.set_defaults(func=cmd_detect_eval)
    s = dsub2.add_parser("predict", help="detections as JSON lines and images with boxes/masks drawn")
    s.add_argument("inputs", nargs="+", help="image files and/or folders")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True, help="folder for <stem>_det.png")
    s.add_argument("--score-thresh", type=float, default=0.5, check=_between(0, 1),
                   help="keep detections scoring at least this (detect eval keeps >= 0.05, as COCO evaluation does)",
                   **checked)
    s.add_argument("--device", default="cpu", **device)
    s.add_argument("--workers", default=2, help="image-loading processes", **workers)
    _tf32_flag(s)
    _eval_amp_flag(s)
    s.add_argument("--max-image-pixels", type=int, default=None,
                   help="skip images above this many pixels (decompression-bomb guard; default PIL's limit)")
    s.set_defaults(func=cmd_detect_predict)

    p = sub.add_parser("segment", help="semantic segmentation with Semantic FPN: train, eval, predict")
    ssub = p.add_subparsers(dest="segment_command", required=True)
    _train_command(ssub, "train", "train Semantic FPN (official ADE20K 40k recipe by default)", SegTrainConfig,
                   cmd_segment_train)
    s = ssub.add_parser("eval", help="mIoU / mAcc / aAcc / per-class IoU of a checkpoint (table + JSON)")
    s.add_argument("--data", required=True, help="ADE20K-style root (images/, annotations/) or images/ + masks/ folder")
    s.add_argument("--checkpoint", required=True,
                   help="a segmentation run's best.safetensors, or a published whai362 Semantic FPN .pth")
    s.add_argument("--split", default="val", choices=["train", "val"])
    s.add_argument("--mode", default="whole", choices=["whole", "slide"], help="whole-image or sliding-window inference")
    s.add_argument("--scale", nargs=2, default=None, help="test rescale, then sides up to multiples of 32 as the official "
                                                          "AlignResize (default: the training scale)", **size)
    s.add_argument("--crop", default=None, help="sliding window size (default: the training crop)", **size)
    s.add_argument("--reduce-zero-label", action=argparse.BooleanOptionalAction, default=None,
                   help="default: as in training")
    s.add_argument("--device", default="auto", **device)
    s.add_argument("--workers", default=2, help="image-loading processes", **workers)
    _tf32_flag(s)
    _eval_amp_flag(s)
    s.add_argument("--json", default=None, help="also write the JSON result to this file")
    s.set_defaults(func=cmd_segment_eval)
    s = ssub.add_parser("predict", help="colour masks and overlays for images or folders; JSON lines")
    s.add_argument("inputs", nargs="+", help="image files and/or folders")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True, help="folder for <stem>_mask.png and <stem>_overlay.png")
    s.add_argument("--mode", default="whole", choices=["whole", "slide"])
    s.add_argument("--scale", nargs=2, default=None, help="as for segment eval", **size)
    s.add_argument("--crop", default=None, **size)
    s.add_argument("--device", default="cpu", **device)
    s.add_argument("--workers", default=2, help="image-loading processes", **workers)
    _tf32_flag(s)
    _eval_amp_flag(s)
    s.add_argument("--max-image-pixels", type=int, default=None,
                   help="skip images above this many pixels (decompression-bomb guard; default PIL's limit)")
    s.set_defaults(func=cmd_segment_predict)

    p = sub.add_parser("convert", help="convert a checkpoint between formats")
    p.add_argument("src", help="file, folder or hub id")
    p.add_argument("dst", help="pvtv2/transformers: a folder (pvtv2 also a .safetensors file); "
                               "official/timm: a .pth, .pt, .bin or .safetensors file")
    p.add_argument("--to", default="pvtv2", choices=FORMATS + tuple(FORMAT_ALIASES),
                   help="target format ('ours' is the old name of 'pvtv2')")
    p.add_argument("--model", default=None, help="variant name, when the source carries no config", **variant)
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination (never the source)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="the main job on embedded data: synth data -> train b0 -> eval -> predict")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", default=None, help="classify: epochs (default: the demo recipe's)", **count)
    p.add_argument("--task", default="classify", choices=["classify", "segment", "detect"],
                   help="which job: classification (make demo), segmentation or detection")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript (checked against PyTorch)")
    p.add_argument("checkpoint", help="checkpoint file or folder (any supported format)")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output file (.onnx or .pt)")
    p.add_argument("--model", default=None, help="variant name, when the checkpoint carries no config", **variant)
    p.add_argument("--backbone", action="store_true", help="export the 4 pyramid maps (stage1..stage4) instead of logits")
    p.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX: dynamic batch, height and width (default on)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18-25 on the pinned exporter)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the checkpoint)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("flops", help="parameters and FLOPs (multiply-adds, the paper's convention) of classifiers, "
                                     "detectors and segmenters; or the complexity figure")
    p.add_argument("--model", default="all", help="a variant or 'all' (PVTv2 and PVTv1)", check=_variant_or_all,
                   **checked)
    p.add_argument("--task", default="classify", choices=["classify", "detect", "segment"],
                   help="classify: the classifier; detect: a detector (--kind); segment: Semantic FPN")
    p.add_argument("--kind", default=None, help="--task detect: the detector (default retinanet; maskrcnn, ...)",
                   check=_detector_kind, **checked)
    p.add_argument("--img-size", type=int, nargs="+", default=None, metavar="H [W]", check=_sides((1, 2)), **checked,
                   help="input height and width (default: 224; detect 1280 800 as get_flops.py; segment 512)")
    p.add_argument("--width", default=None, help="input width (older spelling of --img-size H W)", **size)
    p.add_argument("--num-classes", default=None, help="classes (default: ImageNet 1000, COCO 80, ADE20K 150)",
                   **count)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--scaling", action="store_true",
                   help="the complexity figure instead: GFLOPs against input scale for PVTv1-Small, PVTv2-B2, "
                        "PVTv2-B2-Li, ResNet-50 and ViT-Small/16 (JSON + log-log plot in --out)")
    p.add_argument("--out", default="benchmarks/results/complexity", help="--scaling: output folder")
    p.add_argument("--sizes", type=int, nargs="+", default=None, check=_sides(), **checked,
                   help="--scaling: square input sides (default 224 448 672 896 1120 1344)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("ablation", help="the PVTv2 paper's ablation (PVTv1-Small -> PVTv2-B2-Li): parameters and "
                                        "GFLOPs of each row's classifier and RetinaNet beside the paper's")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("bench", help="throughput/latency/memory, side by side with timm (classifiers) or "
                                     "torchvision's ResNet-50 models (detectors, Semantic FPN); or the complexity study")
    p.add_argument("--task", default="classify", choices=["classify", "detect", "segment"],
                   help="classify: against timm; detect / segment: inference against torchvision's ResNet-50 models")
    p.add_argument("--model", nargs="+", default=["pvt_v2_b0"], help="one or more variants (the backbones for "
                                                                     "detect / segment)")
    p.add_argument("--kind", nargs="+", default=None, help="detect: retinanet fasterrcnn maskrcnn fcos (default "
                   "retinanet); segment: the peer, fcn_resnet50 or deeplabv3_resnet50 (default fcn_resnet50)")
    p.add_argument("--batch-size", default=None, help="images per step (default 8; detect / segment 1)", **count)
    p.add_argument("--img-size", type=int, nargs="+", default=None, metavar="H [W]", check=_sides((1, 2)), **checked,
                   help="input side (default 224; detect 800 1216, segment 512: the test scales)")
    p.add_argument("--mode", nargs="+", default=["infer"], choices=["infer", "train"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "tf32", "bf16", "fp16", "bf16-weights"],
                   help="fp32: full float32; tf32: CUDA's TF32 tensor cores for float32 products (the CPU: as fp32); "
                        "bf16 / fp16: autocast; bf16-weights: the model cast to bfloat16 (inference; on the CPU "
                        "with oneDNN's fused kernels)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="cpu", **device)
    p.add_argument("--profile", action="store_true",
                   help="also where our model's time goes: torch.profiler's operator time by group (matrix products, "
                        "convolutions, attention, ...) and the top operators, after the timing")
    p.add_argument("--ceiling", action="store_true",
                   help="inference on the CPU: also the achieved GFLOP/s as a fraction of the machine's "
                        "matrix-product ceiling in that precision (measured first)")
    p.add_argument("--compare", default="timm", choices=["timm", "onnxruntime", "none"],
                   help="timm: timm's model with the same weights; onnxruntime: our own ONNX export run by ONNX Runtime "
                        "(CPU inference, float32)")
    p.add_argument("--peer-eager-fp32", action="store_true", help="run the peer as plain eager fp32 (a fixed baseline)")
    p.add_argument("--agreement", action="store_true", help="top-1 agreement with the fp32 path on real photographs")
    p.add_argument("--grad-checkpointing", action="store_true", help="--mode train: also run our model with "
                   "set_grad_checkpointing(True) and report the peak memory it saves")
    p.add_argument("--repeats", default=10, **count)
    p.add_argument("--warmup", default=3, **workers)
    p.add_argument("--threads", default=0, help="torch threads (0: torch's default)", **workers)
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--scaling", action="store_true", help="run the complexity study instead (SRA / linear / full)")
    p.add_argument("--out", default="benchmarks/scaling", help="--scaling: output folder")
    p.add_argument("--budget-gmacs", type=float, default=400.0, help="--scaling: skip points estimated above this")
    p.add_argument("--reference", action="store_true",
                   help="--scaling: also measure the unfused attention path (materialises the score matrices)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("models", help="list the variants with their parameter counts")
    p.add_argument("--family", default="all", help="pvt_v2 (v2), pvt_v1 (v1) or all")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command. The package's own errors (:class:`~pvtv2.errors.PVTv2Error`: bad flags,
    data, checkpoints...) print as one line with exit code 2; any other exception is a bug and
    keeps its traceback."""
    from .errors import PVTv2Error

    command = "pvtv2"
    try:
        args = build_parser().parse_args(argv)
        command = " ".join(["pvtv2"] + [getattr(args, k) for k in ("command", "data_command", "detect_command",
                                                                   "segment_command") if getattr(args, k, None)])
        return args.func(args)
    except PVTv2Error as e:
        rank = int(os.environ.get("RANK", "0"))  # under torchrun, say which process it was
        print(f"{f'[rank {rank}] ' if rank else ''}{command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
