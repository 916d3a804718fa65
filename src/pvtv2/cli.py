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
                      type=float if "float" in kind else int if kind.startswith("int") else str)
        for key in ("nargs", "choices"):
            if key in f.metadata:
                kwargs[key] = f.metadata[key]
        if f.name in required:
            kwargs.update(required=True, default=None)
        parser.add_argument(flag, **kwargs)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def cmd_train(args) -> int:
    from .classification import TrainConfig, train
    from .classification.recipe import config_fields

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in config_fields()})
    if cfg.resume is None and args.resume_flag:
        cfg.resume = args.resume_flag
    result = train(cfg)
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
    from .data import make_classification_dataset

    path = make_classification_dataset(args.out, classes=args.classes, train_per_class=args.train_per_class,
                                       val_per_class=args.val_per_class, size=args.size, seed=args.seed)
    print(f"wrote a {args.classes}-class dataset to {path}")
    return 0


def cmd_convert(args) -> int:
    from .checkpoint import convert

    dst = convert(args.src, args.dst, to=args.to, name=args.model)
    print(f"wrote {args.to} checkpoint to {dst}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs)
    return 0


def cmd_export(args) -> int:
    from .export import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, format=args.format, model=args.model, backbone=args.backbone,
                             dynamic=args.dynamic, opset=args.opset)
    print(f"wrote {args.format} {'backbone' if args.backbone else 'classifier'} to {path} (checked against PyTorch)")
    return 0


def cmd_models(args) -> int:
    from . import create_model, list_models

    for name in list_models():
        m = create_model(name)
        print(f"{name:14s} {sum(p.numel() for p in m.parameters()):>12,d} parameters  widths {m.embed_dims}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint import FORMATS
    from .classification.recipe import config_fields

    parser = argparse.ArgumentParser(prog="pvtv2", description="Pyramid Vision Transformer v2: models, training, tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an image classifier (official PVTv2 ImageNet recipe by default)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_dataclass_flags(p, [f for f in config_fields() if f.name != "resume"], required=("data",))
    p.add_argument("--resume", dest="resume", nargs="?", const="auto", default=None,
                   help="resume from a last.pt; without a value: OUTPUT/last.pt")
    p.set_defaults(func=cmd_train, resume_flag=None)

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
    s.add_argument("--task", default="classify", choices=["classify"])
    s.add_argument("--classes", type=int, default=6, help="number of classes, 2-8")
    s.add_argument("--train-per-class", type=int, default=300)
    s.add_argument("--val-per-class", type=int, default=60)
    s.add_argument("--size", type=int, default=48, help="image side in pixels")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)

    p = sub.add_parser("convert", help="convert a checkpoint between formats")
    p.add_argument("src", help="file, folder or hub id")
    p.add_argument("dst")
    p.add_argument("--to", default="ours", choices=FORMATS)
    p.add_argument("--model", default=None, help="variant name, when the source carries no config")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="the main job on embedded data: synth data -> train b0 -> eval -> predict")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=None)
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

    p = sub.add_parser("models", help="list the variants with their parameter counts")
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
