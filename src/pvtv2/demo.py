"""``make demo`` / ``pvtv2 demo``: the main job on embedded data, end to end on a CPU.

Generates the synthetic shapes dataset, trains pvt_v2_b0 from scratch on the ``small`` recipe
(:data:`pvtv2.classification.recipe.RECIPES`: the official recipe scaled to a tiny problem, lr 1e-3 for
the batch of 32, the schedule stepped per update, the heavy ImageNet regularisers off), evaluates the
best checkpoint and predicts a few images.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .classification import TrainConfig, evaluate_checkpoint, predict, train
from .data import make_classification_dataset

#: The ``small`` recipe plus the demo's own choices: the 48 px images' size, horizontal flips (a
#: mirrored shape is still its class) and a CPU run.
DEMO_RECIPE = dict(recipe="small", model="pvt_v2_b0", img_size=48, hflip=True, workers=2, device="cpu", seed=0)


def _prepare(out: Path, what: str, make) -> tuple[Path, Path, dict]:
    """``(data folder, run folder, run options)``: the dataset is generated with ``make(folder)``
    unless there; an interrupted demo continues where it stopped, one that never saved starts over."""
    data, run = out / "data", out / "train"
    if not (data / "synth.json").exists():
        print(f"[1/4] generating {what} in {data}", flush=True)
        make(data)
    else:
        print(f"[1/4] using {what} in {data}", flush=True)
    options = {"resume": "auto"} if (run / "last.pt").exists() else {"overwrite": True}
    return data, run, dict(data=str(data), output=str(run), **options)


def run_demo(out: Path, *, epochs: int | None = None) -> dict:
    start = time.perf_counter()
    data, run, options = _prepare(out, "the synthetic shapes dataset", make_classification_dataset)
    recipe = dict(DEMO_RECIPE, **options)
    if epochs:
        recipe["epochs"] = epochs
    config = TrainConfig(**recipe).resolved()
    print(f"[2/4] training {config.model} for {config.epochs} epochs on the CPU ({config.recipe} recipe)", flush=True)
    result = train(config)
    best = run / "best.safetensors"
    print("[3/4] evaluating the best checkpoint", flush=True)
    scores = evaluate_checkpoint(data, best, device="cpu")
    print(json.dumps(scores))
    print("[4/4] predicting a few validation images", flush=True)
    samples = [sorted((data / "val" / c).iterdir())[0] for c in sorted(p.name for p in (data / "val").iterdir() if p.is_dir())]
    records = list(predict(samples, best, topk=3))
    pred_path = out / "predictions.jsonl"
    pred_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    for r in records:
        print(f"  {Path(r['path']).parent.name:>9s}/{Path(r['path']).name} -> {r['top'][0]['class']} ({r['top'][0]['prob']:.2f})")
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min: val top-1 {scores['top1']:.1f}%\n"
          f"results:\n  metrics      {run / 'metrics.jsonl'}\n  curves       {run / 'curves.png'}\n"
          f"  best model   {best}\n  resume state {run / 'last.pt'}\n  config       {run / 'config.json'}\n"
          f"  predictions  {pred_path}", flush=True)
    return {"scores": scores, "train": result, "predictions": str(pred_path)}


SEGMENT_RECIPE = dict(model="pvt_v2_b0", iters=300, batch_size=8, scale=(64, 64), crop=64, ratio_range=(0.75, 1.33),
                      lr=1e-3, warmup_iters=20, eval_interval=100, checkpoint_interval=50, drop_path=0.0, workers=2,
                      device="cpu", seed=0)

DETECT_RECIPE = dict(kind="retinanet", model="pvt_v2_b0", epochs=10, steps=(8, 9), batch_size=4, lr=2e-4, clip_grad=10.0,
                     warmup_iters=60, min_size=128, max_size=128, drop_path=0.0, workers=1, device="cpu", seed=0)


def run_segment_demo(out: Path) -> dict:
    """Synthetic shapes with per-pixel labels -> Semantic FPN + b0 -> eval -> colour masks."""
    from .data import make_segmentation_dataset
    from .segmentation import SegTrainConfig, evaluate_checkpoint, predict, train
    from .segmentation.evaluate import format_table

    start = time.perf_counter()
    data, run, options = _prepare(out, "the synthetic segmentation set", make_segmentation_dataset)
    recipe = dict(SEGMENT_RECIPE, **options)
    print(f"[2/4] training Semantic FPN + {recipe['model']} for {recipe['iters']} iterations on the CPU", flush=True)
    train(SegTrainConfig(**recipe))
    best = run / "best.safetensors"
    print("[3/4] evaluating the best checkpoint", flush=True)
    scores = evaluate_checkpoint(data, best, device="cpu")
    print(format_table(scores))
    print("[4/4] writing masks and overlays for a few validation images", flush=True)
    images = sorted((data / "images" / "validation").iterdir())[:4]
    records = list(predict(images, best, out / "predictions"))
    minutes = (time.perf_counter() - start) / 60
    print(f"\nsegmentation demo finished in {minutes:.1f} min: val mIoU {scores['mIoU']:.1f}%\n"
          f"results:\n  metrics      {run / 'metrics.jsonl'}\n  curves       {run / 'curves.png'}\n"
          f"  best model   {best}\n  masks        {out / 'predictions'}", flush=True)
    return {"scores": scores, "predictions": records}


def run_detect_demo(out: Path) -> dict:
    """Synthetic COCO set -> RetinaNet + b0 -> COCO eval -> pictures with boxes."""
    from .data import make_detection_dataset
    from .detection import DetTrainConfig, evaluate_checkpoint, predict, train

    start = time.perf_counter()
    data, run, options = _prepare(out, "the synthetic COCO-format set",
                                  lambda folder: make_detection_dataset(folder, train_images=120, val_images=30))
    recipe = dict(DETECT_RECIPE, **options)
    print(f"[2/4] training {recipe['kind']} + {recipe['model']} for {recipe['epochs']} epochs on the CPU", flush=True)
    train(DetTrainConfig(**recipe))
    best = run / "best.safetensors"
    print("[3/4] COCO evaluation of the best checkpoint", flush=True)
    report = evaluate_checkpoint(data, best, device="cpu")
    print(report["bbox"]["summary"])
    print("[4/4] drawing detections on a few validation images", flush=True)
    images = sorted((data / "val2017").iterdir())[:4]
    records = list(predict(images, best, out / "predictions", score_thresh=0.4))
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndetection demo finished in {minutes:.1f} min: box AP {report['bbox']['stats']['AP']:.3f}, "
          f"AP50 {report['bbox']['stats']['AP50']:.3f}\n"
          f"results:\n  metrics      {run / 'metrics.jsonl'}\n  curves       {run / 'curves.png'}\n"
          f"  best model   {best}\n  pictures     {out / 'predictions'}", flush=True)
    return {"report": report, "predictions": records}
