"""``pvtv2 train``: the classification training driver (ConvNeXt/DeiT-style main) and its
epoch loop; the run folder, resume and checks are the shared ones of :mod:`pvtv2.engine`."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from timm.data import Mixup
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_file
from ..engine import (FP16_NONFINITE_PATIENCE, DistEnv, LossMeter, RunFolder, SeededSampler, SeededSamples,
                      TrainingStateError, adamw_options, autocast, begin_epoch, launch, make_scaler, optimizer_step,
                      progress, require_samples, resolve_amp, seed_everything, seed_worker)
from ..errors import DataError
from ..factory import create_model
from ..model import list_models
from .data import (SkippingImageFolder, check_image_folders, collate_skipping, eval_transform, train_transform,
                   typical_side, warn_skipped)
from .evaluate import evaluate
from .recipe import TrainConfig, advice


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    criterion: Callable,
    *,
    env: DistEnv,
    epoch: int,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float = 0.0,
    mixup_fn: Callable | None = None,
    ema: Any = None,
    on_step: Callable[[int], None] | None = None,
    show_progress: bool = True,
    log_every: int = 20,
) -> dict[str, Any]:
    """Train for one pass over ``loader`` (batches of ``(images (B, 3, H, W), targets (B,),
    skipped files)``); returns mean loss, image count (over processes), seconds, skipped files and
    skipped steps. The loss is read every ``log_every`` steps and at the end (see
    :class:`~pvtv2.engine.LossMeter`): a NaN/inf loss then raises
    :class:`~pvtv2.engine.NonFiniteLossError` on every process (under fp16, only a run of them).

    A step is skipped by every process when any one has no image left in its batch (all
    unreadable), so that none waits alone in the gradient all-reduce."""
    model.train()
    device = env.device
    meter = LossMeter(env, patience=FP16_NONFINITE_PATIENCE if scaler is not None else 0)
    totals = {"loss": 0.0, "weight": 0.0, "nonfinite": 0.0}
    seen, skipped, skipped_steps = 0, [], 0
    where = lambda step: f"epoch {epoch}, step {step}"  # noqa: E731
    start = time.perf_counter()
    bar = progress(loader, desc=f"train {epoch}", enabled=show_progress and env.is_main)
    step = -1
    for step, (images, targets, bad) in enumerate(bar):
        if on_step is not None:
            on_step(step)  # per-step learning-rate schedule
        skipped += bad
        if images is not None and mixup_fn is not None and len(images) % 2:  # Mixup pairs images up: needs an even batch
            images, targets = images[:-1], targets[:-1]
        if not env.everyone(images is not None and len(images) > 0):
            skipped_steps += 1
        else:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if mixup_fn is not None:
                images, targets = mixup_fn(images, targets)
            with autocast(device, amp):
                loss = criterion(model(images), targets)
            optimizer_step(loss, optimizer, model.parameters(), scaler=scaler, clip_grad=clip_grad)
            if ema is not None:
                ema.update(model)
            meter.update(loss, step, weight=len(images))
            seen += len(images)
        if (step + 1) % log_every == 0:
            window = meter.read(where, step)
            for k in totals:
                totals[k] += window[k]
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{window['loss'] / max(window['weight'], 1):.3f}",
                            lr=f"{max(g['lr'] for g in optimizer.param_groups):.2e}",
                            img_s=f"{seen * env.world_size / max(elapsed, 1e-9):.0f}")
    window = meter.read(where, step)
    for k in totals:
        totals[k] += window[k]
    seconds = time.perf_counter() - start
    loss_sum, weight, seen_all, nonfinite, skipped_all = env.all_reduce_sum(
        [totals["loss"], totals["weight"], float(seen), totals["nonfinite"], float(len(skipped))])
    return {"loss": loss_sum / max(weight, 1), "images": int(seen_all), "seconds": seconds, "skipped": skipped,
            "skipped_count": int(skipped_all), "skipped_steps": skipped_steps + int(nonfinite)}


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
                  pin_memory=env.device.type == "cuda")
    # Every sample seeded from (seed, epoch, rank, position): the workers can persist between epochs. The
    # loader's own generator: persistent workers draw their base seed once, not every epoch, and that
    # draw must not shift the global RNG (drop path) of the first epoch a resumed run trains.
    sampler = SeededSampler(sampler, cfg.seed, env.rank)
    train_loader = DataLoader(SeededSamples(train_set), batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                              persistent_workers=cfg.workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
                              **common)
    if len(train_loader) == 0:
        raise DataError(f"{root / 'train'}: {len(train_set)} images give no full batch of {cfg.batch_size}"
                        f"{' per process' if env.distributed else ''}; lower --batch-size")
    # Each process evaluates a disjoint shard; evaluate() sums the counts.
    val_shard = torch.utils.data.Subset(val_set, list(range(env.rank, len(val_set), env.world_size)))
    val_loader = DataLoader(val_shard, batch_size=max(1, int(1.5 * cfg.batch_size)), shuffle=False, **common)
    return train_loader, val_loader, sampler


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a classifier; returns the final record and the output paths."""
    return launch(cfg, _train, models=list_models(family="all"))


