"""The ``pvtv2`` command: parses arguments and delegates to the Python API."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_dataclass_flags(parser: argparse.ArgumentParser, fields, *, required=()) -> None:
    """One ``--flag`` per dataclass field, with the field's default and help."""
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)  # annotations are strings here (postponed evaluation)
        if kind == "bool":
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


def _add_train_flags(parser: argparse.ArgumentParser, fields) -> None:
    """A training command's flags: one per recipe field (``--data`` required), and
    ``--resume [PATH]`` (bare: OUTPUT/last.pt)."""
    _add_dataclass_flags(parser, [f for f in fields if f.name != "resume"], required=("data",))
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from a last.pt; without a value: OUTPUT/last.pt")


def _config_from_args(config_cls, fields, args):
    """The recipe dataclass filled from the flags that :func:`_add_train_flags` added."""
    return config_cls(**{f.name: getattr(args, f.name) for f in fields})


def _stream_records(records, done) -> int:
    """Print prediction records as JSON lines; then ``done(number of images that succeeded)``
    on standard error."""
    n = 0
    for record in records:
        print(json.dumps(record), flush=True)
        n += "error" not in record
    print(done(n), file=sys.stderr)
    return 0


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def cmd_train(args) -> int:
    from .classification import TrainConfig, train
    from .classification.recipe import config_fields

    result = train(_config_from_args(TrainConfig, config_fields(), args))
    if result:
        print(f"done: best val top-1 {result['best_top1']:.2f}%; results in {result['output']}")
    return 0


def cmd_eval(args) -> int:
    from .classification import evaluate_checkpoint

    _print_json(evaluate_checkpoint(args.data, args.checkpoint, model=args.model, img_size=args.img_size,
                                    batch_size=args.batch_size, workers=args.workers, device=args.device))
    return 0


def cmd_predict(args) -> int:
    from .classification.predict import predict

    sink = open(args.output, "w") if args.output else sys.stdout
    try:
        for record in predict(args.inputs, args.checkpoint, model=args.model, topk=args.topk, img_size=args.img_size,
                              batch_size=args.batch_size, workers=args.workers, device=args.device):
            sink.write(json.dumps(record) + "\n")
    finally:
        if args.output:
            sink.close()
    return 0


def cmd_synth(args) -> int:
    from .data import make_classification_dataset, make_segmentation_dataset

    if args.task == "detect":
        from .data import make_detection_dataset

        classes = args.classes if args.classes is not None else 3
        path = make_detection_dataset(args.out, classes=classes, train_images=args.train_images,
                                      val_images=args.val_images, size=args.size or 128, seed=args.seed)
        print(f"wrote a {classes}-class COCO-format detection dataset to {path}")
        return 0
    if args.task == "segment":
        classes = args.classes if args.classes is not None else 4
        path = make_segmentation_dataset(args.out, classes=classes, train_images=args.train_images,
                                         val_images=args.val_images, size=args.size or 64, seed=args.seed)
        print(f"wrote a {classes}-class segmentation dataset (ADE20K layout) to {path}")
        return 0
    classes = args.classes if args.classes is not None else 6
    path = make_classification_dataset(args.out, classes=classes, train_per_class=args.train_per_class,
                                       val_per_class=args.val_per_class, size=args.size or 48, seed=args.seed)
    print(f"wrote a {classes}-class dataset to {path}")
    return 0


def cmd_detect_train(args) -> int:
    from .detection import DetTrainConfig, train
    from .detection.recipe import config_fields

    result = train(_config_from_args(DetTrainConfig, config_fields(), args))
    print(f"done: best box AP {result['best_ap']:.3f}; results in {result['output']}")
    return 0


