"""``pvtv2 segment train``: iteration-based Semantic FPN training (MMSegmentation-style
schedule: poly learning rate by iteration, evaluation every ``eval_interval`` iterations)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from ..engine import (FP16_NONFINITE_PATIENCE, DistEnv, LossMeter, RunFolder, TrainingStateError, adamw_options,
                      autocast, launch, make_scaler, optimizer_step, progress, require_samples, resolve_amp,
                      seed_everything)
from ..engine.seeding import derive_seed
from ..errors import DataError
from ..model import list_models
from .data import EvalTransform, SegmentationDataset, TrainTransform, ade_pairs, collate_pairs, warn_problems
from .evaluate import evaluate
from .metrics import IGNORE_INDEX, summarize
from .model import create_segmenter, save_segmenter
from .recipe import SegTrainConfig


class PassBatches(Sampler):
    """The batches of one pass over the data for one process, from step ``start`` on.

    Each element is ``(index, seed)``: the order and every sample's augmentation follow from
    (run seed, pass, position), so training can resume at any iteration and repeat exactly.
    """

    def __init__(self, n: int, batch: int, *, seed: int, pass_index: int, start: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.pass_index, self.start = n, batch, seed, pass_index, start
        self.rank, self.world = rank, world

    @staticmethod
    def steps(n: int, batch: int, world: int) -> int:
        return n // (batch * world)

    def __len__(self) -> int:
        return max(0, self.steps(self.n, self.batch, self.world) - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, 0, self.pass_index))
        order = torch.randperm(self.n, generator=g).tolist()
        per_step = self.batch * self.world
        for step in range(self.start, self.steps(self.n, self.batch, self.world)):
            first = step * per_step + self.rank * self.batch
            yield [(order[first + j], derive_seed(self.seed, 1, self.pass_index, first + j)) for j in range(self.batch)]


class RunBatches(Sampler):
    """The batches of iterations ``start`` to ``stop - 1`` for one process, over as many passes
    as they take (:class:`PassBatches` one after the other): one loader serves the whole run."""

    def __init__(self, n: int, batch: int, *, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start, self.stop, self.rank, self.world = n, batch, seed, start, stop, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_pass = PassBatches.steps(self.n, self.batch, self.world)
        it = self.start
        while it < self.stop:
            pass_index, offset = divmod(it, per_pass)
            for batch in PassBatches(self.n, self.batch, seed=self.seed, pass_index=pass_index, start=offset,
                                     rank=self.rank, world=self.world):
                if it >= self.stop:
                    return
                yield batch
                it += 1


def new_window() -> dict[str, Any]:
    """The sums of one evaluation window (saved in ``last.pt``, so a resumed run reports the same)."""
    return {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0, "skipped": 0, "labelled": 0.0, "skipped_steps": 0}


def resolve_classes(data: str | Path, num_classes: int | None) -> list[str]:
    """Class names from ``DATA/synth.json`` or ``DATA/classes.json`` (a list), else ``0..N-1``."""
    root = Path(data)
    names = None
    for meta in (root / "classes.json", root / "synth.json"):
        if meta.is_file():
            try:
                obj = json.loads(meta.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"{meta}: not a readable JSON file ({e})") from None
            names = obj if isinstance(obj, list) else obj.get("classes") if isinstance(obj, dict) else None
            if names:
                break
    if num_classes is None:
        if not names:
            raise DataError(f"{root}: how many classes? pass --num-classes (ADE20K: 150 with --reduce-zero-label) "
                            f"or put a JSON list of class names in {root / 'classes.json'}")
        if len(names) < 2:
            raise DataError(f"{root} names {len(names)} class; segmentation needs at least 2 (e.g. background and one more)")
        return [str(n) for n in names]
    if names and len(names) != num_classes:
        raise DataError(f"--num-classes {num_classes} but {root} names {len(names)} classes")
    return [str(n) for n in names] if names else [str(i) for i in range(num_classes)]


def poly_lr(cfg: SegTrainConfig, it: int) -> float:
    """MMSegmentation's poly policy (by iteration), after an optional linear warm-up."""
    lr = (cfg.lr - cfg.min_lr) * (1 - it / cfg.iters) ** cfg.power + cfg.min_lr
    if it < cfg.warmup_iters:
        lr *= (it + 1) / cfg.warmup_iters
    return lr