def _train(cfg: TrainConfig, env: DistEnv, run: RunFolder) -> dict[str, Any]:
    amp = resolve_amp(cfg.amp, env.device)
    classes = check_image_folders(cfg.data)
    seed_everything(cfg.seed)
    model = create_model(cfg.model, num_classes=len(classes), drop_path_rate=cfg.drop_path,
                         pretrained=cfg.pretrained_weights)
    model.to(env.device)
    total_batch = cfg.batch_size * env.world_size
    lr = cfg.lr * total_batch / 512.0  # main.py: linear scaling rule
    # Layer-wise lr decay: timm groups the parameters by model.group_matcher() (stem, stages, head)
    # and scales each group's lr, which its schedulers apply (param_group["lr_scale"]).
    optimizer = create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=cfg.weight_decay, eps=cfg.opt_eps,
                                    layer_decay=cfg.layer_decay if cfg.layer_decay < 1 else None,
                                    **adamw_options(env.device))
    scaler = make_scaler(amp, env.device)
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
    state = run.restore(meta, model, optimizer, scaler)
    if state is not None:
        for group in optimizer.param_groups:  # the schedule follows this run's --lr (as timm's train.py)
            group["initial_lr"] = group["lr"] = lr
        if ema is not None:
            if not state.get("ema"):
                raise TrainingStateError(f"--resume {run.kept[0]}: --ema is on but the checkpoint has no EMA weights")
            ema.load_state_dict(state["ema"])
        start_epoch, best_top1, history = state["epoch"] + 1, state["best_top1"], state["history"]
        run.say(f"resumed from {run.kept[0]} at epoch {start_epoch}")

    ddp_model = env.wrap(model)
    train_loader, val_loader, sampler = _loaders(cfg, env, classes)
    # Per epoch (official) or per step: t counts epochs or optimiser updates.
    unit = len(train_loader) if cfg.sched_per_step else 1
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * unit, lr_min=cfg.min_lr, warmup_lr_init=cfg.warmup_lr,
                                  warmup_t=cfg.warmup_epochs * unit, cycle_limit=1, t_in_epochs=True)
    run.begin({**cfg.to_dict(), "lr_scaled": lr}, history, amp=amp, classes=classes, what=cfg.model,
              images=len(train_loader.dataset), plan=f"{cfg.recipe} recipe, lr {lr:.3g}, {cfg.epochs} epochs")
    if env.is_main and cfg.recipe == "imagenet":
        train_set = train_loader.dataset.dataset
        tip = advice(cfg, images=len(train_set), image_side=typical_side([p for p, _ in train_set.samples]),
                     lr_scaled=lr)
        if tip:
            warnings.warn(tip, stacklevel=1)

    record: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        begin_epoch(cfg.seed, epoch, env.rank, sampler)
        scheduler.step(epoch * unit)
        on_step = (lambda step, e=epoch: scheduler.step(e * unit + step)) if cfg.sched_per_step else None
        with run.stopping_on_nonfinite_loss():
            stats = train_one_epoch(ddp_model, train_loader, optimizer, criterion, env=env, epoch=epoch, amp=amp,
                                    scaler=scaler, clip_grad=cfg.clip_grad, mixup_fn=mixup_fn, ema=ema,
                                    on_step=on_step, show_progress=cfg.progress, log_every=cfg.log_every)
        require_samples(stats["images"], stats["skipped"], f"epoch {epoch}: training on {Path(cfg.data) / 'train'}")
        val = evaluate(model, val_loader, env=env, amp=amp, show_progress=cfg.progress)
        require_samples(val["images"], val["skipped"], f"epoch {epoch}: validation on {Path(cfg.data) / 'val'}")
        if env.is_main:
            warn_skipped(stats["skipped"] + val["skipped"], f"epoch {epoch}")
        run.say_skipped_steps(stats["skipped_steps"], f"epoch {epoch}")
        record = {
            "epoch": epoch, "train_loss": round(stats["loss"], 6), "val_loss": round(val["loss"], 6),
            "val_top1": round(val["top1"], 4), "val_top5": round(val["top5"], 4),
            "lr": max(g["lr"] for g in optimizer.param_groups), "epoch_seconds": round(stats["seconds"], 3),
            "images_per_second": round(stats["images"] / max(stats["seconds"], 1e-9), 2),
            "skipped_images": stats["skipped_count"] + len(val["skipped"]), "skipped_steps": stats["skipped_steps"],
        }
        if ema is not None:
            ev = evaluate(ema.module, val_loader, env=env, amp=amp, show_progress=False, desc="eval ema")
            record.update(ema_val_top1=round(ev["top1"], 4), ema_val_top5=round(ev["top5"], 4))
        if record["val_top1"] > best_top1:
            best_top1 = record["val_top1"]
            extra = {"input_size": cfg.img_size, "crop_pct": cfg.eval_crop_pct, "epoch": epoch, "val_top1": best_top1}
            run.save_best(lambda path: save_file(model, path, class_names=classes, extra=extra))
        run.log(record)
        run.save_last({
            "meta": meta, "epoch": epoch, "best_top1": best_top1, "history": run.metrics.history,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "config": cfg.to_dict(), "class_names": classes,
        }, at=f"epoch {epoch}")
        run.say(f"epoch {epoch}: train_loss {record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}  "
                f"top1 {record['val_top1']:.2f}%  top5 {record['val_top5']:.2f}%  lr {record['lr']:.2e}  "
                f"{record['images_per_second']:.1f} img/s")
        env.barrier()
    return {"output": str(run.path), "last": record, "best_top1": best_top1, "best": str(run.best),
            "metrics": str(run.metrics.path)}
