"""``pvtv2 train``: the classification training driver (ConvNeXt/DeiT-style main)."""
from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_file
from ..errors import TrainingError
from ..fileio import atomic_write
from ..engine import (DistEnv, MetricsLog, TrainingStateError, init_distributed, load_training_state,
                      restore_training_state, plot_curves, resolve_amp, save_training_state, seed_everything,
                      seed_worker)
from ..engine.distributed import cleanup_distributed
from ..engine.seeding import epoch_seed
from ..factory import create_model
from ..model import VARIANTS
from .data import (DataError, SkippingImageFolder, check_image_folders, collate_skipping, eval_transform,
                   train_transform, warn_skipped)
from .engine import NonFiniteLossError, evaluate, train_one_epoch
from .recipe import TrainConfig


def _loaders(cfg: TrainConfig, env: DistEnv, classes: list[str]):
    root = Path(cfg.data)
    train_set = SkippingImageFolder(root / "train", train_transform(cfg))
    val_set = SkippingImageFolder(root / "val", eval_transform(cfg.img_size, cfg.eval_crop_pct), classes=classes)
    if cfg.repeated_aug:
        # DeiT's RASampler rounds the epoch down to a multiple of 256 images; small sets keep all.
        rounding = 256 if len(train_set) >= 256 * env.world_size else 0
        sampler = RepeatAugSampler(train_set, num_replicas=env.world_size, rank=env.rank, selected_round=rounding)
    else:
        sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed)
    common = dict(num_workers=cfg.workers, collate_fn=collate_skipping, worker_init_fn=seed_worker,
                  pin_memory=env.device.type == "cuda", persistent_workers=False)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **common)
    if len(train_loader) == 0:
        raise DataError(f"{root / 'train'}: {len(train_set)} images give no full batch of {cfg.batch_size}"
                        f"{' per process' if env.distributed else ''}; lower --batch-size")
    # Each process evaluates a disjoint shard; evaluate() sums the counts.
    val_shard = torch.utils.data.Subset(val_set, list(range(env.rank, len(val_set), env.world_size)))
    val_loader = DataLoader(val_shard, batch_size=max(1, int(1.5 * cfg.batch_size)), shuffle=False, **common)
    return train_loader, val_loader, sampler


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a classifier; returns the final record and the output paths."""
    env = init_distributed(cfg.device)
    try:
        return _train(cfg.resolved(), env)
    finally:
        cleanup_distributed()


def _train(cfg: TrainConfig, env: DistEnv) -> dict[str, Any]:
    if cfg.model not in VARIANTS:
        raise ValueError(f"unknown model {cfg.model!r}; known models: {', '.join(VARIANTS)}")
    amp = resolve_amp(cfg.amp, env.device)
    out = Path(cfg.output)
    classes = check_image_folders(cfg.data)
    seed_everything(cfg.seed)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)

    model = create_model(cfg.model, num_classes=len(classes), drop_path_rate=cfg.drop_path,
                         pretrained=(True if str(cfg.pretrained).lower() == "true" else cfg.pretrained) or None)
    model.to(env.device)
    total_batch = cfg.batch_size * env.world_size
    lr = cfg.lr * total_batch / 512.0  # main.py: linear scaling rule
    optimizer = create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=cfg.weight_decay, eps=cfg.opt_eps)
    scaler = torch.amp.GradScaler(env.device.type) if amp == "fp16" else None
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None

    mixup_fn = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup_fn = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                         switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.smoothing,
                         num_classes=len(classes))
        criterion = SoftTargetCrossEntropy()  # smoothing happens inside Mixup
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()

    meta = {"task": "classify", "model": cfg.model, "classes": classes, "img_size": cfg.img_size}
    start_epoch, best_top1, history = 0, -1.0, []
    if cfg.resume:
        path = out / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
        state = load_training_state(path, expect=meta)
        restore_training_state(state, model, optimizer, scaler)
        for group in optimizer.param_groups:  # the schedule follows this run's --lr (as timm's train.py)
            group["initial_lr"] = group["lr"] = lr
        if ema is not None:
            if not state.get("ema"):
                raise TrainingStateError(f"--resume {path}: --ema is on but the checkpoint has no EMA weights")
            ema.load_state_dict(state["ema"])
        start_epoch, best_top1, history = state["epoch"] + 1, state["best_top1"], state["history"]
        if env.is_main:
            print(f"resumed from {path} at epoch {start_epoch}")

    ddp_model = env.wrap(model)
    train_loader, val_loader, sampler = _loaders(cfg, env, classes)
    # Per epoch (official) or per step: t counts epochs or optimiser updates.
    unit = len(train_loader) if cfg.sched_per_step else 1
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * unit, lr_min=cfg.min_lr, warmup_lr_init=cfg.warmup_lr,
                                  warmup_t=cfg.warmup_epochs * unit, cycle_limit=1, t_in_epochs=True)
    log = MetricsLog(out / "metrics.jsonl", history)
    if env.is_main:
        log.flush()  # on resume, drop any line written after the checkpoint
        atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(
            {**cfg.to_dict(), "lr_scaled": lr, "world_size": env.world_size, "amp_resolved": amp,
             "classes": classes}, indent=2)))
        print(f"training {cfg.model} on {len(train_loader.dataset)} images, {len(classes)} classes, "
              f"{env.world_size} process(es), lr {lr:.3g}, {cfg.epochs} epochs -> {out}")

    record: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        # Everything random in an epoch follows from (seed, epoch, rank): a resumed run repeats it.
        seed_everything(epoch_seed(cfg.seed, epoch, env.rank))
        sampler.set_epoch(epoch)
        scheduler.step(epoch * unit)
        on_step = (lambda step, e=epoch: scheduler.step(e * unit + step)) if cfg.sched_per_step else None
        try:
            stats = train_one_epoch(ddp_model, train_loader, optimizer, criterion, env=env, epoch=epoch, amp=amp,
                                    scaler=scaler, clip_grad=cfg.clip_grad, mixup_fn=mixup_fn, ema=ema,
                                    on_step=on_step, show_progress=cfg.progress)
        except NonFiniteLossError as e:
            kept = out / "last.pt"
            raise TrainingError(f"{e}; training stopped. "
                                + (f"The last good checkpoint is {kept} (epoch {start_epoch - 1 if epoch == start_epoch else epoch - 1}); "
                                   if kept.exists() else "No checkpoint was written yet; ")
                                + "try a lower --lr or --clip-grad 1.0") from None
        val = evaluate(model, val_loader, env=env, amp=amp, show_progress=cfg.progress)
        warn_skipped(stats["skipped"] + val["skipped"], f"epoch {epoch}")
        record = {
            "epoch": epoch, "train_loss": round(stats["loss"], 6), "val_loss": round(val["loss"], 6),
            "val_top1": round(val["top1"], 4), "val_top5": round(val["top5"], 4),
            "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(stats["seconds"], 3),
            "images_per_second": round(stats["images"] / max(stats["seconds"], 1e-9), 2),
            "skipped_images": len(stats["skipped"]) + len(val["skipped"]),
        }
        if ema is not None:
            ev = evaluate(ema.module, val_loader, env=env, amp=amp, show_progress=False, desc="eval ema")
            record.update(ema_val_top1=round(ev["top1"], 4), ema_val_top5=round(ev["top5"], 4))
        if env.is_main:
            extra = {"input_size": cfg.img_size, "crop_pct": cfg.eval_crop_pct, "epoch": epoch, "val_top1": record["val_top1"]}
            if record["val_top1"] > best_top1:
                best_top1 = record["val_top1"]
                save_file(model, out / "best.safetensors", class_names=classes, extra=extra)
            log.append(record)
            save_training_state(out / "last.pt", {
                "meta": meta, "epoch": epoch, "best_top1": best_top1, "history": log.history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "config": cfg.to_dict(), "class_names": classes,
            })
            plot_curves(log.history, out / "curves.png")
            print(f"epoch {epoch}: train_loss {record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}  "
                  f"top1 {record['val_top1']:.2f}%  top5 {record['val_top5']:.2f}%  lr {record['lr']:.2e}  "
                  f"{record['images_per_second']:.1f} img/s", flush=True)
        env.barrier()
    return {"output": str(out), "last": record, "best_top1": best_top1,
            "best": str(out / "best.safetensors"), "metrics": str(out / "metrics.jsonl")}


def evaluate_checkpoint(data: str | Path, checkpoint: str | Path, *, model: str | None = None, img_size: int | None = None,
                        batch_size: int = 64, workers: int = 2, device: str = "auto", amp: str = "none") -> dict[str, Any]:
    """``pvtv2 eval``: accuracy of a checkpoint on ``data/val`` (or ``data`` itself if it holds class folders)."""
    from .predict import load_classifier

    env = DistEnv(device=init_distributed(device).device)
    net, names, size, crop = load_classifier(checkpoint, model, device=str(env.device))
    root = Path(data)
    folder = root / "val" if (root / "val").is_dir() else root
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    unknown = [c for c in present if c not in names]
    if unknown:
        raise DataError(f"{folder} has class folder(s) {unknown[:5]} that the checkpoint does not know "
                        f"(its classes: {names[:10]}{'...' if len(names) > 10 else ''})")
    dataset = SkippingImageFolder(folder, eval_transform(img_size or size, crop), classes=names)
    if len(dataset) == 0:
        raise DataError(f"{folder}: no images found")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping)
    res = evaluate(net, loader, env=env, amp=amp)
    warn_skipped(res["skipped"], str(folder))
    return {"top1": round(res["top1"], 4), "top5": round(res["top5"], 4), "loss": round(res["loss"], 6),
            "images": res["images"], "skipped": len(res["skipped"])}