def train(cfg: SegTrainConfig) -> dict[str, Any]:
    """Train Semantic FPN; returns the last record, the best mIoU and the output paths."""
    return launch(cfg, _train, models=list_models(family="all"),
                  curves=dict(loss_keys=("train_loss",), score_keys=("mIoU", "mAcc"), score_label="score (%)", x_key="iter"))


def _train(cfg: SegTrainConfig, env: DistEnv, run: RunFolder) -> dict[str, Any]:
    per_proc = env.split_batch(cfg.batch_size)
    amp = resolve_amp(cfg.amp, env.device)
    train_pairs, problems = ade_pairs(cfg.data, "train")
    val_pairs, val_problems = ade_pairs(cfg.data, "val")
    classes = resolve_classes(cfg.data, cfg.num_classes)
    n_cls = len(classes)
    if env.is_main:
        warn_problems(problems + val_problems, cfg.data)
    steps_per_pass = PassBatches.steps(len(train_pairs), per_proc, env.world_size)
    if steps_per_pass == 0:
        raise DataError(f"{cfg.data}: {len(train_pairs)} training pairs give no full batch of {cfg.batch_size}; "
                        f"lower --batch-size")
    train_set = SegmentationDataset(train_pairs, TrainTransform(tuple(cfg.scale), cfg.crop, tuple(cfg.ratio_range),
                                                                cfg.cat_max_ratio),
                                    n_cls, reduce_zero_label=cfg.reduce_zero_label)
    val_set = SegmentationDataset(val_pairs, EvalTransform(tuple(cfg.scale)), n_cls, reduce_zero_label=cfg.reduce_zero_label)

    seed_everything(cfg.seed)
    model = create_segmenter(cfg.model, n_cls, pretrained_backbone=cfg.pretrained_weights, drop_path_rate=cfg.drop_path)
    model.class_names = classes
    if env.distributed and env.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # official: SyncBN in the heads
    model.to(env.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  **adamw_options(env.device))
    scaler = make_scaler(amp, env.device)

    meta = {"task": "segment", "model": cfg.model, "classes": classes, "reduce_zero_label": cfg.reduce_zero_label}
    start, best, history, window = 0, -1.0, [], new_window()
    state = run.restore(meta, model, optimizer, scaler)
    if state is not None:
        if state.get("iters") != cfg.iters:
            raise TrainingStateError(f"--resume {run.kept[0]}: the run was planned for {state.get('iters')} iterations, "
                                     f"now --iters {cfg.iters}; the poly schedule would differ")
        start, best, history, window = state["iter"], state["best_miou"], state["history"], state["window"]
        run.say(f"resumed from {run.kept[0]} at iteration {start}")

    ddp_model = env.wrap(model)
    run.begin(cfg.to_dict(), history, amp=amp, classes=classes, what=f"Semantic FPN + {cfg.model}",
              images=len(train_pairs), plan=f"{cfg.iters} iterations of {cfg.batch_size}")

    def state_at(it: int) -> dict[str, Any]:
        return {"meta": meta, "iter": it, "iters": cfg.iters, "best_miou": best, "history": run.metrics.history,
                "window": window, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "config": cfg.to_dict()}

    it, bad = start, []  # bad: this evaluation window's unusable pairs (the dataset warns of each)
    bar = progress(range(start, cfg.iters), desc="train", total=cfg.iters - start, enabled=cfg.progress and env.is_main)
    meter = LossMeter(env, patience=FP16_NONFINITE_PATIENCE if scaler is not None else 0)
    # One loader for the whole run: its workers start once (every sample carries its own seed).
    batches = RunBatches(len(train_set), per_proc, seed=cfg.seed, start=start, stop=cfg.iters, rank=env.rank,
                         world=env.world_size)
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.workers, collate_fn=collate_pairs,
                        pin_memory=env.device.type == "cuda")
    tick = time.perf_counter()
    for images, labels, errors in loader:
        seed_everything(derive_seed(cfg.seed, 2, it, env.rank))  # dropout / drop path of this iteration
        lr = poly_lr(cfg, it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        window["skipped"] += len(errors)
        bad += errors
        # Every process skips the step when any one has no usable pair (none waits alone in backward).
        if env.everyone(images is not None):
            images = images.to(env.device, non_blocking=True)
            labels = labels.to(env.device, non_blocking=True)
            with autocast(env.device, amp):
                logits = ddp_model(images)
            # Mean over the labelled pixels; a crop that is all "ignore" gives 0, not 0/0.
            labelled = (labels != IGNORE_INDEX).sum()
            loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX,
                                   reduction="sum") / labelled.clamp(min=1)
            optimizer_step(loss, optimizer, model.parameters(), scaler=scaler, clip_grad=cfg.clip_grad)
            meter.update(loss, it, parts={"labelled": labelled})
            window["images"] += len(images) * env.world_size
        else:
            window["skipped_steps"] = window.get("skipped_steps", 0) + 1
        it += 1
        bar.update(1)
        now = time.perf_counter()
        window["seconds"] += now - tick
        tick = now
        evaluate_now = it % cfg.eval_interval == 0 or it == cfg.iters
        save_now = evaluate_now or it % cfg.checkpoint_interval == 0
        if save_now or it % cfg.log_every == 0:
            with run.stopping_on_nonfinite_loss():
                read = meter.read(lambda i: f"iteration {i}", it - 1)
            window["loss_sum"] += read["loss"]
            window["steps"] += int(read["weight"])
            window["labelled"] = window.get("labelled", 0) + read.get("labelled", 0.0)
            window["skipped_steps"] = window.get("skipped_steps", 0) + int(read["nonfinite"])
            if read["weight"]:
                bar.set_postfix(loss=f"{read['loss'] / read['weight']:.3f}", lr=f"{lr:.2e}")
        if evaluate_now:
            first = it - (it - 1) % cfg.eval_interval
            require_samples(env.all_reduce_sum([window.get("labelled", 0)])[0], bad,
                            f"iterations {first}-{it}: training", unit="labelled pixel")
            res = evaluate(model, val_set, n_cls, env=env, amp=amp, mode=cfg.eval_mode, crop=cfg.crop,
                           show_progress=cfg.progress, workers=cfg.workers)
            require_samples(res["confusion"].sum().item(), res["skipped"], f"validation on {cfg.data}",
                            unit="labelled pixel")
            scores = summarize(res["confusion"], classes)
            steps = max(window["steps"], 1)
            record = {"iter": it, "train_loss": round(window["loss_sum"] / steps, 6), "lr": lr,
                      "mIoU": round(scores["mIoU"], 4), "mAcc": round(scores["mAcc"], 4),
                      "aAcc": round(scores["aAcc"], 4), "seconds": round(window["seconds"], 3),
                      "images_per_second": round(window["images"] / max(window["seconds"], 1e-9), 2),
                      "skipped_images": window["skipped"] + res["skipped_count"],
                      "skipped_steps": window.get("skipped_steps", 0)}
            run.say_skipped_steps(record["skipped_steps"], f"iterations {first}-{it}")
            window, bad = new_window(), []
            if record["mIoU"] > best:
                best = record["mIoU"]
                extra = {"iter": it, "mIoU": best, "scale": list(cfg.scale), "crop": cfg.crop,
                         "reduce_zero_label": cfg.reduce_zero_label}
                run.save_best(lambda path: save_segmenter(model, path, class_names=classes, extra=extra))
            run.log(record)
            if env.is_main:
                bar.write(f"iter {it}: train_loss {record['train_loss']:.4f}  mIoU {record['mIoU']:.2f}  "
                          f"mAcc {record['mAcc']:.2f}  aAcc {record['aAcc']:.2f}  lr {lr:.2e}  "
                          f"{record['images_per_second']:.1f} img/s")
            tick = time.perf_counter()  # evaluation time is not training time
        if save_now:
            run.save_last(state_at(it), at=f"iteration {it}")
    bar.close()
    last = run.metrics.history[-1] if run.metrics.history else {}
    return {"output": str(run.path), "last": last, "best_miou": best, "best": str(run.best),
            "metrics": str(run.metrics.path)}
