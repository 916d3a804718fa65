"""Seeding, per epoch, so that a resumed run repeats the uninterrupted one exactly."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A distinct, reproducible 32-bit seed for every tuple of integers."""
    return int(np.random.SeedSequence([int(p) % 2**32 for p in parts]).generate_state(1)[0])


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed for every (run seed, epoch, rank)."""
    return derive_seed(seed, epoch, rank)


def begin_epoch(seed: int, epoch: int, rank: int = 0, sampler=None) -> None:
    """Seed everything random in ``epoch`` from (run seed, epoch, rank), so that a resumed run
    repeats the uninterrupted one, and tell the distributed ``sampler`` the epoch."""
    seed_everything(epoch_seed(seed, epoch, rank))
    if sampler is not None:
        sampler.set_epoch(epoch)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch seeds each worker; pass it on to Python and NumPy
    (timm's augmentations draw from both)."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)
