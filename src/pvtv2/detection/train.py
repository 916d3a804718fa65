"""``pvtv2 detect train``: epoch-based detector training (MMDetection's step schedules, 1x or 3x:
linear warm-up by iteration, step decay by epoch), COCO evaluation after epochs."""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..engine import (FP16_NONFINITE_PATIENCE, DistEnv, LossMeter, RunFolder, SeededSampler, SeededSamples,
                      adamw_options, autocast, begin_epoch, launch, make_scaler, optimizer_step, progress,
                      require_samples, resolve_amp, seed_everything, seed_worker)
from ..errors import DataError
from ..model import list_models
from .augment import Flip, MultiScaleCrop
from .data import CocoDetection, coco_paths, collate_detection
from .evaluate import coco_evaluate, predict_dataset
from .model import MASK_KINDS, create_detector, save_detector
from .recipe import DetTrainConfig


def step_lr(cfg: DetTrainConfig, epoch: int, it: int) -> float:
    """MMDetection's step policy with linear warm-up: ``it`` counts iterations from the start."""
    lr = cfg.lr * cfg.gamma ** sum(epoch >= s for s in cfg.steps)
    if it < cfg.warmup_iters:
        lr *= 1 - (1 - cfg.warmup_ratio) * (1 - it / cfg.warmup_iters)
    return lr