def cmd_detect_eval(args) -> int:
    from .detection.predict import evaluate_checkpoint

    result = evaluate_checkpoint(args.data, args.checkpoint, split=args.split, images=args.images, ann=args.ann,
                                 device=args.device, batch_size=args.batch_size, results_file=args.results)
    for iou_type in ("bbox", "segm"):
        if iou_type in result:
            print(f"{iou_type}:\n{result[iou_type]['summary']}")
    _print_json({k: ({"stats": v["stats"]} if isinstance(v, dict) else v) for k, v in result.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_detect_predict(args) -> int:
    from .detection.predict import predict

    records = predict(args.inputs, args.checkpoint, args.out, score_thresh=args.score_thresh, device=args.device)
    return _stream_records(records, lambda n: f"wrote detections of {n} image(s) to {args.out}")


def cmd_segment_train(args) -> int:
    from .segmentation import SegTrainConfig, train
    from .segmentation.recipe import config_fields

    result = train(_config_from_args(SegTrainConfig, config_fields(), args))
    print(f"done: best mIoU {result['best_miou']:.2f}%; results in {result['output']}")
    return 0


def cmd_segment_eval(args) -> int:
    from .segmentation.predict import evaluate_checkpoint, format_table

    result = evaluate_checkpoint(args.data, args.checkpoint, split=args.split, mode=args.mode,
                                 scale=tuple(args.scale) if args.scale else None, crop=args.crop,
                                 reduce_zero_label=args.reduce_zero_label, device=args.device)
    print(format_table(result))
    _print_json(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_segment_predict(args) -> int:
    from .segmentation.predict import predict

    records = predict(args.inputs, args.checkpoint, args.out, mode=args.mode,
                      scale=tuple(args.scale) if args.scale else None, crop=args.crop, device=args.device)
    return _stream_records(records, lambda n: f"wrote masks and overlays of {n} image(s) to {args.out}")


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
                             dynamic=args.dynamic, opset=args.opset)
    print(f"wrote {args.format} {'backbone' if args.backbone else 'classifier'} to {path} (checked against PyTorch)")
    return 0


def cmd_flops(args) -> int:
    from . import list_models
    from .bench.flops import flops_rows, format_rows

    if args.scaling:
        from .bench.complexity import format_table, write_study

        study = write_study(args.out, **({"sizes": tuple(args.sizes)} if args.sizes else {}))
        print(format_table(study))
        print(f"wrote {args.out}/complexity.json and {args.out}/complexity.png")
        return 0
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        raise ValueError(f"--img-size takes H or H W, got {len(args.img_size)} numbers")
    size = None
    if args.img_size is not None:
        h = args.img_size[0]
        size = (h, args.img_size[1] if len(args.img_size) == 2 else args.width or h)
    elif args.width is not None:
        raise ValueError("--width needs --img-size H (or give --img-size H W)")
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
    import torch

    from .bench.speed import Case, Setting, dumps, format_result, machine_info, run_case, top1_agreement

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scaling:
        from .bench.scaling import run_study

        print(f"scaling study on {args.device} -> {args.out}")
        summary = run_study(args.out, budget_gmacs=args.budget_gmacs, device=args.device, repeats=args.repeats,
                            reference=args.reference)
        for kind, e in summary["exponents"].items():
            t, m = e["time"], e["memory"]
            print(f"  {kind:16s} fitted exponent: time ~ pixels^{t:.2f}" if t is not None else f"  {kind:16s}: too few points",
                  f" memory ~ pixels^{m:.2f}" if m is not None else "")
        return 0
    ours = Setting(args.dtype, args.channels_last, args.compile)
    peer = Setting() if args.peer_eager_fp32 else Setting(args.dtype, args.channels_last, args.compile)
    results = []
    for name in args.model:
        for mode in args.mode:
            case = Case(model=name, batch_size=args.batch_size, img_size=args.img_size, mode=mode, device=args.device,
                        ours=ours, peer=peer, repeats=args.repeats, warmup=args.warmup)
            r = run_case(case, compare=args.compare == "timm")
            if args.agreement and mode == "infer":
                r["top1_agreement_vs_fp32"] = top1_agreement(name, ours, img_size=args.img_size, device=args.device)
            results.append(r)
            print(format_result(r) + (f" | top-1 agreement {r['top1_agreement_vs_fp32']:.1%}" if "top1_agreement_vs_fp32" in r else ""),
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(dumps([{"machine": machine_info(args.device)}] + results))
        print(f"wrote {args.json}")
    return 0


def cmd_models(args) -> int:
    from . import list_models
    from .registry import get_variant

    for name in list_models(family=args.family):
        v = get_variant(name)
        print(f"{name:14s} {v.family:7s} {v.num_params:>12,d} parameters  widths {list(v.embed_dims)}  "
              f"depths {list(v.depths)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import FORMAT_ALIASES, FORMATS
    from .classification.recipe import config_fields

    parser = argparse.ArgumentParser(prog="pvtv2", description="Pyramid Vision Transformer v2: models, training, tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an image classifier (official PVTv2 ImageNet recipe by default)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_flags(p, config_fields())
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a classifier checkpoint on an ImageFolder; prints JSON")
    p.add_argument("--data", required=True, help="folder with val/<class>/* (or the class folders themselves)")
    p.add_argument("--checkpoint", required=True, help="checkpoint (our best.safetensors, or any supported format)")
    p.add_argument("--model", default=None, help="variant name; optional when the checkpoint carries its config")
    p.add_argument("--img-size", type=int, default=None, help="eval size (default: the checkpoint's training size or 224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for images or folders, as JSON lines")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", default=None, help="variant name; optional when the checkpoint carries its config")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=None, help="write JSON lines here instead of standard output")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("data", help="embedded datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="generate a labelled dataset of shapes and textures (ImageFolder layout)")
    s.add_argument("--out", required=True)
    s.add_argument("--task", default="classify", choices=["classify", "segment", "detect"],
                   help="classify: ImageFolder of shapes; segment: ADE20K-style images + per-pixel labels; "
                        "detect: COCO-format boxes + instance masks")
    s.add_argument("--classes", type=int, default=None,
                   help="classify: number of classes, 2-8 (default 6); segment: background + shapes, 2-9 "
                        "(default 4); detect: 1-8 (default 3)")
    s.add_argument("--train-per-class", type=int, default=300, help="classify: training images per class")
    s.add_argument("--val-per-class", type=int, default=60, help="classify: validation images per class")
    s.add_argument("--train-images", type=int, default=200, help="segment, detect: training images")
    s.add_argument("--val-images", type=int, default=40, help="segment, detect: validation images")
    s.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default 48 classify, 64 segment, 128 detect)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)

    from .detection.recipe import config_fields as det_fields
    from .segmentation.recipe import config_fields as seg_fields

    p = sub.add_parser("detect", help="object detection / instance segmentation: train, eval, predict")
    dsub2 = p.add_subparsers(dest="detect_command", required=True)
    s = dsub2.add_parser("train", help="train RetinaNet / Faster R-CNN / Mask R-CNN (official 1x recipe by default)",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_flags(s, det_fields())
    s.set_defaults(func=cmd_detect_train)
    s = dsub2.add_parser("eval", help="COCO box AP (and mask AP) of a checkpoint: the 12-number summary + JSON")
    s.add_argument("--data", required=True, help="COCO-layout root")
    s.add_argument("--checkpoint", required=True, help="a detection run's best.safetensors")
    s.add_argument("--split", default="val", choices=["train", "val"])
    s.add_argument("--images", default=None, help="image folder (default DATA/{split}2017)")
    s.add_argument("--ann", default=None, help="instances JSON (default DATA/annotations/instances_{split}2017.json)")
    s.add_argument("--batch-size", type=int, default=2)
    s.add_argument("--device", default="auto")
    s.add_argument("--results", default=None, help="also write the detections (COCO result format) to this file")
    s.add_argument("--json", default=None, help="also write the evaluation as JSON to this file")
    s.set_defaults(func=cmd_detect_eval)
    s = dsub2.add_parser("predict", help="detections as JSON lines and images with boxes/masks drawn")
    s.add_argument("inputs", nargs="+", help="image files and/or folders")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True, help="folder for <stem>_det.png")
    s.add_argument("--score-thresh", type=float, default=0.5)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_detect_predict)

    p = sub.add_parser("segment", help="semantic segmentation with Semantic FPN: train, eval, predict")
    ssub = p.add_subparsers(dest="segment_command", required=True)
    s = ssub.add_parser("train", help="train Semantic FPN (official ADE20K 40k recipe by default)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_flags(s, seg_fields())
    s.set_defaults(func=cmd_segment_train)
    s = ssub.add_parser("eval", help="mIoU / mAcc / aAcc / per-class IoU of a checkpoint (table + JSON)")
    s.add_argument("--data", required=True, help="ADE20K-style root (images/, annotations/) or images/ + masks/ folder")
    s.add_argument("--checkpoint", required=True, help="a segmentation run's best.safetensors")
    s.add_argument("--split", default="val", choices=["train", "val"])
    s.add_argument("--mode", default="whole", choices=["whole", "slide"], help="whole-image or sliding-window inference")
    s.add_argument("--scale", type=int, nargs=2, default=None, help="test rescale (default: the training scale)")
    s.add_argument("--crop", type=int, default=None, help="sliding window size (default: the training crop)")
    s.add_argument("--reduce-zero-label", action=argparse.BooleanOptionalAction, default=None,
                   help="default: as in training")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", default=None, help="also write the JSON result to this file")
    s.set_defaults(func=cmd_segment_eval)
    s = ssub.add_parser("predict", help="colour masks and overlays for images or folders; JSON lines")
    s.add_argument("inputs", nargs="+", help="image files and/or folders")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True, help="folder for <stem>_mask.png and <stem>_overlay.png")
    s.add_argument("--mode", default="whole", choices=["whole", "slide"])
    s.add_argument("--scale", type=int, nargs=2, default=None)
    s.add_argument("--crop", type=int, default=None)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_segment_predict)

    p = sub.add_parser("convert", help="convert a checkpoint between formats")
    p.add_argument("src", help="file, folder or hub id")
    p.add_argument("dst", help="pvtv2/transformers: a folder (pvtv2 also a .safetensors file); "
                               "official/timm: a .pth, .pt, .bin or .safetensors file")
    p.add_argument("--to", default="pvtv2", choices=FORMATS + tuple(FORMAT_ALIASES),
                   help="target format ('ours' is the old name of 'pvtv2')")
    p.add_argument("--model", default=None, help="variant name, when the source carries no config")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination (never the source)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="the main job on embedded data: synth data -> train b0 -> eval -> predict")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=None, help="classify: epochs (default 30)")
    p.add_argument("--task", default="classify", choices=["classify", "segment", "detect"],
                   help="which job: classification (make demo), segmentation or detection")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript (checked against PyTorch)")
    p.add_argument("checkpoint", help="checkpoint file or folder (any supported format)")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output file (.onnx or .pt)")
    p.add_argument("--model", default=None, help="variant name, when the checkpoint carries no config")
    p.add_argument("--backbone", action="store_true", help="export the 4 pyramid maps (stage1..stage4) instead of logits")
    p.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX: dynamic batch, height and width (default on)")
    p.add_argument("--opset", type=int, default=18)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("flops", help="parameters and FLOPs (multiply-adds, the paper's convention) of classifiers, "
                                     "detectors and segmenters; or the complexity figure")
    p.add_argument("--model", default="all", help="a variant or 'all' (PVTv2 and PVTv1)")
    p.add_argument("--task", default="classify", choices=["classify", "detect", "segment"],
                   help="classify: the classifier; detect: a detector (--kind); segment: Semantic FPN")
    p.add_argument("--kind", default=None, help="--task detect: the detector (default retinanet; maskrcnn, ...)")
    p.add_argument("--img-size", type=int, nargs="+", default=None, metavar="H [W]",
                   help="input height and width (default: 224; detect 1280 800 as get_flops.py; segment 512)")
    p.add_argument("--width", type=int, default=None, help="input width (older spelling of --img-size H W)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes (default: ImageNet 1000, COCO 80, ADE20K 150)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--scaling", action="store_true",
                   help="the complexity figure instead: GFLOPs against input scale for PVTv1-Small, PVTv2-B2, "
                        "PVTv2-B2-Li, ResNet-50 and ViT-Small/16 (JSON + log-log plot in --out)")
    p.add_argument("--out", default="benchmarks/results/complexity", help="--scaling: output folder")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="--scaling: square input sides (default 224 448 672 896 1120 1344)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("ablation", help="the PVTv2 paper's ablation (PVTv1-Small -> PVTv2-B2-Li): parameters and "
                                        "GFLOPs of each row's classifier and RetinaNet beside the paper's")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("bench", help="throughput/latency/memory, side by side with timm; or the complexity study")
    p.add_argument("--model", nargs="+", default=["pvt_v2_b0"], help="one or more variants")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--mode", nargs="+", default=["infer"], choices=["infer", "train"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast precision")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare", default="timm", choices=["timm", "none"], help="run timm's model with the same weights")
    p.add_argument("--peer-eager-fp32", action="store_true", help="run the peer as plain eager fp32 (a fixed baseline)")
    p.add_argument("--agreement", action="store_true", help="top-1 agreement with the fp32 path on real photographs")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
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
    from .checkpoint import CheckpointError
    from .classification.data import DataError
    from .classification.train import TrainingError
    from .engine import TrainingStateError
    from .export import ExportError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, DataError, TrainingError, TrainingStateError, ExportError, FileNotFoundError, ValueError) as e:
        print(f"pvtv2 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