def param_groups(model: nn.Module, weight_decay: float, no_decay_keys: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """AdamW parameter groups as mmcv's ``paramwise_cfg.custom_keys`` with ``decay_mult=0``: a
    trainable parameter whose full name contains one of ``no_decay_keys`` (``norm`` matches every
    ``...norm1.weight``) gets no weight decay. Empty groups are left out (one group without keys)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name for k in no_decay_keys) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def train_augment(cfg: DetTrainConfig):
    """The training images' augmentation of ``cfg.augmentation`` (:mod:`pvtv2.detection.augment`)."""
    if cfg.augmentation == "multiscale_crop":
        return MultiScaleCrop(flip_prob=cfg.flip, short_sides=cfg.crop_resize, crop_range=cfg.crop_range,
                              max_size=cfg.max_size)
    return Flip(flip_prob=cfg.flip)


def iou_types(kind: str) -> tuple[str, ...]:
    """What COCO evaluation scores for a detector: boxes, and masks for Mask R-CNN."""
    return ("bbox", "segm") if kind in MASK_KINDS else ("bbox",)


def train(cfg: DetTrainConfig) -> dict[str, Any]:
    """Train a detector; returns the last record, the best box AP and the output paths."""
    return launch(cfg, _train, models=list_models(family="all"),
                  curves=dict(loss_keys=("train_loss",), score_label="COCO AP",
                              score_keys=tuple(f"{t}_{m}" for t in iou_types(cfg.kind) for m in ("AP", "AP50"))))


def _datasets(cfg: DetTrainConfig) -> tuple[CocoDetection, CocoDetection]:
    masks = cfg.kind in MASK_KINDS
    img_dir, ann = coco_paths(cfg.data, "train", images=cfg.train_images, ann=cfg.train_ann)
    train_set = CocoDetection(img_dir, ann, train=True, masks=masks, augment=train_augment(cfg))
    img_dir, ann = coco_paths(cfg.data, "val", images=cfg.val_images, ann=cfg.val_ann)
    val_set = CocoDetection(img_dir, ann, train=False, masks=masks)
    if train_set.cat_ids != val_set.cat_ids:
        raise DataError(f"the training and validation files have different categories: {train_set.cat_ids[:10]} vs "
                        f"{val_set.cat_ids[:10]}")
    return train_set, val_set


def _train(cfg: DetTrainConfig, env: DistEnv, run: RunFolder) -> dict[str, Any]:
    per_proc = env.split_batch(cfg.batch_size)
    amp = resolve_amp(cfg.amp_on(env.device.type), env.device)
    train_set, val_set = _datasets(cfg)
    if env.is_main:
        train_set.warn()
        val_set.warn()
    seed_everything(cfg.seed)
    model = create_detector(cfg.kind, cfg.model, len(train_set.class_names), pretrained_backbone=cfg.pretrained_weights,
                            drop_path_rate=cfg.drop_path, min_size=cfg.min_size, max_size=cfg.max_size)
    if env.distributed and env.device.type == "cuda":  # the cascade's box heads have BatchNorm (SyncBN in the config)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(env.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.no_decay_keys), lr=cfg.lr,
                                  **adamw_options(env.device))
    scaler = make_scaler(amp, env.device)

    meta = {"task": "detect", "kind": cfg.kind, "model": cfg.model, "classes": train_set.class_names}
    start_epoch, best, history = 0, -1.0, []
    state = run.restore(meta, model, optimizer, scaler)
    if state is not None:
        start_epoch, best, history = state["epoch"] + 1, state["best_ap"], state["history"]
        run.say(f"resumed from {run.kept[0]} at epoch {start_epoch}")

    ddp_model = env.wrap(model)
    sampler = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed)
    # Every sample seeded from (seed, epoch, rank, position): the workers can persist between epochs. The
    # loader's own generator: persistent workers draw their base seed once, not every epoch, and that
    # draw must not shift the global RNG (drop path) of the first epoch a resumed run trains.
    sampler = SeededSampler(sampler, cfg.seed, env.rank)
    loader = DataLoader(SeededSamples(train_set), batch_size=per_proc, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, collate_fn=collate_detection, worker_init_fn=seed_worker,
                        pin_memory=env.device.type == "cuda", persistent_workers=cfg.workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed))
    if len(loader) == 0:
        raise DataError(f"{len(train_set)} training images give no full batch of {cfg.batch_size}; lower --batch-size")
    scored = iou_types(cfg.kind)
    run.begin(cfg.to_dict(), history, amp=amp, classes=train_set.class_names, what=f"{cfg.kind} + {cfg.model}",
              images=len(train_set), plan=f"{cfg.schedule} schedule: lr {cfg.lr:.3g}, {cfg.epochs} epochs, {cfg.augmentation}")

    record: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        begin_epoch(cfg.seed, epoch, env.rank, sampler)
        ddp_model.train()
        meter = LossMeter(env, patience=FP16_NONFINITE_PATIENCE if scaler is not None else 0)
        sums: dict[str, float] = {}
        images_seen, skipped, skipped_steps = 0, [], 0
        where = lambda step, e=epoch: f"epoch {e}, step {step}"  # noqa: E731
        tick = time.perf_counter()
        bar = progress(loader, desc=f"epoch {epoch}", enabled=cfg.progress and env.is_main)
        for step, (images, targets, errors) in enumerate(bar):
            it = epoch * len(loader) + step
            lr = step_lr(cfg, epoch, it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            skipped += errors
            # Every process skips the step when any one has no readable image (none waits alone in backward).
            if env.everyone(bool(images)):
                images = [x.to(env.device, non_blocking=True) for x in images]
                targets = [{k: (v.to(env.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
                with autocast(env.device, amp):
                    losses = ddp_model(images, targets)
                loss = sum(v.float() for v in losses.values())
                optimizer_step(loss, optimizer, model.parameters(), scaler=scaler, clip_grad=cfg.clip_grad)
                meter.update(loss, step, parts=losses)
                images_seen += len(images) * env.world_size
            else:
                skipped_steps += 1
            if (step + 1) % cfg.log_every == 0 or step + 1 == len(loader):
                with run.stopping_on_nonfinite_loss():
                    read = meter.read(where, step)
                for k, v in read.items():
                    sums[k] = sums.get(k, 0.0) + v
                if read["weight"]:
                    bar.set_postfix(loss=f"{read['loss'] / read['weight']:.3f}", lr=f"{lr:.2e}")
        seconds = time.perf_counter() - tick
        names = sorted(k for k in sums if k not in ("loss", "weight", "nonfinite"))
        totals = env.all_reduce_sum([sums.get(k, 0.0) for k in ["loss", *names, "nonfinite", "weight"]])
        steps = totals[-1]
        require_samples(steps, skipped, f"epoch {epoch}: training")
        means = {k: totals[i] / max(steps, 1) for i, k in enumerate(["loss", *names])}
        skipped_steps += int(totals[-2])
        run.say_skipped_steps(skipped_steps, f"epoch {epoch}")
        record = {"epoch": epoch, "train_loss": round(means.get("loss", float("nan")), 6),
                  **{f"loss_{k}" if not k.startswith("loss") else k: round(v, 6) for k, v in means.items() if k != "loss"},
                  "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(seconds, 3),
                  "images_per_second": round(images_seen / max(seconds, 1e-9), 2), "skipped_steps": skipped_steps}
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            results, val_skipped = predict_dataset(model, val_set, env=env, amp=amp, batch_size=max(1, per_proc),
                                                   show_progress=cfg.progress, workers=cfg.workers)
            require_samples(len(val_set) - len(val_skipped), val_skipped, "validation")
            if env.is_main:
                report = coco_evaluate(val_set.coco, results, scored, image_ids=[r[0]["id"] for r in val_set.records])
                for t in scored:
                    record.update({f"{t}_AP": round(report[t]["stats"]["AP"], 5), f"{t}_AP50": round(report[t]["stats"]["AP50"], 5),
                                   f"{t}_AP75": round(report[t]["stats"]["AP75"], 5)})
            record["skipped_images"] = len(skipped) + len(val_skipped)
        if record.get("bbox_AP", -1.0) > best:
            best = record["bbox_AP"]
            extra = {"cat_ids": train_set.cat_ids, "epoch": epoch, "bbox_AP": best}
            run.save_best(lambda path: save_detector(model, path, class_names=train_set.class_names, extra=extra))
        run.log(record)
        run.save_last({
            "meta": meta, "epoch": epoch, "best_ap": best, "history": run.metrics.history,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "config": cfg.to_dict(),
        }, at=f"epoch {epoch}")
        scores = "  ".join(f"{k} {record[k]:.3f}" for k in record if k.endswith(("_AP", "_AP50")))
        run.say(f"epoch {epoch}: train_loss {record['train_loss']:.4f}  {scores}  lr {record['lr']:.2e}  "
                f"{record['images_per_second']:.1f} img/s")
        env.barrier()
    return {"output": str(run.path), "last": record, "best_ap": best, "best": str(run.best),
            "metrics": str(run.metrics.path)}
